/* Golden test of the core engine: one CPU stage holding a whole tiny Llama must reproduce the
 * loss, logits, LoRA gradients and dLoss/da_l computed by an independent float64 PyTorch
 * program (tests/ref/golden_core.py, which wrote the .tvg files given as arguments).
 *
 * Usage: test_golden_core FILE.tvg [FILE.tvg ...]
 *
 * Every file is run twice: once keeping all activations, once recomputing every layer in
 * backward (keep_activations = 0); the model header promises identical numbers, so both
 * passes are held to the same reference. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "golden.h"
#include "golden_model.h"
#include "lora.h"
#include "model.h"
#include "optim.h"
#include "test_util.h"

/* Error norm: max_i |c_i - ref_i| / max_i |ref_i| over the whole tensor. Element-wise relative
 * error is meaningless here: gradients and logits have many entries near zero (cancellation),
 * where a float32 result is off by its rounding of the *large* terms that were summed, not by
 * a fraction of the tiny result. float32 accumulation error scales with the magnitude of the
 * tensor's typical (largest) entries, so normalising by max|ref| gives a bound that is tight
 * for a correct implementation (~1e-6 here) yet flags any real bug (wrong rope, scaling or
 * GQA grouping all move these tensors by 1e-3 .. 1 in this norm; see golden_core.py). */
#define TOL 1e-4

/* A tensor of all (near) zeros would make the comparison vacuous: require real signal. */
#define MIN_REF_SCALE 1e-6

static const char *const kTargetShort[LORA_NUM_TARGETS] = {"q", "k", "v", "o",
                                                          "gate", "up", "down"};

/* ---- worst error per tensor kind, for the report ---- */
typedef struct {
  char kind[48];
  double worst;
  char where[160];
} KindErr;
static KindErr g_kinds[64];
static int g_nkinds;

static void note_err(const char *kind, const char *where, double err) {
  int i = 0;
  while (i < g_nkinds && strcmp(g_kinds[i].kind, kind) != 0) i++;
  if (i == g_nkinds) {
    TV_CHECK(g_nkinds < (int)(sizeof g_kinds / sizeof g_kinds[0]), "too many kinds");
    snprintf(g_kinds[i].kind, sizeof g_kinds[i].kind, "%s", kind);
    g_kinds[i].worst = -1;
    g_nkinds++;
  }
  /* NaN counts as the worst possible. */
  if (isnan(err) || (!isnan(g_kinds[i].worst) && err > g_kinds[i].worst)) {
    g_kinds[i].worst = err;
    snprintf(g_kinds[i].where, sizeof g_kinds[i].where, "%s", where);
  }
}

/* Compares n floats of backend memory against a golden float32 tensor. */
static void compare(Backend *be, const char *file, const char *pass, const char *kind,
                    const char *name, const float *dev, const GoldenTensor *ref) {
  size_t n = ref->numel;
  float *c = tv_malloc(n * sizeof *c);
  be->to_host(be, c, dev, n * sizeof *c);
  be->sync(be);
  double num = 0, den = 0;
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)c[i] - (double)ref->f32[i]);
    if (!(d == d) || isinf(d)) bad = 1; /* NaN / Inf in the C result */
    if (d > num) num = d;
    if (fabs((double)ref->f32[i]) > den) den = fabs((double)ref->f32[i]);
  }
  double err = bad ? NAN : num / den;
  char where[160];
  snprintf(where, sizeof where, "%s %s (%s)", file, name, pass);
  note_err(kind, where, err);
  EXPECT(den > MIN_REF_SCALE, "%s: reference is all ~zero (max |ref| %.3g)", where, den);
  EXPECT(err <= TOL, "%s: max|c-ref|/max|ref| = %.3g > %.1g", where, err, TOL);
  free(c);
}

static const char *base_name(const char *path) {
  const char *s = strrchr(path, '/');
  return s ? s + 1 : path;
}

static void run_file(const char *path) {
  const char *file = base_name(path);
  Golden *g = golden_load(path);

  Backend *be = backend_cpu_create(0);
  GoldenModel gm;
  Stage *s = golden_model_build(be, g, file, &gm);
  const LlamaConfig cfg = gm.cfg;
  const LoraConfig lc = gm.lora;
  const int V = cfg.vocab_size, D = cfg.hidden_size, F = cfg.intermediate_size;
  const int L = cfg.num_layers, B = gm.B, T = gm.T;
  const size_t N = (size_t)B * T;
  const int qd = cfg.num_heads * cfg.head_dim, kvd = cfg.num_kv_heads * cfg.head_dim;
  const int t_in[LORA_NUM_TARGETS] = {D, D, D, qd, D, D, F};
  const int t_out[LORA_NUM_TARGETS] = {qd, kvd, kvd, D, F, F, D};
  LoraSet *ls = stage_lora(s);
  int32_t *targets = gm.targets;
  const float loss_scale = 1.0f / (float)gm.n_targets;
  char name[160];
  const GoldenTensor *ids = golden_get(g, "input_ids");

  /* ---- the pass: every layer keeps (or recomputes), trains and records dLoss/da_l ---- */
  float **grad_a = tv_calloc((size_t)L, sizeof *grad_a);
  for (int l = 0; l < L; l++) grad_a[l] = be->alloc(be, N * D * sizeof(float));
  LayerPlan *lp = tv_calloc((size_t)L, sizeof *lp);
  PassPlan plan = {.layers = lp, .backward_stop = 0, .pass_seed = 0};

  const GoldenTensor *ref_loss = golden_get_shaped(g, "loss", GOLDEN_F32, 0, NULL);
  int64_t btv[3] = {B, T, V}, btd[3] = {B, T, D};
  const GoldenTensor *ref_logits = golden_get_shaped(g, "logits", GOLDEN_F32, 3, btv);

  for (int keep = 1; keep >= 0; keep--) {
    /* The second pass also runs the LM head and its loss in chunks of 3 rows (recomputed in
     * backward) instead of over every row's kept logits. */
    const char *pass = keep ? "kept activations" : "recomputed layers, chunked logits";
    stage_keep_logits(s, keep);
    if (!keep) stage_set_logit_chunk_rows(s, 3);
    lora_zero_grads(be, ls, NULL);
    for (int l = 0; l < L; l++) {
      be->zero(be, grad_a[l], N * D * sizeof(float));
      lp[l] = (LayerPlan){.record_grad_a = grad_a[l],
                          .perturb = NULL,
                          .keep_activations = keep ? LAYER_KEEP_ALL : LAYER_RECOMPUTE,
                          .train_targets = LORA_ALL_TARGETS};
    }

    float *x_out = NULL;
    MicroBatch mb = {
        .tokens = ids->i32, .targets = targets, .B = B, .T = T, .loss_scale = loss_scale};
    double loss = stage_forward(s, &plan, &mb, &x_out);
    double ref = ref_loss->f32[0];
    double lerr = fabs(loss - ref) / fabs(ref);
    snprintf(name, sizeof name, "%s loss (%s)", file, pass);
    note_err("loss", name, isnan(loss) ? NAN : lerr);
    EXPECT(lerr <= TOL, "%s: loss %.9g, reference %.9g (rel err %.3g)", name, loss, ref, lerr);

    if (keep) {
      const float *logits = stage_logits(s);
      EXPECT(logits != NULL, "%s: stage_logits returned NULL (%s)", file, pass);
      if (logits) compare(be, file, pass, "logits", "logits", logits, ref_logits);
    }

    float *dx = NULL;
    stage_backward(s, &plan, 0, NULL, &dx);
    EXPECT(dx == NULL, "%s: first stage returned an input gradient (%s)", file, pass);

    for (int l = 0; l < L; l++) {
      for (int t = 0; t < LORA_NUM_TARGETS; t++) {
        LoraAdapter *ad = &ls->layers[l][t];
        char kind[48];
        int64_t da[2] = {lc.r, t_in[t]}, db[2] = {t_out[t], lc.r};
        snprintf(name, sizeof name, "grad.model.layers.%d.%s.lora_A.weight", l, golden_target_path[t]);
        snprintf(kind, sizeof kind, "dA %s", kTargetShort[t]);
        compare(be, file, pass, kind, name, ad->dA,
                golden_get_shaped(g, name, GOLDEN_F32, 2, da));
        snprintf(name, sizeof name, "grad.model.layers.%d.%s.lora_B.weight", l, golden_target_path[t]);
        snprintf(kind, sizeof kind, "dB %s", kTargetShort[t]);
        compare(be, file, pass, kind, name, ad->dB,
                golden_get_shaped(g, name, GOLDEN_F32, 2, db));
      }
      snprintf(name, sizeof name, "grad_a.%d", l);
      compare(be, file, pass, "grad_a", name, grad_a[l],
              golden_get_shaped(g, name, GOLDEN_F32, 3, btd));
    }
  }

  for (int l = 0; l < L; l++) be->free(be, grad_a[l]);
  free(grad_a);
  free(lp);
  free(targets);
  stage_destroy(s);
  backend_destroy(be);
  golden_free(g);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s FILE.tvg [FILE.tvg ...]\n", argv[0]);
    return 2;
  }
  for (int i = 1; i < argc; i++) run_file(argv[i]);

  printf("worst max|c-ref|/max|ref| per tensor kind (tolerance %.0e):\n", TOL);
  for (int i = 0; i < g_nkinds; i++)
    printf("  %-8s %.3e  at %s\n", g_kinds[i].kind, g_kinds[i].worst, g_kinds[i].where);
  return tv_test_report("test_golden_core");
}
