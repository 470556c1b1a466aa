/* Vaccine / T-Vaccine method logic (see vaccine.h). */
#include "vaccine.h"

#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "lora.h"

const char *const method_names[METHOD_COUNT] = {"sft", "vaccine", "tvaccine"};
const char *const freeze_scope_names[FREEZE_SCOPE_COUNT] = {"layer", "attention"};
const char *const activation_policy_names[ACTIVATION_POLICY_COUNT] = {"recompute", "keep", "auto"};

const char *method_name(Method m) { return (unsigned)m < METHOD_COUNT ? method_names[m] : "?"; }
const char *freeze_scope_name(FreezeScope s) {
  return (unsigned)s < FREEZE_SCOPE_COUNT ? freeze_scope_names[s] : "?";
}

void tvaccine_probabilities(const double *norms, int L, double *probs) {
  double sum = 0;
  for (int l = 0; l < L; l++) sum += norms[l] > 0 ? norms[l] : 0;
  if (!(sum > 0) || !isfinite(sum)) {
    for (int l = 0; l < L; l++) probs[l] = 1.0 / L;
    return;
  }
  for (int l = 0; l < L; l++) probs[l] = (norms[l] > 0 ? norms[l] : 0) / sum;
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

void tvaccine_sample_layers(const double *probs, int L, int S, Rng *rng, int *out) {
  TV_CHECK(S >= 1 && S <= L, "cannot draw %d of %d layers", S, L);
  uint8_t *taken = tv_calloc((size_t)L, 1);
  for (int k = 0; k < S; k++) {
    double total = 0;
    for (int l = 0; l < L; l++)
      if (!taken[l]) total += probs[l];
    double u = rng_next_double(rng);
    int pick = -1;
    if (total > 0) {
      /* the first untaken layer whose cumulative weight exceeds u * total */
      double target = u * total, acc = 0;
      for (int l = 0; l < L && pick < 0; l++) {
        if (taken[l] || !(probs[l] > 0)) continue;
        acc += probs[l];
        if (acc > target) pick = l;
      }
      if (pick < 0) /* rounding left target at the very top: the last positive one */
        for (int l = L - 1; l >= 0 && pick < 0; l--)
          if (!taken[l] && probs[l] > 0) pick = l;
    } else {
      int remaining = 0;
      for (int l = 0; l < L; l++) remaining += !taken[l];
      int j = (int)(u * remaining);
      for (int l = 0; l < L; l++)
        if (!taken[l] && j-- == 0) pick = l;
    }
    taken[pick] = 1;
    out[k] = pick;
  }
  free(taken);
  qsort(out, (size_t)S, sizeof(int), cmp_int);
}

double vaccine_perturb_scale(double rho, double grad_sum_squares) {
  return rho / (sqrt(grad_sum_squares) + 1e-7);
}

unsigned method_train_targets(Method m, FreezeScope scope, const uint8_t *active, int layer) {
  if (m != METHOD_TVACCINE) return LORA_ALL_TARGETS;
  if (active[layer]) return LORA_ALL_TARGETS;
  return scope == FREEZE_ATTENTION ? LORA_MLP_TARGETS : 0;
}

LayerKeep method_layer_keep(ActivationPolicy policy, unsigned train_targets, int active) {
  if (train_targets) return LAYER_KEEP_ALL;
  if (active || policy != ACTIVATIONS_RECOMPUTE) return LAYER_KEEP_FOR_INPUT_GRAD;
  return LAYER_RECOMPUTE;
}
