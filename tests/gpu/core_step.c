/* One training step on a single whole-model stage with core alone (see core_step.h). */
#include "core_step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

struct CoreTrainer {
  Stage *stage;
  CoreStepConfig cfg;
  int L;
  float **g;          /* [L] dLoss/da_l, then e_l ([N, D] backend memory) */
  LayerPlan *layers;  /* [L] */
  unsigned *train;    /* [L] LoRA targets each layer trains this step */
  uint8_t *active;    /* [L] sampled (T-Vaccine) or every layer (vaccine) */
  int *active_list;   /* [S] */
  double *norms, *probe_norms, *probs; /* [L] */
  double *device_norms; /* [L] backend memory: per-layer sums, read back once a phase */
  Rng sampling;
};

CoreTrainer *core_trainer_create(Stage *stage, const CoreStepConfig *cfg) {
  CoreTrainer *t = tv_calloc(1, sizeof(CoreTrainer));
  TV_CHECK(stage_is_first(stage) && stage_is_last(stage), "core_step drives a whole-model stage");
  Backend *be = stage_backend(stage);
  const LlamaConfig *c = stage_config(stage);
  int max_B, max_T;
  stage_max_shape(stage, &max_B, &max_T);
  t->stage = stage;
  t->cfg = *cfg;
  t->L = c->num_layers;
  TV_CHECK(cfg->method != METHOD_TVACCINE || (cfg->S >= 1 && cfg->S <= t->L),
           "T-Vaccine S = %d outside [1, %d]", cfg->S, t->L);
  t->g = tv_calloc((size_t)t->L, sizeof(float *));
  if (cfg->method != METHOD_SFT)
    for (int l = 0; l < t->L; l++)
      t->g[l] = be->alloc(be, (size_t)max_B * max_T * c->hidden_size * sizeof(float));
  t->layers = tv_calloc((size_t)t->L, sizeof(LayerPlan));
  t->train = tv_calloc((size_t)t->L, sizeof(unsigned));
  t->active = tv_calloc((size_t)t->L, 1);
  t->active_list = tv_calloc((size_t)t->L, sizeof(int));
  t->norms = tv_calloc((size_t)t->L, sizeof(double));
  t->device_norms = be->alloc(be, (size_t)t->L * sizeof(double));
  t->probe_norms = tv_calloc((size_t)t->L, sizeof(double));
  t->probs = tv_calloc((size_t)t->L, sizeof(double));
  t->sampling = rng_make(cfg->seed, rng_stream_id(RNG_TAG_SAMPLING, 0, 0, 0));
  if (cfg->method == METHOD_VACCINE) memset(t->active, 1, (size_t)t->L);
  return t;
}

void core_trainer_destroy(CoreTrainer *t) {
  if (!t) return;
  Backend *be = stage_backend(t->stage);
  for (int l = 0; l < t->L; l++)
    if (t->g[l]) be->free(be, t->g[l]);
  free(t->g), free(t->layers), free(t->train), free(t->active), free(t->active_list);
  free(t->norms), free(t->probe_norms), free(t->probs);
  be->free(be, t->device_norms);
  free(t);
}

static uint64_t pass_seed(const CoreTrainer *t, int64_t step, int pass) {
  return rng_mix(rng_stream_id(RNG_TAG_DROPOUT, (uint32_t)pass, 0, 0),
                 t->cfg.seed ^ ((uint64_t)step << 8));
}

/* The layers' sums are added up on the device, then read into norms in one copy. */
static void norms_zero(CoreTrainer *t) {
  Backend *be = stage_backend(t->stage);
  be->zero(be, t->device_norms, (size_t)t->L * sizeof(double));
}

static void norms_read(CoreTrainer *t) {
  Backend *be = stage_backend(t->stage);
  be->to_host(be, t->norms, t->device_norms, (size_t)t->L * sizeof(double));
}

static double run_pass(CoreTrainer *t, const PassPlan *plan, const MicroBatch *mb) {
  double loss = stage_forward(t->stage, plan, mb, NULL);
  stage_backward(t->stage, plan, mb->slot, NULL, NULL);
  return loss;
}

/* T-Vaccine: ||dLoss/da_l|| of every layer on the probe batch, then S layers by them. */
static void probe_and_sample(CoreTrainer *t, int64_t step, const MicroBatch *probe) {
  norms_zero(t);
  for (int l = 0; l < t->L; l++)
    t->layers[l] = (LayerPlan){
        .grad_a_sum_squares = &t->device_norms[l],
        .keep_activations = method_layer_keep(t->cfg.activations, 0, 0),
    };
  PassPlan plan = {.layers = t->layers, .backward_stop = 0, .pass_seed = pass_seed(t, step, 0)};
  run_pass(t, &plan, probe);
  norms_read(t);
  for (int l = 0; l < t->L; l++) t->probe_norms[l] = sqrt(t->norms[l]);
  tvaccine_probabilities(t->probe_norms, t->L, t->probs);
  tvaccine_sample_layers(t->probs, t->L, t->cfg.S, &t->sampling, t->active_list);
  memset(t->active, 0, (size_t)t->L);
  for (int k = 0; k < t->cfg.S; k++) t->active[t->active_list[k]] = 1;
}

double core_trainer_step(CoreTrainer *t, int64_t step, const MicroBatch *batch,
                         const MicroBatch *probe) {
  Backend *be = stage_backend(t->stage);
  LoraSet *lora = stage_lora(t->stage);
  const CoreStepConfig *c = &t->cfg;
  size_t rows = (size_t)batch->B * batch->T, D = stage_config(t->stage)->hidden_size;
  if (c->method == METHOD_TVACCINE) probe_and_sample(t, step, probe);

  int lowest_active = t->L, lowest = t->L;
  for (int l = t->L - 1; l >= 0; l--) {
    t->train[l] = method_train_targets(c->method, c->freeze_scope, t->active, l);
    if (t->active[l] && c->method != METHOD_SFT) lowest_active = l;
    if ((t->active[l] && c->method != METHOD_SFT) || t->train[l]) lowest = l;
  }
  if (c->method != METHOD_SFT) { /* pass 1: record g_l on the active layers */
    for (int l = 0; l < t->L; l++)
      t->layers[l] = (LayerPlan){
          .record_grad_a = t->active[l] ? t->g[l] : NULL,
          .keep_activations = method_layer_keep(c->activations, 0, t->active[l]),
      };
    PassPlan plan1 = {.layers = t->layers, .backward_stop = lowest_active,
                      .pass_seed = pass_seed(t, step, 1)};
    run_pass(t, &plan1, batch);
    norms_zero(t);
    for (int l = 0; l < t->L; l++)
      if (t->active[l]) be->sum_squares_acc(be, rows * D, t->g[l], &t->device_norms[l]);
    norms_read(t);
    double sum_sq = 0;
    for (int l = 0; l < t->L; l++)
      if (t->active[l]) sum_sq += t->norms[l];
    float scale = (float)vaccine_perturb_scale(c->rho, sum_sq);
    for (int l = 0; l < t->L; l++)
      if (t->active[l]) be->scale(be, rows * D, scale, t->g[l]);
  }
  for (int l = 0; l < t->L; l++) { /* pass 2: train with e_l added */
    int perturbed = t->active[l] && c->method != METHOD_SFT;
    t->layers[l] = (LayerPlan){
        .perturb = perturbed ? t->g[l] : NULL,
        .keep_activations = method_layer_keep(c->activations, t->train[l], perturbed),
        .train_targets = t->train[l],
    };
  }
  lora_zero_grads(be, lora, t->train);
  PassPlan plan2 = {.layers = t->layers, .backward_stop = lowest,
                    .pass_seed = pass_seed(t, step, 2)};
  double loss = run_pass(t, &plan2, batch);
  norms_zero(t);
  for (int l = 0; l < t->L; l++)
    lora_layer_grad_sum_squares_acc(be, lora, l, t->train[l], &t->device_norms[l]);
  norms_read(t);
  double sq = 0;
  for (int l = 0; l < t->L; l++) sq += t->norms[l];
  optim_step(be, &c->optim, lora, t->train, step, optim_clip_scale(&c->optim, sq));
  return loss;
}

const int *core_trainer_active(const CoreTrainer *t, int *n) {
  *n = t->cfg.method == METHOD_TVACCINE ? t->cfg.S : 0;
  return t->active_list;
}
