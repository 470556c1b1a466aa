/* Shared set-up for model-level tests (see model_fixture.h). */
#include "model_fixture.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lora.h"
#include "rng.h"

void fill_random_normal(float *x, size_t n, uint64_t seed, float std) {
  Rng r = rng_make(seed, 999);
  for (size_t i = 0; i < n; i++) {
    double u1 = (rng_next_double(&r) + 1e-12), u2 = rng_next_double(&r);
    x[i] = (float)(std * sqrt(-2 * log(u1)) * cos(2 * 3.14159265358979 * u2));
  }
}

void fixture_init(Fixture *f, const LlamaConfig *cfg, const LoraConfig *lora, int l0, int l1,
                  int B, int T, uint64_t seed) {
  memset(f, 0, sizeof *f);
  f->be = backend_cpu_create(0);
  f->cfg = *cfg;
  f->lora = *lora;
  f->B = B;
  f->T = T;
  f->stage = stage_create(f->be, cfg, lora, l0, l1, B, T);
  stage_init_random_weights(f->stage, seed, 0.3f);
  LoraSet *ls = stage_lora(f->stage);
  lora_set_init(f->be, ls, seed);
  /* Non-zero B so gradients reach A and the LoRA path matters in forward. */
  size_t nl = (size_t)(l1 - l0);
  for (size_t i = 0; i < nl; i++)
    for (int t = 0; t < LORA_NUM_TARGETS; t++) {
      LoraAdapter *a = &ls->layers[i][t];
      if (!a->in) continue;
      size_t nb = (size_t)a->out * lora->r;
      float *tmp = tv_malloc(nb * sizeof(float));
      fill_random_normal(tmp, nb, seed * 131 + (l0 + i) * 7 + t, 0.2f);
      f->be->from_host(f->be, a->B, tmp, nb * sizeof(float));
      free(tmp);
    }
  size_t N = (size_t)B * T;
  f->tokens = tv_malloc(N * sizeof(int32_t));
  f->targets = tv_malloc(N * sizeof(int32_t));
  Rng r = rng_make(seed, 4242);
  int counted = 0;
  for (size_t i = 0; i < N; i++) f->tokens[i] = (int32_t)(rng_next_u64(&r) % cfg->vocab_size);
  for (size_t i = 0; i < N; i++) {
    int t = (int)(i % T);
    /* next-token targets, with the first target of every row ignored like a prompt token */
    f->targets[i] = (t + 1 < T && t > 0) ? f->tokens[i + 1] : -1;
    counted += f->targets[i] >= 0;
  }
  f->loss_scale = 1.0f / (float)counted;
  f->layer_plans = tv_calloc(nl, sizeof(LayerPlan));
  f->plan.layers = f->layer_plans;
  fixture_plan_full(f);
}

void fixture_plan_full(Fixture *f) {
  int nl = stage_end_layer(f->stage) - stage_first_layer(f->stage);
  for (int i = 0; i < nl; i++) {
    f->layer_plans[i].keep_activations = LAYER_KEEP_ALL;
    f->layer_plans[i].train_targets = LORA_ALL_TARGETS;
    f->layer_plans[i].record_grad_a = NULL;
    f->layer_plans[i].perturb = NULL;
  }
  f->plan.backward_stop = 0;
  f->plan.pass_seed = 12345;
}

void fixture_free(Fixture *f) {
  stage_destroy(f->stage);
  backend_destroy(f->be);
  free(f->tokens);
  free(f->targets);
  free(f->layer_plans);
}

/* The fixture's batch as one micro-batch, entering at x_in (the fixture's own when NULL). */
static MicroBatch fixture_micro_batch(const Fixture *f, const float *x_in) {
  return (MicroBatch){.tokens = f->tokens,
                      .x_in = x_in ? x_in : f->x_in,
                      .targets = f->targets,
                      .B = f->B,
                      .T = f->T,
                      .loss_scale = f->loss_scale};
}

double fixture_pass(Fixture *f, const float *x_in, const float *dy, float **dx_out) {
  MicroBatch mb = fixture_micro_batch(f, x_in);
  double loss = stage_forward(f->stage, &f->plan, &mb, NULL);
  stage_backward(f->stage, &f->plan, 0, dy, dx_out);
  return loss;
}

double fixture_forward_only(Fixture *f, const float *x_in) {
  int saved = f->plan.backward_stop;
  f->plan.backward_stop = 1 << 30;
  MicroBatch mb = fixture_micro_batch(f, x_in);
  double loss = stage_forward(f->stage, &f->plan, &mb, NULL);
  f->plan.backward_stop = saved;
  return loss;
}

size_t fixture_lora_numel(Fixture *f) {
  LoraSet *ls = stage_lora(f->stage);
  return (size_t)(ls->l1 - ls->l0) * ls->layer_numel;
}

void fixture_get_lora_grads(Fixture *f, float *host) {
  f->be->to_host(f->be, host, stage_lora(f->stage)->grads, fixture_lora_numel(f) * sizeof(float));
}

void fixture_get_lora_params(Fixture *f, float *host) {
  f->be->to_host(f->be, host, stage_lora(f->stage)->params, fixture_lora_numel(f) * sizeof(float));
}

void fixture_set_lora_params(Fixture *f, const float *host) {
  f->be->from_host(f->be, stage_lora(f->stage)->params, host,
                   fixture_lora_numel(f) * sizeof(float));
}

void fixture_zero_grads(Fixture *f) {
  f->be->zero(f->be, stage_lora(f->stage)->grads, fixture_lora_numel(f) * sizeof(float));
}
