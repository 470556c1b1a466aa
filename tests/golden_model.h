/* Builds a whole-model CPU stage from a golden file written by tests/ref (golden_core.py,
 * golden_methods.py): config, frozen weights, LoRA A/B, tokens and next-token targets. */
#ifndef TV_GOLDEN_MODEL_H
#define TV_GOLDEN_MODEL_H

#include <stdint.h>

#include "golden.h"
#include "lora.h"
#include "model.h"

/* HF module path of each LoRA target, written out here (not taken from lora.c) so that the
 * name mapping is checked too. Order = LoraTarget. */
extern const char *const golden_target_path[LORA_NUM_TARGETS];

typedef struct {
  LlamaConfig cfg;
  LoraConfig lora; /* dropout 0, all seven targets */
  int B, T;
  const int32_t *tokens; /* [B, T], points into the golden file */
  int32_t *targets;      /* [B, T] next-token targets (HF shift), -1 ignored; caller frees */
  int n_targets;
} GoldenModel;

/* Reads the config scalars, input_ids and labels, creates a stage of all layers with room
 * for one micro-batch of B x T, and loads base weights and LoRA from g. */
Stage *golden_model_build(Backend *be, const Golden *g, const char *file, GoldenModel *out);

/* Copies a golden float32 tensor of the given shape into backend memory. */
void golden_put(Backend *be, float *dst, const Golden *g, const char *name, int ndim, int64_t d0,
                int64_t d1);

#endif
