/* One optimizer step of sft / vaccine / tvaccine across the ranks of a pipeline:
 * probe -> allreduce norms -> sample -> pass 1 -> allreduce N -> pass 2 -> clip -> AdamW
 * (SPEC sections 4-7). Every rank runs the same calls; each works on its own layers. */
#ifndef TV_TRAINER_H
#define TV_TRAINER_H

#include <stdint.h>

#include "comm.h"
#include "optim.h"
#include "pipeline.h"
#include "rng.h"
#include "vaccine.h"

typedef struct {
  Method method;
  FreezeScope freeze_scope;
  double rho;     /* perturbation intensity */
  int S, J, K;    /* layers activated, resample interval, probe interval */
  const int *fixed_layers; /* a fixed T-Vaccine set that bypasses probing and sampling */
  int num_fixed;
  OptimConfig optim;
  uint64_t seed;
  /* What frozen layers in the backward range keep (see ActivationPolicy). auto recomputes as
   * many as the backward the pass skips on this rank pays for (never slower than Vaccine),
   * and, when activation_budget is nonzero, more until this stage's layer records for the
   * micro-batches it holds at once fit that many bytes (the last stage's final-norm input
   * comes on top); 0 = no budget. */
  ActivationPolicy activations;
  size_t activation_budget;
  PipelineSchedule schedule; /* across ranks; 0 = 1F1B */
  /* Full-parameter training (pretraining a base model): every base weight trains with the
   * same schedule, clipping and AdamW, LoRA stays frozen. Needs method sft; a model with
   * tied embeddings must then sit on one rank (its embedding would live on two stages). */
  int train_base;
} TrainerConfig;

typedef struct {
  double loss;       /* of the pass whose gradients were applied */
  double loss_pass1; /* vaccine / tvaccine: the unperturbed pass */
  double grad_norm;  /* global norm of the trainable gradients before clipping */
  double perturb_norm; /* N of the recorded g_l (vaccine / tvaccine) */
  double lr;
  int probed, resampled;
  int nonfinite; /* the loss or the gradient norm was NaN or inf: no optimizer update was made */
} StepReport;

typedef struct Trainer Trainer;

Trainer *trainer_create(Comm *comm, Stage *stage, const TrainerConfig *cfg, int micro_B);
void trainer_destroy(Trainer *t);

/* Whether step t starts with a probe pass (then trainer_step needs a probe batch). */
int trainer_needs_probe(const Trainer *t, int64_t step);

/* One optimizer step at 0-based step `step` on `batch`; `probe` is the harmful probe batch
 * when trainer_needs_probe(step), else ignored. */
void trainer_step(Trainer *t, int64_t step, const Batch *batch, const Batch *probe,
                  StepReport *report);

/* State a checkpoint saves and restores. */
const double *trainer_layer_probs(const Trainer *t);  /* [L] */
const int *trainer_active_layers(const Trainer *t, int *count); /* current A, ascending */
Rng *trainer_sampling_rng(Trainer *t);

/* n_l of the last probe (zeros before the first), [L] on every rank. */
const double *trainer_probe_norms(const Trainer *t);
/* e_l = rho g_l / (N + 1e-7) of the last step for a local layer of A ([rows, D] backend
 * memory, rows of that step's batch; on a data x pipeline grid only this replica's rows are
 * filled), else NULL. */
const float *trainer_perturbation(const Trainer *t, int layer);
void trainer_restore(Trainer *t, const double *probs, const int *active, int count);

/* Bytes this rank's trainer and stage hold for steps, peaks since the last
 * trainer_take_memory_peak (which resets them). */
typedef struct {
  size_t activations;   /* kept for backward by the stage (every micro-batch in flight) */
  size_t perturbations; /* dLoss/da_l = e_l buffers of the local layers of A */
  size_t receive;       /* pipeline receive buffers (stages after the first) */
  size_t workspace;     /* the stage's fixed working buffers, the same for every method */
} TrainerMemory;
TrainerMemory trainer_take_memory_peak(Trainer *t);
/* What a method adds per step: activations + perturbations + receive buffers. */
size_t trainer_memory_step_bytes(const TrainerMemory *m);

/* What this rank's pipeline passes cost so far (compute, waits, bytes sent). */
PipelineStats trainer_pipeline_stats(const Trainer *t);

/* Peak activation bytes of the local stage since the last call (and reset). */
size_t trainer_take_activation_peak(Trainer *t);

#endif
