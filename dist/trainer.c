/* The alignment step of every method across ranks (see trainer.h). */
#include "trainer.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lora.h"
#include "replica_reduce.h"

struct Trainer {
  Comm *comm;
  Stage *stage;
  Pipeline *pipe;
  TrainerConfig cfg;
  int L, l0, nl;
  int micro_B;        /* rows of a micro-batch (the pipeline's split) */
  LayerPlan *layers;  /* [nl] */
  unsigned *train;    /* [nl] trainable targets of the current step */
  float **g;          /* [nl] whole-batch dLoss/da_l = e_l buffers; only layers of A hold one */
  size_t g_rows;      /* rows each g buffer holds */
  size_t g_bytes, g_bytes_peak; /* bytes of g buffers held now, and the peak */
  double *probs;      /* [L] */
  double *norms;      /* [L] scratch */
  double *device_norms; /* [L + 3] backend memory: per-layer (or, in full training, per-part)
                         * sums reduced there, read back once */
  double *probe_norms; /* [L] n_l of the last probe */
  uint8_t *active;    /* [L] membership of A */
  int *active_list;   /* [S] */
  int num_active;
  Rng sampling;
  /* Per-micro-batch sums taken out after each backward (pipeline hook), folded in micro-batch
   * order across the grid's replicas (replica_reduce.h). */
  double *micro_norms; /* [micro-batches of the pass][L] ||dLoss/da_l||^2, host */
  double *device_micro_norms; /* the same table in backend memory, filled by after_backward */
  size_t micro_norms_cap;
  int harvest_norms;   /* this pass adds layer norms into norms[] */
  GradFold *fold;      /* this pass's LoRA gradients, when it trains */
  int fold_grads;
};

static void release_grad_buffer(Trainer *t, int i);
static void after_backward(void *ctx, int micro);

Trainer *trainer_create(Comm *comm, Stage *stage, const TrainerConfig *cfg, int micro_B) {
  Trainer *t = tv_calloc(1, sizeof(Trainer));
  t->comm = comm;
  t->stage = stage;
  t->cfg = *cfg;
  t->L = stage_config(stage)->num_layers;
  t->l0 = stage_first_layer(stage);
  t->nl = stage_end_layer(stage) - t->l0;
  t->pipe = pipeline_create(comm, stage, micro_B, cfg->schedule);
  pipeline_set_backward_hook(t->pipe, after_backward, t);
  t->fold = grad_fold_create(comm, stage_backend(stage));
  t->micro_B = micro_B;
  t->layers = tv_calloc((size_t)t->nl, sizeof(LayerPlan));
  t->train = tv_calloc((size_t)t->nl, sizeof(unsigned));
  t->g = tv_calloc((size_t)t->nl, sizeof(float *));
  t->probs = tv_calloc((size_t)t->L, sizeof(double));
  t->norms = tv_calloc((size_t)STAGE_WEIGHT_PARTS(t->L), sizeof(double)); /* layers + base parts */
  Backend *be = stage_backend(stage);
  t->device_norms = be->alloc(be, (size_t)STAGE_WEIGHT_PARTS(t->L) * sizeof(double));
  t->probe_norms = tv_calloc((size_t)t->L, sizeof(double));
  t->active = tv_calloc((size_t)t->L, 1);
  t->active_list = tv_calloc((size_t)t->L, sizeof(int));
  t->sampling = rng_make(cfg->seed, rng_stream_id(RNG_TAG_SAMPLING, 0, 0, 0));
  if (cfg->method == METHOD_TVACCINE) {
    if (cfg->num_fixed > 0) {
      for (int i = 0; i < cfg->num_fixed; i++) {
        int l = cfg->fixed_layers[i];
        if (l < 0 || l >= t->L) tv_die("tvaccine.layers: layer %d is outside [0, %d)", l, t->L);
        t->active[l] = 1;
      }
    } else if (cfg->S < 1 || cfg->S > t->L) {
      tv_die("tvaccine.S = %d must be between 1 and the model's %d layers", cfg->S, t->L);
    }
  }
  for (int l = 0; l < t->L; l++) {
    if (cfg->method != METHOD_TVACCINE) t->active[l] = 1;
    if (t->active[l]) t->active_list[t->num_active++] = l;
  }
  for (int l = 0; l < t->L; l++) t->probs[l] = 1.0 / t->L;
  if (cfg->train_base) {
    if (cfg->method != METHOD_SFT)
      tv_die("full-parameter training runs method sft, not %s", method_names[cfg->method]);
    if (stage_config(stage)->tie_word_embeddings && !(stage_is_first(stage) && stage_is_last(stage)))
      tv_die("full-parameter training of a model with tied embeddings needs one rank");
    /* The replica fold (replica_reduce.h) carries LoRA gradients only. */
    if (comm && comm_num_replicas(comm) > 1)
      tv_die("full-parameter training runs on one pipeline replica (dist.data_parallel 1), not %d",
             comm_num_replicas(comm));
    stage_enable_full_training(stage);
  }
  return t;
}

void trainer_destroy(Trainer *t) {
  if (!t) return;
  for (int i = 0; i < t->nl; i++) release_grad_buffer(t, i);
  pipeline_destroy(t->pipe);
  grad_fold_destroy(t->fold);
  free(t->micro_norms);
  if (t->device_micro_norms)
    stage_backend(t->stage)->free(stage_backend(t->stage), t->device_micro_norms);
  free(t->layers);
  free(t->train);
  free(t->g);
  free(t->probs);
  free(t->norms);
  stage_backend(t->stage)->free(stage_backend(t->stage), t->device_norms);
  free(t->probe_norms);
  free(t->active);
  free(t->active_list);
  free(t);
}

static int samples_layers(const Trainer *t) {
  return t->cfg.method == METHOD_TVACCINE && t->cfg.num_fixed == 0;
}

int trainer_needs_probe(const Trainer *t, int64_t step) {
  return samples_layers(t) && step % t->cfg.K == 0;
}

static void release_grad_buffer(Trainer *t, int i) {
  if (!t->g[i]) return;
  Backend *be = stage_backend(t->stage);
  be->free(be, t->g[i]);
  t->g[i] = NULL;
  t->g_bytes -= t->g_rows * (size_t)stage_config(t->stage)->hidden_size * sizeof(float);
}

/* The whole-batch dLoss/da_l buffer of local layer i (a layer of A), grown to `rows` rows
 * when needed. Buffers are allocated only when A changes or the batch grows, never in a
 * step that keeps the same A and batch shape. */
static float *grad_buffer(Trainer *t, int i, size_t rows) {
  Backend *be = stage_backend(t->stage);
  size_t D = stage_config(t->stage)->hidden_size;
  if (rows > t->g_rows) {
    for (int j = 0; j < t->nl; j++) release_grad_buffer(t, j);
    t->g_rows = rows;
  }
  if (!t->g[i]) {
    t->g[i] = be->alloc(be, t->g_rows * D * sizeof(float));
    t->g_bytes += t->g_rows * D * sizeof(float);
    if (t->g_bytes > t->g_bytes_peak) t->g_bytes_peak = t->g_bytes;
  }
  return t->g[i];
}

/* Rows of one micro-batch of `batch` (what the stage's activation record holds). */
static size_t micro_rows(const Trainer *t, const Batch *batch) {
  return (size_t)(batch->B < t->micro_B ? batch->B : t->micro_B) * batch->T;
}

/* Under ACTIVATIONS_AUTO, frozen layers (no g_l recorded, no e_l added, nothing trained)
 * that would keep their input-gradient record are recomputed instead, highest first:
 * 1. as many as this rank has layers whose backward the pass skips (below backward_stop; layer 0
 *    not counted, since Vaccine's layer 0 runs only part of a backward in pass 1). Recomputing
 *    costs one layer forward and a skipped backward at least that, so each backward operation
 *    of the rank costs no more than Vaccine's, whose ranks run every layer's backward: the
 *    step is never slower than Vaccine's on the same grid;
 * 2. then more, while a nonzero budget is exceeded by this stage's records for the
 *    micro-batches it holds at once (each recompute then costs time).
 * Every frozen layer costs one forward to recompute, so only how many keep matters for time. */
static void fit_activation_budget(Trainer *t, const PassPlan *plan, const Batch *batch) {
  if (t->cfg.activations != ACTIVATIONS_AUTO) return;
  size_t rows = micro_rows(t, batch);
  size_t held = (size_t)pipeline_micro_batches_held(t->pipe, plan, batch);
  size_t budget = t->cfg.activation_budget ? t->cfg.activation_budget / held : SIZE_MAX;
  int skip_lo = t->l0 > 1 ? t->l0 : 1;
  int skip_hi = plan->backward_stop < t->l0 + t->nl ? plan->backward_stop : t->l0 + t->nl;
  int free_recomputes = skip_hi > skip_lo ? skip_hi - skip_lo : 0;
  size_t total = 0;
  for (int i = 0; i < t->nl; i++)
    if (t->l0 + i >= plan->backward_stop)
      total += stage_layer_record_bytes(t->stage, rows, t->layers[i].keep_activations);
  size_t saved = stage_layer_record_bytes(t->stage, rows, LAYER_KEEP_FOR_INPUT_GRAD) -
                 stage_layer_record_bytes(t->stage, rows, LAYER_RECOMPUTE);
  for (int i = t->nl - 1; i >= 0 && (free_recomputes > 0 || total > budget); i--) {
    LayerPlan *lp = &t->layers[i];
    if (t->l0 + i < plan->backward_stop || lp->keep_activations != LAYER_KEEP_FOR_INPUT_GRAD ||
        lp->record_grad_a || lp->perturb)
      continue;
    lp->keep_activations = LAYER_RECOMPUTE;
    total -= saved;
    free_recomputes--;
  }
}

static uint64_t pass_seed(const Trainer *t, int64_t step, int pass) {
  return rng_mix(rng_stream_id(RNG_TAG_DROPOUT, (uint32_t)pass, 0, 0), t->cfg.seed ^ ((uint64_t)step << 8));
}

/* Per-layer sums are added up in device_norms (zeroed here) and read into norms once. */
static void device_norms_zero(Trainer *t) {
  Backend *be = stage_backend(t->stage);
  be->zero(be, t->device_norms, (size_t)t->L * sizeof(double));
}

static void device_norms_read(Trainer *t) {
  Backend *be = stage_backend(t->stage);
  be->to_host(be, t->norms, t->device_norms, (size_t)t->L * sizeof(double));
}

/* After each backward: the micro-batch's layer norms (added by the stage into device_norms)
 * move to its row of the device table, and its LoRA gradients into the fold; device copies
 * only, so a pass still reads back once. */
static void after_backward(void *ctx, int micro) {
  Trainer *t = ctx;
  if (t->harvest_norms) {
    Backend *be = stage_backend(t->stage);
    size_t bytes = (size_t)t->nl * sizeof(double);
    be->copy(be, t->device_micro_norms + (size_t)micro * t->L + t->l0, t->device_norms + t->l0, bytes);
    be->zero(be, t->device_norms + t->l0, bytes);
  }
  if (t->fold_grads) grad_fold_take(t->fold, micro);
}

/* Before a pass whose plan adds layer norms into device_norms: an empty table for its
 * micro-batches. */
static void begin_norms(Trainer *t, const Batch *batch) {
  Backend *be = stage_backend(t->stage);
  int m, m0, m1;
  pipeline_micro_range(t->pipe, batch, &m, &m0, &m1);
  size_t n = (size_t)m * t->L;
  if (n > t->micro_norms_cap) {
    free(t->micro_norms);
    if (t->device_micro_norms) be->free(be, t->device_micro_norms);
    t->micro_norms = tv_malloc(n * sizeof(double));
    t->device_micro_norms = be->alloc(be, n * sizeof(double));
    t->micro_norms_cap = n;
  }
  be->zero(be, t->device_micro_norms, n * sizeof(double));
  device_norms_zero(t);
  t->harvest_norms = 1;
}

/* After it: norms[l] = sum over the batch's micro-batches, in order, on every rank. */
static void end_norms(Trainer *t, const Batch *batch) {
  Backend *be = stage_backend(t->stage);
  int m, m0, m1;
  pipeline_micro_range(t->pipe, batch, &m, &m0, &m1);
  be->to_host(be, t->micro_norms, t->device_micro_norms, (size_t)m * t->L * sizeof(double));
  replica_fold_table(t->comm, t->micro_norms, m, t->L, t->norms);
  t->harvest_norms = 0;
}

static void probe_and_sample(Trainer *t, int64_t step, const Batch *probe, StepReport *r) {
  if (step % t->cfg.K == 0) {
    TV_CHECK(probe && probe->B > 0 && probe->T > 0 && probe->tokens && probe->targets,
             "step %lld starts with a T-Vaccine probe but was given no probe batch",
             (long long)step);
    /* Probe: ||dLoss/da_l||^2 of every layer summed micro-batch by micro-batch; nothing is
     * trained and no [rows, D] gradient is kept. */
    for (int i = 0; i < t->nl; i++)
      t->layers[i] = (LayerPlan){
          .grad_a_sum_squares = &t->device_norms[t->l0 + i],
          .keep_activations = method_layer_keep(t->cfg.activations, 0, 0),
      };
    PassPlan plan = {.layers = t->layers, .backward_stop = 0, .pass_seed = pass_seed(t, step, 0)};
    fit_activation_budget(t, &plan, probe);
    begin_norms(t, probe);
    pipeline_pass(t->pipe, &plan, probe, 1);
    end_norms(t, probe);
    for (int l = 0; l < t->L; l++) t->probe_norms[l] = sqrt(t->norms[l]);
    tvaccine_probabilities(t->probe_norms, t->L, t->probs);
    r->probed = 1;
  }
  if (step % t->cfg.J == 0) {
    tvaccine_sample_layers(t->probs, t->L, t->cfg.S, &t->sampling, t->active_list);
    t->num_active = t->cfg.S;
    memset(t->active, 0, (size_t)t->L);
    for (int k = 0; k < t->num_active; k++) t->active[t->active_list[k]] = 1;
    /* Layers that left A give their perturbation buffers back. */
    for (int i = 0; i < t->nl; i++)
      if (!t->active[t->l0 + i]) release_grad_buffer(t, i);
    r->resampled = 1;
  }
}

/* Global sum of squared trainable gradients, reduced per layer and then added in layer
 * order, so the clipping factor is bit-identical for any number of ranks. */
static double trainable_grad_sum_squares(Trainer *t) {
  Backend *be = stage_backend(t->stage);
  device_norms_zero(t);
  for (int i = 0; i < t->nl; i++)
    lora_layer_grad_sum_squares_acc(be, stage_lora(t->stage), i, t->train[i],
                                    &t->device_norms[t->l0 + i]);
  device_norms_read(t);
  comm_allreduce_sum(t->comm, t->norms, t->L);
  double sq = 0;
  for (int l = 0; l < t->L; l++) sq += t->norms[l];
  return sq;
}

/* Full training: the global sum of squared base-weight gradients, reduced per part (each
 * decoder layer, embedding, head, final norm) and added in one order, as above. */
static double base_grad_sum_squares(Trainer *t) {
  Backend *be = stage_backend(t->stage);
  int n = STAGE_WEIGHT_PARTS(t->L);
  stage_weight_grad_part_sums(t->stage, t->device_norms);
  be->to_host(be, t->norms, t->device_norms, (size_t)n * sizeof(double));
  comm_allreduce_sum(t->comm, t->norms, n);
  double sq = 0;
  for (int k = 0; k < n; k++) sq += t->norms[k];
  return sq;
}

void trainer_step(Trainer *t, int64_t step, const Batch *batch, const Batch *probe,
                  StepReport *r) {
  memset(r, 0, sizeof *r);
  Backend *be = stage_backend(t->stage);
  LoraSet *lora = stage_lora(t->stage);
  const TrainerConfig *c = &t->cfg;
  size_t rows = (size_t)batch->B * batch->T, D = stage_config(t->stage)->hidden_size;
  if (samples_layers(t)) probe_and_sample(t, step, probe, r);

  /* Nothing below the lowest recording layer (pass 1) or the lowest trainable or perturbed
   * layer (pass 2) needs backward. */
  int lowest_active = t->L, lowest = t->L;
  for (int l = t->L - 1; l >= 0; l--) {
    if (t->active[l]) lowest_active = l;
    if (t->active[l] || method_train_targets(c->method, c->freeze_scope, t->active, l)) lowest = l;
  }
  for (int i = 0; i < t->nl; i++)
    t->train[i] = c->train_base ? 0 : method_train_targets(c->method, c->freeze_scope, t->active, t->l0 + i);
  if (c->train_base) lowest = 0; /* every weight down to the embedding trains */

  if (c->method != METHOD_SFT) {
    /* Pass 1: record g_l on the active layers; nothing trains, so no layer needs the inputs
     * of weight or LoRA gradients. */
    for (int i = 0; i < t->nl; i++) {
      int active = t->active[t->l0 + i];
      t->layers[i] = (LayerPlan){
          .record_grad_a = active ? grad_buffer(t, i, rows) : NULL,
          .grad_a_sum_squares = active ? &t->device_norms[t->l0 + i] : NULL,
          .keep_activations = method_layer_keep(c->activations, 0, active),
      };
    }
    PassPlan plan1 = {.layers = t->layers, .backward_stop = lowest_active,
                      .pass_seed = pass_seed(t, step, 1)};
    fit_activation_budget(t, &plan1, batch);
    begin_norms(t, batch);
    r->loss_pass1 = pipeline_pass(t->pipe, &plan1, batch, 1);
    end_norms(t, batch);
    double sum_sq = 0;
    for (int l = 0; l < t->L; l++) sum_sq += t->norms[l];
    r->perturb_norm = sqrt(sum_sq);
    float scale = (float)vaccine_perturb_scale(c->rho, sum_sq);
    /* This replica's rows: the others' rows of the whole-batch buffer are never read. */
    size_t row0, row1;
    pipeline_row_range(t->pipe, batch, &row0, &row1);
    for (int i = 0; i < t->nl; i++)
      if (t->layers[i].record_grad_a) {
        be->scale(be, (row1 - row0) * D, scale, t->g[i] + row0 * D);
        t->layers[i].perturb = t->g[i];
        t->layers[i].record_grad_a = NULL;
      }
  }

  /* Pass 2 (the only pass of sft): train the trainable set with e_l in place. */
  for (int i = 0; i < t->nl; i++) {
    const float *perturb = c->method != METHOD_SFT ? t->layers[i].perturb : NULL;
    t->layers[i] = (LayerPlan){
        .perturb = perturb,
        .keep_activations = c->train_base ? LAYER_KEEP_ALL
                                          : method_layer_keep(c->activations, t->train[i],
                                                              t->active[t->l0 + i] && c->method != METHOD_SFT),
        .train_targets = t->train[i],
    };
  }
  if (c->train_base)
    stage_zero_weight_grads(t->stage);
  else
    lora_zero_grads(be, lora, t->train);
  PassPlan plan2 = {.layers = t->layers, .backward_stop = lowest,
                    .pass_seed = pass_seed(t, step, 2), .train_base = c->train_base};
  fit_activation_budget(t, &plan2, batch);
  int m, m0, m1;
  pipeline_micro_range(t->pipe, batch, &m, &m0, &m1);
  grad_fold_begin(t->fold, lora, t->train, m0, m1);
  t->fold_grads = 1;
  r->loss = pipeline_pass(t->pipe, &plan2, batch, 1);
  t->fold_grads = 0;
  grad_fold_finish(t->fold);
  double sq = c->train_base ? base_grad_sum_squares(t) : trainable_grad_sum_squares(t);
  r->grad_norm = sqrt(sq);
  r->lr = lr_at_step(&c->optim, step);
  /* A non-finite loss or norm would poison the adapters and AdamW moments for good; both are
   * global values, so every rank skips the update alike and the caller stops the run. */
  r->nonfinite = !isfinite(r->loss) || !isfinite(r->grad_norm);
  float clip = optim_clip_scale(&c->optim, sq);
  if (!r->nonfinite && c->train_base) {
    AdamwBlock weights = stage_weight_block(t->stage); /* every weight updates every step */
    optim_adamw_block(be, &c->optim, &weights, step, step + 1, clip);
  } else if (!r->nonfinite) {
    optim_step(be, &c->optim, lora, t->train, step, clip);
  }
  for (int i = 0; i < t->nl; i++) t->layers[i].perturb = NULL;
}

const double *trainer_layer_probs(const Trainer *t) { return t->probs; }

const int *trainer_active_layers(const Trainer *t, int *count) {
  *count = t->num_active;
  return t->active_list;
}

Rng *trainer_sampling_rng(Trainer *t) { return &t->sampling; }

const double *trainer_probe_norms(const Trainer *t) { return t->probe_norms; }

const float *trainer_perturbation(const Trainer *t, int layer) {
  if (layer < t->l0 || layer >= t->l0 + t->nl) return NULL;
  return t->g[layer - t->l0];
}

void trainer_restore(Trainer *t, const double *probs, const int *active, int count) {
  memcpy(t->probs, probs, (size_t)t->L * sizeof(double));
  if (t->cfg.method != METHOD_TVACCINE || count <= 0) return;
  memset(t->active, 0, (size_t)t->L);
  t->num_active = 0;
  for (int k = 0; k < count; k++) {
    TV_CHECK(active[k] >= 0 && active[k] < t->L, "restored layer %d outside [0, %d)", active[k], t->L);
    t->active[active[k]] = 1;
  }
  for (int l = 0; l < t->L; l++)
    if (t->active[l]) t->active_list[t->num_active++] = l;
  for (int i = 0; i < t->nl; i++)
    if (!t->active[t->l0 + i]) release_grad_buffer(t, i);
}

TrainerMemory trainer_take_memory_peak(Trainer *t) {
  StageMemory sm = stage_memory(t->stage);
  TrainerMemory m = {
      .activations = sm.activations,
      .perturbations = t->g_bytes_peak,
      .receive = pipeline_buffer_bytes(t->pipe),
      .workspace = sm.workspace,
  };
  stage_reset_memory_peak(t->stage);
  t->g_bytes_peak = t->g_bytes;
  return m;
}

size_t trainer_memory_step_bytes(const TrainerMemory *m) {
  return m->activations + m->perturbations + m->receive;
}

size_t trainer_take_activation_peak(Trainer *t) {
  size_t peak = stage_memory(t->stage).activations;
  stage_reset_memory_peak(t->stage);
  return peak;
}

PipelineStats trainer_pipeline_stats(const Trainer *t) { return pipeline_stats(t->pipe); }
