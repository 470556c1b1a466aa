/* Sums across the data-parallel replicas of a grid in one fixed order, so that a global batch
 * gives the same numbers bit for bit whatever D (and whatever P, as before). The unit is the
 * micro-batch: replica r runs a contiguous block of the batch's micro-batches, and every sum
 * over micro-batches -- loss, layer norms, LoRA gradients -- is the left fold 0 + x_0 + x_1
 * + ... in global micro-batch order, which D = 1 follows too. */
#ifndef TV_REPLICA_REDUCE_H
#define TV_REPLICA_REDUCE_H

#include "backend.h"
#include "comm.h"
#include "lora.h"

/* Micro-batches [*m0, *m1) of the m of a batch that replica r of D runs: contiguous blocks,
 * earlier replicas taking one more when D does not divide m (a replica may get none). */
void replica_micro_range(int m, int D, int r, int *m0, int *m1);

/* table: [rows][width] per-micro-batch values (row = global micro-batch index) where every
 * entry is non-zero on at most one rank of the grid (the stage and replica that computed
 * it) and zero elsewhere. Collective over the pipeline communicator `pipe` and its replica
 * peers: afterwards every rank holds out[j] = 0 + table[0][j] + table[1][j] + ... in double,
 * in row order (the table is summed in place: adding zeros is exact, so this is the same
 * on every rank and for every grid). */
void replica_fold_table(Comm *pipe, double *table, int rows, int width, double *out);

/* The LoRA gradients of one pass, folded micro-batch by micro-batch. After each backward the
 * stage's gradients of the trained adapters hold that one micro-batch's contribution
 * (zeroed before); take() moves them out, finish() leaves the fold of the whole batch in
 * the stage's gradients on every replica. Replica 0 folds as it goes; replica r > 0 keeps
 * its micro-batches' gradients until the fold of replicas 0..r-1 arrives (a chain over the
 * replicas, then a broadcast from the last): memory of (its micro-batches) x (trained
 * gradients), time of D - 1 sends and one broadcast of the trained gradients. */
typedef struct GradFold GradFold;

GradFold *grad_fold_create(Comm *pipe, Backend *be);
void grad_fold_destroy(GradFold *f);
/* A pass over micro-batches [m0, m1) that trains `train` (per local layer, as LayerPlan's
 * train_targets) of `lora`; the gradients must be zero. No-op folds (one replica holding the
 * whole batch in one micro-batch, or nothing trained here) cost nothing. */
void grad_fold_begin(GradFold *f, LoraSet *lora, const unsigned *train, int m0, int m1);
/* After the backward of global micro-batch `micro`: moves its gradients out and zeroes them. */
void grad_fold_take(GradFold *f, int micro);
/* Collective over the replica peers: the folded gradients into the stage's gradients. */
void grad_fold_finish(GradFold *f);

#endif
