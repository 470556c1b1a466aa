/* One pass of a PassPlan over a batch, split into m micro-batches that flow forward through
 * the stages of all ranks and back. The schedule is data: each rank's ordered list of
 * forward / backward operations (warm-up, steady 1F1B, cool-down; or GPipe), run with
 * non-blocking transfers posted ahead, so a rank computes while its neighbours send. */
#ifndef TV_PIPELINE_H
#define TV_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "comm.h"
#include "model.h"
#include "schedule.h"

typedef enum { PIPE_FORWARD = 0, PIPE_BACKWARD = 1 } PipeOpKind;
typedef struct {
  PipeOpKind kind;
  int micro; /* micro-batch index, 0 .. m-1 */
} PipeOp;

/* The operations of stage `rank` of P for m micro-batches, in order, into ops (room for
 * 2m); returns their count. backward = 0: this rank only forwards (m forwards). */
int pipeline_schedule_ops(PipelineSchedule kind, int P, int rank, int m, int backward,
                          PipeOp *ops);
/* Micro-batches stage `rank` holds at once under that schedule: the slots it needs. */
int pipeline_schedule_slots(PipelineSchedule kind, int P, int rank, int m, int backward);

/* What the last stage's final norm, head and loss cost, in decoder layers: the head's
 * V x D multiply-adds per token against a layer's projections (attention scores left out on
 * both sides), for comm_split_by_cost. */
double pipeline_head_cost(const LlamaConfig *mc);

typedef struct Pipeline Pipeline;

/* micro_B rows per micro-batch; the stages of ranks 0 .. P-1 of comm in rank order. On a
 * pipeline communicator of a grid (comm_split_grid), each pass runs this replica's block of
 * the batch's micro-batches (replica_micro_range), at their global rows. */
Pipeline *pipeline_create(Comm *comm, Stage *stage, int micro_B, PipelineSchedule schedule);
void pipeline_destroy(Pipeline *p);

/* Runs the plan over the batch (forward, and backward when `backward`; a rank whose layers
 * all lie below plan->backward_stop only forwards). Layer plans' record_grad_a / perturb
 * point at whole-batch buffers [B*T, D]; the stage uses each micro-batch's rows. Every
 * transfer has completed on return (NCCL: in the backend's stream order, see p2p.h).
 * Returns the batch loss on every rank of every replica: the micro-batches' losses added in
 * micro-batch order (replica_fold_table). */
double pipeline_pass(Pipeline *p, const PassPlan *plan, const Batch *batch, int backward);

/* Called after each backward of this rank with the global micro-batch index, before the next
 * operation: where per-micro-batch sums are taken out (replica_reduce.h). NULL: none. */
typedef void (*PipelineBackwardHook)(void *ctx, int micro);
void pipeline_set_backward_hook(Pipeline *p, PipelineBackwardHook hook, void *ctx);

/* The micro-batches [*m0, *m1) of `batch` (of *m in all) this rank's replica runs. */
void pipeline_micro_range(const Pipeline *p, const Batch *batch, int *m, int *m0, int *m1);
/* Rows (sequence rows x T) [*r0, *r1) of the batch those micro-batches cover. */
void pipeline_row_range(const Pipeline *p, const Batch *batch, size_t *r0, size_t *r1);

/* Micro-batches this rank holds at once when running `plan` over `batch` (its schedule's
 * slots): what its activation records for one micro-batch are multiplied by. */
int pipeline_micro_batches_held(const Pipeline *p, const PassPlan *plan, const Batch *batch);

/* Bytes of the receive buffers this rank holds (allocated on first use). */
size_t pipeline_buffer_bytes(const Pipeline *p);

/* What the passes so far cost this rank: seconds inside stage_forward / stage_backward,
 * seconds waiting for a neighbour (receives and send buffers), bytes sent; compute_cpu_s is
 * the calling thread's CPU seconds inside stage_forward / stage_backward (the work itself,
 * barely moved by other load on the machine when the rank runs one thread). On a GPU the
 * seconds are host seconds (launching; on the NCCL path no transfer makes the host wait). */
typedef struct {
  double compute_s, wait_s, compute_cpu_s;
  size_t bytes_sent;
  int passes;
} PipelineStats;
PipelineStats pipeline_stats(const Pipeline *p);

#endif
