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

/* HF module path of each LoRA target, written out here (not taken from lora.c) so that the
 * name mapping is checked too. Order = LoraTarget. */
static const char *const kTargetPath[LORA_NUM_TARGETS] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
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

/* Copies a golden float32 tensor of the given shape into backend memory. */
static void put(Backend *be, float *dst, const Golden *g, const char *name, int ndim, int64_t d0,
                int64_t d1) {
  int64_t dims[2] = {d0, d1};
  const GoldenTensor *t = golden_get_shaped(g, name, GOLDEN_F32, ndim, dims);
  TV_CHECK(dst != NULL, "stage has no storage for %s", name);
  be->from_host(be, dst, t->f32, t->numel * sizeof(float));
}

static const char *base_name(const char *path) {
  const char *s = strrchr(path, '/');
  return s ? s + 1 : path;
}

static void run_file(const char *path) {
  const char *file = base_name(path);
  Golden *g = golden_load(path);

  const int V = golden_i32(g, "cfg.vocab_size"), D = golden_i32(g, "cfg.hidden_size");
  const int F = golden_i32(g, "cfg.intermediate_size"), L = golden_i32(g, "cfg.num_layers");
  const int H = golden_i32(g, "cfg.num_heads"), Hkv = golden_i32(g, "cfg.num_kv_heads");
  const int Dh = golden_i32(g, "cfg.head_dim");
  LlamaConfig cfg = llama_config_default(V, D, F, L, H, Hkv);
  cfg.head_dim = Dh;
  cfg.rms_norm_eps = golden_f32(g, "cfg.rms_norm_eps");
  cfg.rope_theta = golden_f32(g, "cfg.rope_theta");
  cfg.rope_scaling = golden_i32(g, "cfg.rope_scaling") ? ROPE_SCALING_LLAMA3 : ROPE_SCALING_NONE;
  cfg.rope_factor = golden_f32(g, "cfg.rope_factor");
  cfg.rope_low_freq_factor = golden_f32(g, "cfg.rope_low_freq_factor");
  cfg.rope_high_freq_factor = golden_f32(g, "cfg.rope_high_freq_factor");
  cfg.rope_original_max_pos = golden_i32(g, "cfg.rope_original_max_pos");
  cfg.tie_word_embeddings = golden_i32(g, "cfg.tie_word_embeddings");
  cfg.attention_bias = golden_i32(g, "cfg.attention_bias");

  LoraConfig lc = lora_config_default();
  lc.r = golden_i32(g, "cfg.lora_r");
  lc.alpha = golden_f32(g, "cfg.lora_alpha");
  lc.dropout = 0.0f;
  lc.target_mask = (1u << LORA_NUM_TARGETS) - 1u;

  char msg[256];
  const char *err = llama_config_validate(&cfg, msg, sizeof msg);
  EXPECT(err == NULL, "%s: config rejected: %s", file, err ? err : "");
  const char *lerr = lora_config_validate(&lc, msg, sizeof msg);
  EXPECT(lerr == NULL, "%s: LoRA config rejected: %s", file, lerr ? lerr : "");
  if (err || lerr) {
    golden_free(g);
    return;
  }

  const GoldenTensor *ids = golden_get(g, "input_ids");
  TV_CHECK(ids->dtype == GOLDEN_I32 && ids->ndim == 2, "input_ids must be int32 [B, T]");
  const int B = (int)ids->dims[0], T = (int)ids->dims[1];
  const size_t N = (size_t)B * T;
  int64_t bt[2] = {B, T};
  const GoldenTensor *labels = golden_get_shaped(g, "labels", GOLDEN_I32, 2, bt);
  printf("%s: V %d D %d F %d L %d H %d Hkv %d Dh %d rope %s tied %d bias %d r %d alpha %g, "
         "B %d T %d\n",
         file, V, D, F, L, H, Hkv, Dh, cfg.rope_scaling ? "llama3" : "plain",
         cfg.tie_word_embeddings, cfg.attention_bias, lc.r, lc.alpha, B, T);

  /* HF shift: position t predicts labels[t + 1]; the last position and -100 are ignored. */
  int32_t *targets = tv_malloc(N * sizeof *targets);
  int n_targets = 0;
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      int32_t lab = t + 1 < T ? labels->i32[(size_t)b * T + t + 1] : -100;
      targets[(size_t)b * T + t] = lab == -100 ? -1 : lab;
      n_targets += lab != -100;
    }
  TV_CHECK(n_targets > 0, "%s: no targets", file);
  const float loss_scale = 1.0f / (float)n_targets;

  Backend *be = backend_cpu_create(0);
  Stage *s = stage_create(be, &cfg, &lc, 0, L, B, T);
  EXPECT(stage_is_first(s) && stage_is_last(s), "%s: one stage must be first and last", file);

  /* ---- frozen weights ---- */
  StageWeights *w = stage_weights(s);
  char name[160];
  put(be, w->embed, g, "model.embed_tokens.weight", 2, V, D);
  put(be, w->final_norm, g, "model.norm.weight", 1, D, 0);
  if (cfg.tie_word_embeddings) {
    EXPECT(golden_find(g, "lm_head.weight") == NULL, "%s: tied file has lm_head", file);
    EXPECT(w->lm_head == w->embed, "%s: tied model: lm_head must be the embedding", file);
    if (w->lm_head != w->embed) put(be, w->lm_head, g, "model.embed_tokens.weight", 2, V, D);
  } else {
    EXPECT(w->lm_head != w->embed, "%s: untied model shares lm_head and embedding", file);
    put(be, w->lm_head, g, "lm_head.weight", 2, V, D);
  }
  const int qd = H * Dh, kvd = Hkv * Dh;
  for (int l = 0; l < L; l++) {
    LayerWeights *lw = &w->layers[l];
#define LAYER_PUT(dst, suffix, ndim, d0, d1)                      \
  do {                                                            \
    snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix); \
    put(be, dst, g, name, ndim, d0, d1);                          \
  } while (0)
    LAYER_PUT(lw->attn_norm, "input_layernorm.weight", 1, D, 0);
    LAYER_PUT(lw->mlp_norm, "post_attention_layernorm.weight", 1, D, 0);
    LAYER_PUT(lw->wq, "self_attn.q_proj.weight", 2, qd, D);
    LAYER_PUT(lw->wk, "self_attn.k_proj.weight", 2, kvd, D);
    LAYER_PUT(lw->wv, "self_attn.v_proj.weight", 2, kvd, D);
    LAYER_PUT(lw->wo, "self_attn.o_proj.weight", 2, D, qd);
    LAYER_PUT(lw->w_gate, "mlp.gate_proj.weight", 2, F, D);
    LAYER_PUT(lw->w_up, "mlp.up_proj.weight", 2, F, D);
    LAYER_PUT(lw->w_down, "mlp.down_proj.weight", 2, D, F);
    if (cfg.attention_bias) {
      EXPECT(lw->bq && lw->bk && lw->bv, "%s: layer %d has no bias storage", file, l);
      LAYER_PUT(lw->bq, "self_attn.q_proj.bias", 1, qd, 0);
      LAYER_PUT(lw->bk, "self_attn.k_proj.bias", 1, kvd, 0);
      LAYER_PUT(lw->bv, "self_attn.v_proj.bias", 1, kvd, 0);
    } else {
      EXPECT(!lw->bq && !lw->bk && !lw->bv, "%s: layer %d has biases without attention_bias",
             file, l);
    }
#undef LAYER_PUT
  }

  /* ---- LoRA A and B (B non-zero, so every gradient is non-trivial) ---- */
  const int t_in[LORA_NUM_TARGETS] = {D, D, D, qd, D, D, F};
  const int t_out[LORA_NUM_TARGETS] = {qd, kvd, kvd, D, F, F, D};
  LoraSet *ls = stage_lora(s);
  for (int l = 0; l < L; l++)
    for (int t = 0; t < LORA_NUM_TARGETS; t++) {
      LoraAdapter *ad = &ls->layers[l][t];
      EXPECT(ad->in == t_in[t] && ad->out == t_out[t],
             "%s: layer %d %s adapter is %d -> %d, expected %d -> %d", file, l,
             kTargetPath[t], ad->in, ad->out, t_in[t], t_out[t]);
      snprintf(name, sizeof name, "model.layers.%d.%s.lora_A.weight", l, kTargetPath[t]);
      put(be, ad->A, g, name, 2, lc.r, t_in[t]);
      snprintf(name, sizeof name, "model.layers.%d.%s.lora_B.weight", l, kTargetPath[t]);
      put(be, ad->B, g, name, 2, t_out[t], lc.r);
    }

  /* ---- the pass: every layer keeps (or recomputes), trains and records dLoss/da_l ---- */
  float **grad_a = tv_calloc((size_t)L, sizeof *grad_a);
  for (int l = 0; l < L; l++) grad_a[l] = be->alloc(be, N * D * sizeof(float));
  LayerPlan *lp = tv_calloc((size_t)L, sizeof *lp);
  PassPlan plan = {.layers = lp, .backward_stop = 0, .pass_seed = 0};

  const GoldenTensor *ref_loss = golden_get_shaped(g, "loss", GOLDEN_F32, 0, NULL);
  int64_t btv[3] = {B, T, V}, btd[3] = {B, T, D};
  const GoldenTensor *ref_logits = golden_get_shaped(g, "logits", GOLDEN_F32, 3, btv);

  for (int keep = 1; keep >= 0; keep--) {
    const char *pass = keep ? "kept activations" : "recomputed layers";
    lora_zero_grads(be, ls, NULL);
    for (int l = 0; l < L; l++) {
      be->zero(be, grad_a[l], N * D * sizeof(float));
      lp[l] = (LayerPlan){grad_a[l], NULL, keep, LORA_ALL_TARGETS};
    }

    float *x_out = NULL;
    double loss = stage_forward(s, &plan, ids->i32, NULL, targets, B, T, 0, loss_scale, &x_out);
    double ref = ref_loss->f32[0];
    double lerr = fabs(loss - ref) / fabs(ref);
    snprintf(name, sizeof name, "%s loss (%s)", file, pass);
    note_err("loss", name, isnan(loss) ? NAN : lerr);
    EXPECT(lerr <= TOL, "%s: loss %.9g, reference %.9g (rel err %.3g)", name, loss, ref, lerr);

    const float *logits = stage_logits(s);
    EXPECT(logits != NULL, "%s: stage_logits returned NULL (%s)", file, pass);
    if (logits) compare(be, file, pass, "logits", "logits", logits, ref_logits);

    float *dx = NULL;
    stage_backward(s, &plan, NULL, &dx);
    EXPECT(dx == NULL, "%s: first stage returned an input gradient (%s)", file, pass);

    for (int l = 0; l < L; l++) {
      for (int t = 0; t < LORA_NUM_TARGETS; t++) {
        LoraAdapter *ad = &ls->layers[l][t];
        char kind[48];
        int64_t da[2] = {lc.r, t_in[t]}, db[2] = {t_out[t], lc.r};
        snprintf(name, sizeof name, "grad.model.layers.%d.%s.lora_A.weight", l, kTargetPath[t]);
        snprintf(kind, sizeof kind, "dA %s", kTargetShort[t]);
        compare(be, file, pass, kind, name, ad->dA,
                golden_get_shaped(g, name, GOLDEN_F32, 2, da));
        snprintf(name, sizeof name, "grad.model.layers.%d.%s.lora_B.weight", l, kTargetPath[t]);
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
