/* A batch of token rows: what io fills from a dataset and the trainer runs a step on. */
#ifndef TV_BATCH_H
#define TV_BATCH_H

#include <stddef.h>
#include <stdint.h>

/* Tokens and next-token targets, row-major [B, T] with this batch's B and T. */
typedef struct {
  int32_t *tokens;  /* [B, T] right-padded with the pad id */
  int32_t *targets; /* [B, T] label of token t + 1; < 0 for prompt, padding, last position */
  int B, T;
  int max_B, max_T; /* capacity (batch_alloc); 0 for a view of caller memory */
  size_t n_targets; /* targets >= 0 in the whole batch: the loss is their mean */
} Batch;

/* Host memory for up to max_B rows of max_T tokens (B = T = 0 until filled). */
Batch batch_alloc(int max_B, int max_T);
void batch_free(Batch *b);

#endif
