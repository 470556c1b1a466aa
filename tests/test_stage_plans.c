/* Every switch of the per-layer PassPlan: recompute == keep, frozen layers get no gradient,
 * e_l enters exactly at a_l, stopping backward below k leaves layers >= k unchanged, and
 * micro-batch splits draw the same dropout masks. White-box where it must be: the e_l test
 * reads the attention output a stage kept (stage_internal.h) to build its hand-made e_l. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lora.h"
#include "model_fixture.h"
#include "stage_internal.h"
#include "test_util.h"

#define SENTINEL 7.25f

static LlamaConfig test_config(void) {
  LlamaConfig c = llama_config_default(45, 32, 56, 4, 4, 2);
  return c;
}

static LoraConfig test_lora(float dropout) {
  LoraConfig lc = lora_config_default();
  lc.r = 4, lc.alpha = 8, lc.dropout = dropout;
  return lc;
}

static int bitwise_equal(const float *a, const float *b, size_t n) {
  return memcmp(a, b, n * sizeof(float)) == 0;
}

static size_t layer_numel(Fixture *f) { return stage_lora(f->stage)->layer_numel; }

/* Keep vs recompute, with dropout on and a perturbation on one layer: bit-identical. */
static void test_recompute_equals_keep(void) {
  Fixture f;
  LlamaConfig cfg = test_config();
  LoraConfig lc = test_lora(0.1f);
  fixture_init(&f, &cfg, &lc, 0, 4, 2, 9, 21);
  size_t n = fixture_lora_numel(&f), nd = (size_t)f.B * f.T * cfg.hidden_size;
  float *e = f.be->alloc(f.be, nd * sizeof(float));
  fill_random_normal(e, nd, 3, 0.05f);
  float *rec[2], *grads[2];
  double loss[2];
  for (int mode = 0; mode < 2; mode++) {
    rec[mode] = f.be->alloc(f.be, nd * sizeof(float));
    grads[mode] = tv_malloc(n * sizeof(float));
    fixture_plan_full(&f);
    for (int i = 0; i < 4; i++)
      f.layer_plans[i].keep_activations = mode == 0 || i == 3 ? LAYER_KEEP_ALL : LAYER_RECOMPUTE;
    f.layer_plans[2].perturb = e;
    f.layer_plans[1].record_grad_a = rec[mode];
    fixture_zero_grads(&f);
    stage_reset_memory_peak(f.stage);
    loss[mode] = fixture_pass(&f, NULL, NULL, NULL);
    fixture_get_lora_grads(&f, grads[mode]);
    printf("recompute test: mode %s kept %zu activation bytes\n", mode ? "recompute" : "keep",
           stage_memory(f.stage).activations);
  }
  EXPECT(loss[0] == loss[1], "loss keep %.17g vs recompute %.17g", loss[0], loss[1]);
  EXPECT(bitwise_equal(grads[0], grads[1], n), "LoRA gradients differ between keep and recompute");
  EXPECT(bitwise_equal(rec[0], rec[1], nd), "recorded dLoss/da_1 differs between keep and recompute");
  for (int m = 0; m < 2; m++) {
    f.be->free(f.be, rec[m]);
    free(grads[m]);
  }
  f.be->free(f.be, e);
  fixture_free(&f);
}

/* Frozen layers 0 and 2 under each LayerKeep: loss, LoRA gradients, the record of dLoss/da_1
 * and the accumulated ||dLoss/da_0||^2 are bit-identical; keep-for-input-grad holds less than
 * keep-all by exactly the normed inputs and LoRA down-projections of the two layers, and
 * recompute less again. */
static void test_frozen_keep_modes(void) {
  Fixture f;
  LlamaConfig cfg = test_config();
  LoraConfig lc = test_lora(0.1f);
  fixture_init(&f, &cfg, &lc, 0, 4, 2, 8, 33);
  size_t n = fixture_lora_numel(&f), N = (size_t)f.B * f.T, nd = N * cfg.hidden_size;
  const LayerKeep modes[3] = {LAYER_KEEP_ALL, LAYER_KEEP_FOR_INPUT_GRAD, LAYER_RECOMPUTE};
  float *rec[3], *grads[3];
  double loss[3], sq[3];
  size_t mem[3];
  for (int m = 0; m < 3; m++) {
    rec[m] = f.be->alloc(f.be, nd * sizeof(float));
    grads[m] = tv_malloc(n * sizeof(float));
    fixture_plan_full(&f);
    for (int i = 0; i < 4; i += 2) {
      f.layer_plans[i].train_targets = 0;
      f.layer_plans[i].keep_activations = modes[m];
    }
    sq[m] = 0;
    f.layer_plans[0].grad_a_sum_squares = &sq[m];
    f.layer_plans[1].record_grad_a = rec[m];
    fixture_zero_grads(&f);
    stage_reset_memory_peak(f.stage);
    loss[m] = fixture_pass(&f, NULL, NULL, NULL);
    mem[m] = stage_memory(f.stage).activations;
    fixture_get_lora_grads(&f, grads[m]);
  }
  for (int m = 1; m < 3; m++) {
    EXPECT(loss[m] == loss[0], "mode %d: loss %.17g vs %.17g", m, loss[m], loss[0]);
    EXPECT(bitwise_equal(grads[m], grads[0], n), "mode %d: LoRA gradients differ", m);
    EXPECT(bitwise_equal(rec[m], rec[0], nd), "mode %d: dLoss/da_1 differs", m);
    EXPECT(sq[m] == sq[0], "mode %d: ||dLoss/da_0||^2 %.17g vs %.17g", m, sq[m], sq[0]);
  }
  double direct = 0; /* the same norm from a recorded buffer */
  fixture_plan_full(&f);
  f.layer_plans[0].record_grad_a = rec[1];
  fixture_pass(&f, NULL, NULL, NULL);
  for (size_t i = 0; i < nd; i++) direct += (double)rec[1][i] * rec[1][i];
  EXPECT(fabs(direct - sq[0]) <= 1e-9 * direct && direct > 0, "sum of squares %.17g vs %.17g",
         sq[0], direct);
  size_t lean_saving = 2 * (stage_layer_record_bytes(f.stage, N, LAYER_KEEP_ALL) -
                            stage_layer_record_bytes(f.stage, N, LAYER_KEEP_FOR_INPUT_GRAD));
  printf("frozen keep modes: all %zu, input-grad %zu, recompute %zu activation bytes\n", mem[0],
         mem[1], mem[2]);
  EXPECT(mem[0] - mem[1] == lean_saving, "keep-for-input-grad saved %zu bytes, expected %zu",
         mem[0] - mem[1], lean_saving);
  EXPECT(mem[2] < mem[1], "recompute kept %zu bytes, keep-for-input-grad %zu", mem[2], mem[1]);
  for (int m = 0; m < 3; m++) {
    f.be->free(f.be, rec[m]);
    free(grads[m]);
  }
  fixture_free(&f);
}

/* Frozen layers: gradients untouched (sentinel survives); trainable ones as in a full pass. */
static void test_frozen_layers(void) {
  Fixture f;
  LlamaConfig cfg = test_config();
  LoraConfig lc = test_lora(0.0f);
  fixture_init(&f, &cfg, &lc, 0, 4, 2, 8, 5);
  size_t n = fixture_lora_numel(&f), per = layer_numel(&f);
  float *full = tv_malloc(n * sizeof(float)), *part = tv_malloc(n * sizeof(float));
  fixture_zero_grads(&f);
  fixture_pass(&f, NULL, NULL, NULL);
  fixture_get_lora_grads(&f, full);

  /* layers 0 and 2 frozen */
  for (size_t i = 0; i < n; i++) part[i] = SENTINEL;
  for (size_t i = per; i < 2 * per; i++) part[i] = 0;
  for (size_t i = 3 * per; i < 4 * per; i++) part[i] = 0;
  f.be->from_host(f.be, stage_lora(f.stage)->grads, part, n * sizeof(float));
  fixture_plan_full(&f);
  f.layer_plans[0].train_targets = 0;
  f.layer_plans[2].train_targets = 0;
  fixture_pass(&f, NULL, NULL, NULL);
  fixture_get_lora_grads(&f, part);
  int untouched = 1;
  for (size_t i = 0; i < per; i++) untouched &= part[i] == SENTINEL && part[2 * per + i] == SENTINEL;
  EXPECT(untouched, "a frozen layer's LoRA gradients were written");
  EXPECT(bitwise_equal(part + per, full + per, per), "layer 1 gradient differs when others are frozen");
  EXPECT(bitwise_equal(part + 3 * per, full + 3 * per, per),
         "layer 3 gradient differs when others are frozen");
  free(full);
  free(part);
  fixture_free(&f);
}

/* e_l enters at a_l: perturbing with e = att_l dW^T equals running with W_o + dW. */
static void test_perturb_equals_by_hand(void) {
  Fixture f;
  LlamaConfig cfg = test_config();
  LoraConfig lc = test_lora(0.0f);
  fixture_init(&f, &cfg, &lc, 0, 4, 2, 8, 17);
  const int l = 2;
  size_t N = (size_t)f.B * f.T, D = cfg.hidden_size, HD = (size_t)cfg.num_heads * cfg.head_dim;
  size_t n = fixture_lora_numel(&f), per = layer_numel(&f);

  fixture_zero_grads(&f);
  MicroBatch mb = {
      .tokens = f.tokens, .targets = f.targets, .B = f.B, .T = f.T, .loss_scale = f.loss_scale};
  stage_forward(f.stage, &f.plan, &mb, NULL);
  float *att = tv_malloc(N * HD * sizeof(float));
  memcpy(att, f.stage->slots[0].acts[l].att, N * HD * sizeof(float));
  stage_backward(f.stage, &f.plan, 0, NULL, NULL);

  float *dW = tv_malloc(D * HD * sizeof(float)), *e = f.be->alloc(f.be, N * D * sizeof(float));
  fill_random_normal(dW, D * HD, 8, 0.05f);
  for (size_t r = 0; r < N; r++)
    for (size_t o = 0; o < D; o++) {
      double s = 0;
      for (size_t i = 0; i < HD; i++) s += (double)att[r * HD + i] * dW[o * HD + i];
      e[r * D + o] = (float)s;
    }

  float *g_hand = tv_malloc(n * sizeof(float)), *g_hook = tv_malloc(n * sizeof(float));
  float *wo = stage_weights(f.stage)->layers[l].wo;
  for (size_t i = 0; i < D * HD; i++) wo[i] += dW[i];
  fixture_zero_grads(&f);
  double loss_hand = fixture_pass(&f, NULL, NULL, NULL);
  fixture_get_lora_grads(&f, g_hand);
  for (size_t i = 0; i < D * HD; i++) wo[i] -= dW[i];

  f.layer_plans[l].perturb = e;
  fixture_zero_grads(&f);
  double loss_hook = fixture_pass(&f, NULL, NULL, NULL);
  fixture_get_lora_grads(&f, g_hook);
  f.layer_plans[l].perturb = NULL;
  double loss_plain = fixture_forward_only(&f, NULL);

  EXPECT(fabs(loss_hook - loss_plain) > 1e-3 * fabs(loss_plain),
         "the perturbation must change the loss (%.9g vs %.9g)", loss_hook, loss_plain);
  EXPECT_CLOSE(loss_hook, loss_hand, 2e-6, 0, "loss with e_l vs loss with W_o + dW");
  /* Layers above l see the same forward; their gradients agree to float rounding. */
  double worst = 0;
  for (size_t i = (size_t)(l + 1) * per; i < n; i++) {
    double d = fabs(g_hook[i] - g_hand[i]) / (fabs(g_hand[i]) + 1e-4);
    if (d > worst) worst = d;
  }
  EXPECT(worst < 1e-3, "layer-%d+ gradients differ by %.3g relative", l + 1, worst);
  free(att);
  free(dW);
  free(g_hand);
  free(g_hook);
  f.be->free(f.be, e);
  fixture_free(&f);
}

/* backward_stop = k: layers >= k get exactly the full-pass gradients, layers < k nothing,
 * and the pass keeps fewer activations. */
static void test_backward_stop(void) {
  Fixture f;
  LlamaConfig cfg = test_config();
  LoraConfig lc = test_lora(0.1f);
  fixture_init(&f, &cfg, &lc, 0, 4, 2, 8, 33);
  size_t n = fixture_lora_numel(&f), per = layer_numel(&f);
  float *full = tv_malloc(n * sizeof(float)), *part = tv_malloc(n * sizeof(float));
  size_t nd = (size_t)f.B * f.T * cfg.hidden_size;
  float *rec_full = f.be->alloc(f.be, nd * sizeof(float)), *rec_part = f.be->alloc(f.be, nd * sizeof(float));
  fixture_zero_grads(&f);
  f.layer_plans[3].record_grad_a = rec_full;
  stage_reset_memory_peak(f.stage);
  double loss_full = fixture_pass(&f, NULL, NULL, NULL);
  size_t mem_full = stage_memory(f.stage).activations;
  fixture_get_lora_grads(&f, full);
  for (int k = 1; k <= 3; k++) {
    for (size_t i = 0; i < n; i++) part[i] = i < (size_t)k * per ? SENTINEL : 0;
    f.be->from_host(f.be, stage_lora(f.stage)->grads, part, n * sizeof(float));
    fixture_plan_full(&f);
    f.plan.backward_stop = k;
    f.layer_plans[3].record_grad_a = rec_part;
    stage_reset_memory_peak(f.stage);
    double loss = fixture_pass(&f, NULL, NULL, NULL);
    size_t mem = stage_memory(f.stage).activations;
    fixture_get_lora_grads(&f, part);
    EXPECT(loss == loss_full, "stop %d: loss changed", k);
    int untouched = 1;
    for (size_t i = 0; i < (size_t)k * per; i++) untouched &= part[i] == SENTINEL;
    EXPECT(untouched, "stop %d: a layer below the stop got gradient work", k);
    EXPECT(bitwise_equal(part + k * per, full + k * per, (4 - k) * per),
           "stop %d: gradients of layers >= %d changed", k, k);
    EXPECT(bitwise_equal(rec_part, rec_full, nd), "stop %d: recorded dLoss/da_3 changed", k);
    EXPECT(mem < mem_full, "stop %d: kept %zu activation bytes, full pass %zu", k, mem, mem_full);
    printf("backward stop %d: %zu activation bytes vs %zu for the full pass\n", k, mem, mem_full);
  }
  /* A forward-only pass keeps nothing. */
  stage_reset_memory_peak(f.stage);
  fixture_forward_only(&f, NULL);
  EXPECT(stage_memory(f.stage).activations == 0, "forward-only pass kept %zu bytes",
         stage_memory(f.stage).activations);
  f.be->free(f.be, rec_full);
  f.be->free(f.be, rec_part);
  free(full);
  free(part);
  fixture_free(&f);
}

/* Two micro-batches with row offsets give the masks (hence loss and gradients) of one. */
static void test_microbatch_split(void) {
  Fixture f;
  LlamaConfig cfg = test_config();
  LoraConfig lc = test_lora(0.3f);
  fixture_init(&f, &cfg, &lc, 0, 4, 4, 6, 41);
  size_t n = fixture_lora_numel(&f);
  float *one = tv_malloc(n * sizeof(float)), *two = tv_malloc(n * sizeof(float));
  fixture_zero_grads(&f);
  double loss_one = fixture_pass(&f, NULL, NULL, NULL);
  fixture_get_lora_grads(&f, one);
  fixture_zero_grads(&f);
  double loss_two = 0;
  for (int half = 0; half < 2; half++) {
    size_t off = (size_t)half * 2 * f.T;
    MicroBatch mb = {.tokens = f.tokens + off,
                     .targets = f.targets + off,
                     .B = 2,
                     .T = f.T,
                     .row_offset = half * 2 * f.T,
                     .loss_scale = f.loss_scale};
    loss_two += stage_forward(f.stage, &f.plan, &mb, NULL);
    stage_backward(f.stage, &f.plan, 0, NULL, NULL);
  }
  fixture_get_lora_grads(&f, two);
  EXPECT_CLOSE(loss_two, loss_one, 1e-6, 0, "loss of two micro-batches vs one");
  double worst = 0, big = 0;
  for (size_t i = 0; i < n; i++) big = fmax(big, fabs(one[i]));
  for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(one[i] - two[i]) / big);
  EXPECT(worst < 1e-5, "gradients of two micro-batches differ by %.3g of the largest", worst);
  /* A different pass seed draws different masks. */
  f.plan.pass_seed ^= 1;
  double loss_other = fixture_forward_only(&f, NULL);
  EXPECT(fabs(loss_other - loss_one) > 1e-6, "another pass seed gave the same dropout masks");
  free(one);
  free(two);
  fixture_free(&f);
}

/* Merging the adapters into the base weights keeps the function: same loss, B now zero. */
static void test_merge_lora(void) {
  Fixture f;
  LlamaConfig cfg = test_config();
  LoraConfig lc = test_lora(0.0f);
  fixture_init(&f, &cfg, &lc, 0, 4, 2, 8, 55);
  double before = fixture_forward_only(&f, NULL);
  stage_merge_lora(f.stage);
  double after = fixture_forward_only(&f, NULL);
  EXPECT_CLOSE(after, before, 1e-5, 0, "loss after merging LoRA into the base");
  LoraAdapter *a = &stage_lora(f.stage)->layers[1][LORA_DOWN];
  int zero = 1;
  for (int i = 0; i < a->out * lc.r; i++) zero &= a->B[i] == 0.0f;
  EXPECT(zero, "B is zero after the merge");
  /* and the LoRA path really mattered before: removing it without merging changes the loss */
  fixture_free(&f);
  fixture_init(&f, &cfg, &lc, 0, 4, 2, 8, 55);
  for (int l = 0; l < 4; l++)
    for (int t = 0; t < LORA_NUM_TARGETS; t++) {
      LoraAdapter *b = &stage_lora(f.stage)->layers[l][t];
      memset(b->B, 0, (size_t)b->out * lc.r * sizeof(float));
    }
  EXPECT(fabs(fixture_forward_only(&f, NULL) - before) > 1e-3, "LoRA had no effect to merge");
  fixture_free(&f);
}

int main(void) {
  test_merge_lora();
  test_recompute_equals_keep();
  test_frozen_layers();
  test_frozen_keep_modes();
  test_perturb_equals_by_hand();
  test_backward_stop();
  test_microbatch_split();
  return tv_test_report("test_stage_plans");
}
