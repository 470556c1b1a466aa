/* One optimizer step of sft / vaccine / T-Vaccine on a single stage that holds the whole
 * model, with core alone (no MPI): what the GPU tests and the GPU benchmark drive, on a
 * machine that has no MPI. It follows dist/trainer.c's step for one rank and one
 * micro-batch, with a probe and a fresh sample every step (K = J = 1). */
#ifndef TV_CORE_STEP_H
#define TV_CORE_STEP_H

#include <stdint.h>

#include "model.h"
#include "optim.h"
#include "vaccine.h"

typedef struct {
  Method method;
  int S;      /* T-Vaccine: layers sampled per step */
  double rho; /* perturbation intensity */
  ActivationPolicy activations; /* recompute or keep (auto is not resolved here) */
  FreezeScope freeze_scope;
  OptimConfig optim;
  uint64_t seed;
} CoreStepConfig;

typedef struct CoreTrainer CoreTrainer;

CoreTrainer *core_trainer_create(Stage *stage, const CoreStepConfig *cfg);
void core_trainer_destroy(CoreTrainer *t);

/* One step: the T-Vaccine probe on `probe` (ignored by sft and vaccine), pass 1 recording
 * dLoss/da_l (vaccine, tvaccine), pass 2 training with e_l in place, clipping, AdamW.
 * Returns pass 2's loss. */
double core_trainer_step(CoreTrainer *t, int64_t step, const MicroBatch *batch,
                         const MicroBatch *probe);

/* The layers the last step sampled (T-Vaccine), ascending; count in *n. */
const int *core_trainer_active(const CoreTrainer *t, int *n);

#endif
