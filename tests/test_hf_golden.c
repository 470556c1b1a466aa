/* Hugging Face interoperability: model folders and a PEFT adapter written by the real
 * transformers / peft libraries (tests/ref/hf_models.py) must load through io/hf/hf_model.h and
 * io/hf/peft.h and give the logits transformers computed from the same files.
 *
 * Usage: test_hf_golden DATADIR MODEL [ADAPTER]
 *   DATADIR/MODEL/        the folder (config.json, safetensors, maybe index + shards)
 *   DATADIR/MODEL.tvg     input_ids [B, T] int32, logits [B, T, V] (and peft_logits)
 *   DATADIR/ADAPTER/      a PEFT LoRA adapter of MODEL; base + adapter must give
 *                         peft_logits, before and after stage_merge_lora.
 *
 * Tolerance, per tensor (logits, peft_logits, merged logits): max|c - ref| / max|ref| <=
 * 1e-4. Both sides compute in float32 from identical float32 weights (BF16 files are
 * upcast exactly on both sides), so a correct loader lands around 1e-6 (summation order
 * only), while a wrong rope rule, a dropped bias, head_dim taken as D/H, a misread
 * tie or a shard mapped to the wrong tensor moves the logits by 1e-2 .. 1 in this norm
 * (tests/ref/hf_models.py prints how much the llama3 rule and the adapter move them). */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "golden.h"
#include "hf_model.h"
#include "lora.h"
#include "model.h"
#include "peft.h"
#include "test_util.h"

#define TOL 1e-4
#define MIN_REF_SCALE 1e-3 /* the references are O(1): all ~zero would make a vacuous test */

/* max|c - ref| / max|ref| of the last forward's logits against a golden float32 tensor. */
static void compare_logits(Stage *s, const char *label, const GoldenTensor *ref) {
  Backend *be = stage_backend(s);
  size_t n = ref->numel;
  float *c = tv_malloc(n * sizeof *c);
  be->to_host(be, c, stage_logits(s), n * sizeof *c);
  be->sync(be);
  double num = 0, den = 0;
  int finite = 1;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(c[i])) finite = 0;
    double d = fabs((double)c[i] - (double)ref->f32[i]);
    if (d > num) num = d;
    if (fabs((double)ref->f32[i]) > den) den = fabs((double)ref->f32[i]);
  }
  double err = finite ? num / den : NAN;
  printf("  %-28s max|c-ref|/max|ref| = %.3e (tolerance %.0e, max|ref| %.3f)\n", label, err,
         TOL, den);
  EXPECT(den > MIN_REF_SCALE, "%s: reference is all ~zero (max |ref| %.3g)", label, den);
  EXPECT(finite, "%s: the C logits contain NaN or Inf", label);
  EXPECT(err <= TOL, "%s: max|c-ref|/max|ref| = %.3g > %.0e", label, err, TOL);
  free(c);
}

/* One forward-only pass of the whole model (a single stage) over the golden tokens. */
static void forward(Stage *s, const GoldenTensor *ids) {
  const int L = stage_config(s)->num_layers;
  LayerPlan *lp = tv_calloc((size_t)L, sizeof *lp); /* nothing recorded, perturbed, trained */
  PassPlan plan = {.layers = lp, .backward_stop = INT_MAX, .pass_seed = 0};
  float *x_out = NULL;
  MicroBatch mb = {
      .tokens = ids->i32, .B = (int)ids->dims[0], .T = (int)ids->dims[1], .loss_scale = 1.0f};
  stage_forward(s, &plan, &mb, &x_out);
  free(lp);
}

static char *path_join(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 2;
  char *p = tv_malloc(n);
  snprintf(p, n, "%s/%s", a, b);
  return p;
}

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: %s DATADIR MODEL [ADAPTER]\n", argv[0]);
    return 2;
  }
  const char *datadir = argv[1], *name = argv[2], *adapter = argc == 4 ? argv[3] : NULL;
  char *dir = path_join(datadir, name);
  char tvg[4096];
  snprintf(tvg, sizeof tvg, "%s/%s.tvg", datadir, name);

  Golden *g = golden_load(tvg);
  const GoldenTensor *ids = golden_get(g, "input_ids");
  TV_CHECK(ids->dtype == GOLDEN_I32 && ids->ndim == 2, "%s: input_ids must be int32 [B, T]", tvg);
  const int B = (int)ids->dims[0], T = (int)ids->dims[1];

  HfModel *m = hf_model_open(dir);
  const HfConfig *hc = hf_model_config(m);
  const LlamaConfig *c = &hc->cfg;
  printf("%s: %s, V %d D %d F %d L %d H %d Hkv %d Dh %d, theta %g, rope %s, tied %d, bias %d, "
         "dtype %s, eos x%d; B %d T %d\n",
         name, hc->model_type, c->vocab_size, c->hidden_size, c->intermediate_size,
         c->num_layers, c->num_heads, c->num_kv_heads, c->head_dim, c->rope_theta,
         c->rope_scaling == ROPE_SCALING_LLAMA3 ? "llama3" : "plain", c->tie_word_embeddings,
         c->attention_bias, st_dtype_name(hc->dtype), hc->n_eos, B, T);
  int64_t btv[3] = {B, T, c->vocab_size};
  const GoldenTensor *ref = golden_get_shaped(g, "logits", GOLDEN_F32, 3, btv);

  /* ---- base model: the stage's LoRA is PEFT's fresh state (B = 0), which adds nothing ---- */
  Backend *be = backend_cpu_create(0);
  LoraConfig lc = lora_config_default();
  lc.dropout = 0.0f;
  Stage *s = stage_create(be, c, &lc, 0, c->num_layers, B, T);
  stage_keep_logits(s, 1);
  lora_set_init(be, stage_lora(s), 1);
  hf_model_load_stage(m, s);
  if (hc->dtype != ST_F32 || strstr(name, "sharded"))
    printf("  safetensors files opened: %d\n", hf_model_files_opened(m));
  forward(s, ids);
  compare_logits(s, "logits", ref);
  stage_destroy(s);

  /* ---- base + PEFT adapter, then the adapter merged into the base weights ---- */
  if (adapter) {
    const GoldenTensor *pref = golden_get_shaped(g, "peft_logits", GOLDEN_F32, 3, btv);
    char *adir = path_join(datadir, adapter);
    PeftConfig pc = peft_read_config(adir, c->num_layers);
    LoraConfig plc = pc.lora;
    printf("  adapter %s: r %d, alpha %g, dropout %g, targets 0x%02x, base '%s'\n", adapter,
           plc.r, plc.alpha, plc.dropout, plc.target_mask, pc.base_model);
    EXPECT(plc.target_mask == LORA_ALL_TARGETS, "%s: adapter should cover all seven projections",
           adapter);
    plc.dropout = 0.0f; /* a forward-only pass: no dropout either way; keeps create happy */
    s = stage_create(be, c, &plc, 0, c->num_layers, B, T);
    stage_keep_logits(s, 1);
    hf_model_load_stage(m, s);
    peft_load(adir, c, be, stage_lora(s));
    forward(s, ids);
    compare_logits(s, "peft_logits (adapter)", pref);
    stage_merge_lora(s);
    forward(s, ids);
    compare_logits(s, "peft_logits (merged)", pref);
    stage_destroy(s);
    free(adir);
  }

  hf_model_close(m);
  backend_destroy(be);
  golden_free(g);
  free(dir);
  return tv_test_report(name);
}
