/* The optimizer around the AdamW kernel: the warmup + cosine schedule against values
 * computed independently (Python, HF Trainer's formula), global-norm clipping, per-layer
 * update counts and frozen layers left untouched. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lora.h"
#include "optim.h"
#include "test_util.h"

/* lr 1e-3; T = 10, warmup_ratio 0.1 (W = ceil(1.0) = 1) and T = 25, ratio 0.1 (W = 3),
 * printed by a 5-line Python script of lr * t / max(1, W) and
 * lr * max(0, 0.5 * (1 + cos(pi * (t - W) / max(1, T - W)))). */
static const double lr_T10[10] = {0.0, 0.001, 0.0009698463103929542, 0.000883022221559489,
                                  0.00075, 0.0005868240888334653, 0.00041317591116653486,
                                  0.0002500000000000001, 0.00011697777844051105,
                                  3.0153689607045842e-05};
static const double lr_T25_head[6] = {0.0, 0.0003333333333333333, 0.0006666666666666666, 0.001,
                                      0.0009949107209404665, 0.0009797464868072487};
static const double lr_T25_t24 = 5.089279059533658e-06;
static const double lr_T7_ratio0[2] = {0.001, 0.0009504844339512095};

static void test_schedule(void) {
  OptimConfig c = optim_config_default(10);
  for (int t = 0; t < 10; t++) EXPECT_CLOSE(lr_at_step(&c, t), lr_T10[t], 1e-6, 1e-12, "lr T=10");
  c = optim_config_default(25);
  for (int t = 0; t < 6; t++) EXPECT_CLOSE(lr_at_step(&c, t), lr_T25_head[t], 1e-6, 1e-12, "lr T=25");
  EXPECT_CLOSE(lr_at_step(&c, 24), lr_T25_t24, 1e-6, 1e-12, "lr T=25 last step");
  c = optim_config_default(7);
  c.warmup_ratio = 0;
  for (int t = 0; t < 2; t++) EXPECT_CLOSE(lr_at_step(&c, t), lr_T7_ratio0[t], 1e-6, 1e-12, "lr no warmup");
}

static void test_step_and_clip(void) {
  Backend *be = backend_cpu_create(0);
  LoraConfig lc = lora_config_default();
  lc.r = 2;
  LlamaConfig model = llama_config_default(16, 8, 12, 6, 2, 1); /* head_dim 4 */
  LoraSet *s = lora_set_create(be, &lc, &model, 3, 6); /* layers 3, 4, 5 */
  lora_set_init(be, s, 1);
  size_t per = s->layer_numel, n = 3 * per;
  for (size_t i = 0; i < n; i++) s->grads[i] = (float)((int)(i % 11) - 5) * 0.01f;
  /* Clip norm over trainable layers only. */
  unsigned trainable[3] = {LORA_ALL_TARGETS, 0, LORA_ALL_TARGETS};
  double sq = 0;
  for (size_t i = 0; i < per; i++) sq += (double)s->grads[i] * s->grads[i];
  for (size_t i = 2 * per; i < 3 * per; i++) sq += (double)s->grads[i] * s->grads[i];
  EXPECT_CLOSE(lora_grad_sum_squares(be, s, trainable), sq, 1e-12, 0, "sum of squares, trainable");
  OptimConfig oc = optim_config_default(10);
  oc.max_grad_norm = 0.5f;
  float want_scale = (float)(0.5 / (sqrt(sq) + 1e-6));
  EXPECT(want_scale < 1, "test gradients should be large enough to clip");
  EXPECT_CLOSE(optim_clip_scale(&oc, sq), want_scale, 1e-6, 0, "clip scale");
  EXPECT(optim_clip_scale(&oc, 1e-6) == 1.0f, "no clipping below the threshold");
  oc.max_grad_norm = 0;
  EXPECT(optim_clip_scale(&oc, 1e6) == 1.0f, "clipping off");

  float *before = tv_malloc(n * sizeof(float));
  memcpy(before, s->params, n * sizeof(float));
  optim_step(be, &oc, s, trainable, 1, 1.0f);
  optim_step(be, &oc, s, trainable, 2, 1.0f);
  EXPECT(s->steps[0][LORA_Q] == 2 && s->steps[1][LORA_Q] == 0 && s->steps[2][LORA_DOWN] == 2,
         "per-layer update counts %lld %lld %lld", (long long)s->steps[0][LORA_Q],
         (long long)s->steps[1][LORA_Q], (long long)s->steps[2][LORA_DOWN]);
  EXPECT(!memcmp(before + per, s->params + per, per * sizeof(float)), "frozen layer params changed");
  int moments_zero = 1;
  for (size_t i = per; i < 2 * per; i++) moments_zero &= s->m[i] == 0 && s->v[i] == 0;
  EXPECT(moments_zero, "frozen layer moments changed");
  EXPECT(memcmp(before, s->params, per * sizeof(float)) != 0, "trainable layer did not move");

  /* Only the MLP targets of layer 1 train now: its attention adapters stay untouched. */
  unsigned mlp_only[3] = {0, LORA_MLP_TARGETS, 0};
  optim_step(be, &oc, s, mlp_only, 3, 1.0f);
  EXPECT(s->steps[1][LORA_GATE] == 1 && s->steps[1][LORA_O] == 0 && s->steps[0][LORA_GATE] == 2,
         "per-target update counts");
  const LoraAdapter *q1 = &s->layers[1][LORA_Q], *g1 = &s->layers[1][LORA_GATE];
  size_t q_off = (size_t)(q1->A - s->params), g_off = (size_t)(g1->A - s->params);
  size_t q_len = (size_t)(q1->in + q1->out) * lc.r, g_len = (size_t)(g1->in + g1->out) * lc.r;
  EXPECT(!memcmp(before + q_off, q1->A, q_len * sizeof(float)),
         "attention LoRA of layer 1 moved although only its MLP trains");
  EXPECT(memcmp(before + g_off, g1->A, g_len * sizeof(float)) != 0, "MLP LoRA of layer 1 did not move");

  /* Zeroing gradients respects the mask too. */
  lora_zero_grads(be, s, (unsigned[]){0, LORA_ALL_TARGETS, 0});
  EXPECT(s->grads[0] != 0 && s->grads[per + 5] == 0, "lora_zero_grads mask");
  free(before);
  lora_set_destroy(be, s);
  backend_destroy(be);
}

/* The moments after a first update, against float64 with the betas as written (0.9, 0.999):
 * m = (1 - b1) g', v = (1 - b2) g'^2, g' = grad_scale g. A few float roundings make at most
 * ~4e-7 relative; 1 - beta2 formed from the float 0.999f is 1.3e-5 too small. The LoRA
 * path (optim_step) and the full-parameter path (optim_adamw_block) are both measured. */
static void test_first_moments_float64(void) {
  Backend *be = backend_cpu_create(1);
  LoraConfig lc = lora_config_default();
  lc.r = 2;
  LlamaConfig model = llama_config_default(16, 8, 12, 1, 2, 1);
  LoraSet *s = lora_set_create(be, &lc, &model, 0, 1);
  lora_set_init(be, s, 3);
  size_t n = s->layer_numel;
  for (size_t i = 0; i < n; i++) s->grads[i] = (float)(0.37 * sin(1.0 + (double)i));
  OptimConfig oc = optim_config_default(10);
  const float scale = 0.75f;
  optim_step(be, &oc, s, NULL, 0, scale);

  float *p = tv_calloc(n, sizeof(float)), *m = tv_calloc(n, sizeof(float));
  float *v = tv_calloc(n, sizeof(float));
  AdamwBlock block = {.params = p, .grads = s->grads, .m = m, .v = v, .n = n};
  optim_adamw_block(be, &oc, &block, 0, 1, scale);

  double worst_m = 0, worst_v = 0;
  for (size_t i = 0; i < n; i++) {
    double g = (double)s->grads[i] * scale, want_m = (1.0 - 0.9) * g, want_v = (1.0 - 0.999) * g * g;
    if (want_v < 1e-30) continue;
    for (int path = 0; path < 2; path++) {
      double got_m = path ? m[i] : s->m[i], got_v = path ? v[i] : s->v[i];
      double em = fabs(got_m - want_m) / fabs(want_m), ev = fabs(got_v - want_v) / want_v;
      worst_m = em > worst_m ? em : worst_m;
      worst_v = ev > worst_v ? ev : worst_v;
    }
  }
  EXPECT(worst_m <= 1e-6, "first moment %.3g relative off a float64 reference", worst_m);
  EXPECT(worst_v <= 1e-6, "second moment %.3g relative off a float64 reference", worst_v);
  free(p), free(m), free(v);
  lora_set_destroy(be, s);
  backend_destroy(be);
}

static void test_validation(void) {
  char buf[256];
  OptimConfig c = optim_config_default(10);
  c.lr = -1;
  EXPECT(optim_config_validate(&c, buf, sizeof buf) && strstr(buf, "lr"), "negative lr: %s", buf);
  c = optim_config_default(0);
  EXPECT(optim_config_validate(&c, buf, sizeof buf) && strstr(buf, "steps"), "zero steps: %s", buf);
  c = optim_config_default(10);
  c.beta2 = 1;
  EXPECT(optim_config_validate(&c, buf, sizeof buf) && strstr(buf, "adam_beta2"), "beta2: %s", buf);
  c = optim_config_default(10);
  c.max_grad_norm = -1;
  EXPECT(optim_config_validate(&c, buf, sizeof buf) && strstr(buf, "max_grad_norm must be >= 0"),
         "negative clip norm: %s", buf);
  c = optim_config_default(10);
  c.warmup_ratio = 1.5;
  EXPECT(optim_config_validate(&c, buf, sizeof buf) && strstr(buf, "warmup_ratio must be in [0, 1]"),
         "warmup ratio 1.5: %s", buf);
  c = optim_config_default(10);
  c.eps = 0;
  EXPECT(optim_config_validate(&c, buf, sizeof buf) && strstr(buf, "adam_epsilon must be > 0"),
         "zero epsilon: %s", buf);
  c = optim_config_default(10);
  c.beta1 = 0.999999; /* just below the open upper end */
  EXPECT(optim_config_validate(&c, buf, sizeof buf) == NULL, "beta1 0.999999 rejected: %s", buf);
  c = optim_config_default(10);
  EXPECT(optim_config_validate(&c, buf, sizeof buf) == NULL, "defaults are valid");
}

int main(void) {
  test_schedule();
  test_step_and_clip();
  test_first_moments_float64();
  test_validation();
  return tv_test_report("test_optim");
}
