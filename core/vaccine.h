/* Vaccine and T-Vaccine method logic as pure functions (SPEC sections 5-6): layer
 * probabilities from harmful-gradient norms, weighted sampling without replacement, the
 * perturbation scale, and which layers a pass records, perturbs, trains and keeps. */
#ifndef TV_VACCINE_H
#define TV_VACCINE_H

#include <stdint.h>

#include "model.h"
#include "rng.h"

typedef enum { METHOD_SFT = 0, METHOD_VACCINE = 1, METHOD_TVACCINE = 2, METHOD_COUNT } Method;
/* layer: a T-Vaccine step trains only the sampled layers (SPEC 6.3); attention: only their
 * attention LoRA is switched, MLP LoRA trains everywhere (the reference code's behaviour). */
typedef enum { FREEZE_LAYER = 0, FREEZE_ATTENTION = 1, FREEZE_SCOPE_COUNT } FreezeScope;
/* What a layer that trains nothing in a pass (T-Vaccine's frozen layers, the probe) keeps
 * for its backward: recompute (least memory), keep what its input gradient needs (no second
 * forward), or auto (recompute only what the skipped backward below A pays for, so never
 * slower than Vaccine, and more when a memory budget asks: dist/trainer.c). */
typedef enum {
  ACTIVATIONS_RECOMPUTE = 0,
  ACTIVATIONS_KEEP = 1,
  ACTIVATIONS_AUTO = 2,
  ACTIVATION_POLICY_COUNT
} ActivationPolicy;
/* The default of align and bench: frozen layers cost T-Vaccine no time over Vaccine and keep
 * less memory than keep (bench --ranks measures the three; README "Activations"). */
#define ACTIVATIONS_DEFAULT ACTIVATIONS_AUTO

/* The names configs, checkpoints and logs use, indexed by the enum. */
extern const char *const method_names[METHOD_COUNT];            /* sft, vaccine, tvaccine */
extern const char *const freeze_scope_names[FREEZE_SCOPE_COUNT]; /* layer, attention */
extern const char *const activation_policy_names[ACTIVATION_POLICY_COUNT]; /* recompute, keep, auto */
const char *method_name(Method m);             /* "?" outside the enum */
const char *freeze_scope_name(FreezeScope s); /* "?" outside the enum */

/* p_l = n_l / sum_j n_j over L layers. When every norm is zero (or the sum is not finite)
 * the probabilities are uniform, so sampling still has a defined answer. */
void tvaccine_probabilities(const double *norms, int L, double *probs);

/* Draws S distinct layers with probabilities p, sequentially without replacement: draw one,
 * remove it, renormalise the rest, repeat (torch.multinomial's rule). Layers of probability
 * zero are drawn (uniformly) only after every positive one is taken. One rng_next_double per
 * draw. out[S] receives the layers sorted ascending. */
void tvaccine_sample_layers(const double *probs, int L, int S, Rng *rng, int *out);

/* e_l = scale * g_l with scale = rho / (N + 1e-7), N = sqrt(sum over recorded layers of
 * ||g_l||^2), given that sum. */
double vaccine_perturb_scale(double rho, double grad_sum_squares);

/* Which LoRA targets of `layer` train in a step whose active set is `active` (mask over L):
 * sft and vaccine train everything; tvaccine trains the layers in A (freeze_scope layer), or
 * the attention targets of A plus the MLP targets of every layer (freeze_scope attention,
 * the reference code's behaviour). */
unsigned method_train_targets(Method m, FreezeScope scope, const uint8_t *active, int layer);

/* What a layer in the backward range keeps in one pass: everything when it trains, the
 * input-gradient record when it is in A (its g_l is recorded, nothing trains), else what the
 * policy says (auto is resolved by the caller, which knows the budget: here it keeps). */
LayerKeep method_layer_keep(ActivationPolicy policy, unsigned train_targets, int active);

#endif
