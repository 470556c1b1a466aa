/* A plain supervised LoRA step on one stage holding the whole model, split into
 * micro-batches: used by `demo` and `bench` until the multi-rank trainer replaces it. */
#ifndef TV_SFT_STEP_H
#define TV_SFT_STEP_H

#include <stdint.h>

#include "model.h"
#include "optim.h"

typedef struct {
  Stage *stage;
  PassPlan plan;      /* every layer trains and keeps activations */
  LayerPlan *layers;
  unsigned *train;    /* every target of every layer */
  int micro_B;
} SftStepper;

SftStepper *sft_stepper_create(Stage *stage, int micro_B);
void sft_stepper_destroy(SftStepper *st);

typedef struct {
  double loss;      /* mean CE over the batch's non-ignored targets */
  double grad_norm; /* before clipping */
  double lr;
} SftStepResult;

/* tokens/targets [B, T] host arrays; step t is 0-based. */
SftStepResult sft_step(SftStepper *st, const OptimConfig *oc, const int32_t *tokens,
                       const int32_t *targets, int B, int T, int64_t t, uint64_t seed);

#endif
