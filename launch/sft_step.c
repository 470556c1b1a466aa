/* Single-stage SFT step (see sft_step.h). */
#include "sft_step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rng.h"

SftStepper *sft_stepper_create(Stage *stage, int micro_B) {
  TV_CHECK(stage_is_first(stage) && stage_is_last(stage), "sft_step needs the whole model");
  SftStepper *st = tv_calloc(1, sizeof(SftStepper));
  int nl = stage_end_layer(stage) - stage_first_layer(stage);
  st->stage = stage;
  st->micro_B = micro_B;
  st->layers = tv_calloc((size_t)nl, sizeof(LayerPlan));
  st->train = tv_malloc((size_t)nl * sizeof(unsigned));
  for (int i = 0; i < nl; i++) {
    st->layers[i].keep_activations = 1;
    st->layers[i].train_targets = LORA_ALL_TARGETS;
    st->train[i] = LORA_ALL_TARGETS;
  }
  st->plan.layers = st->layers;
  st->plan.backward_stop = 0;
  return st;
}

void sft_stepper_destroy(SftStepper *st) {
  if (!st) return;
  free(st->layers);
  free(st->train);
  free(st);
}

SftStepResult sft_step(SftStepper *st, const OptimConfig *oc, const int32_t *tokens,
                       const int32_t *targets, int B, int T, int64_t t, uint64_t seed) {
  Stage *s = st->stage;
  LoraSet *lora = stage_lora(s);
  SftStepResult res = {0, 0, 0};
  size_t counted = 0;
  for (size_t i = 0; i < (size_t)B * T; i++) counted += targets[i] >= 0;
  float scale = counted ? 1.0f / (float)counted : 0.0f;
  st->plan.pass_seed = rng_mix(rng_stream_id(RNG_TAG_DROPOUT, 0, 0, 0), seed ^ (uint64_t)t);
  lora_zero_grads(stage_backend(s), lora, NULL);
  for (int b0 = 0; b0 < B; b0 += st->micro_B) {
    int mb = B - b0 < st->micro_B ? B - b0 : st->micro_B;
    size_t off = (size_t)b0 * T;
    res.loss += stage_forward(s, &st->plan, tokens + off, NULL, targets + off, mb, T, b0 * T,
                              scale, NULL);
    stage_backward(s, &st->plan, NULL, NULL);
  }
  double sq = lora_grad_sum_squares(stage_backend(s), lora, NULL);
  res.grad_norm = sqrt(sq);
  res.lr = lr_at_step(oc, t);
  optim_step(stage_backend(s), oc, lora, st->train, t, optim_clip_scale(oc, sq));
  return res;
}
