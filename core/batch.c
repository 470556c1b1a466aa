/* Host memory of a Batch (see batch.h). */
#include "batch.h"

#include <stdlib.h>

#include "check.h"

Batch batch_alloc(int max_B, int max_T) {
  TV_CHECK(max_B >= 1 && max_T >= 1, "batch_alloc(%d, %d)", max_B, max_T);
  size_t cells = (size_t)max_B * (size_t)max_T;
  return (Batch){.tokens = tv_malloc(cells * sizeof(int32_t)),
                 .targets = tv_malloc(cells * sizeof(int32_t)),
                 .max_B = max_B,
                 .max_T = max_T};
}

void batch_free(Batch *b) {
  free(b->tokens);
  free(b->targets);
  *b = (Batch){0};
}
