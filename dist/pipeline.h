/* One pass of a PassPlan over a batch, split into micro-batches that flow forward through
 * the stages of all ranks and back. Schedule: one micro-batch in flight at a time (each
 * stage keeps one activation set); with one rank this is a loop over micro-batches. */
#ifndef TV_PIPELINE_H
#define TV_PIPELINE_H

#include <stdint.h>

#include "batch.h"
#include "comm.h"
#include "model.h"

typedef struct Pipeline Pipeline;

Pipeline *pipeline_create(Comm *comm, Stage *stage, int micro_B);
void pipeline_destroy(Pipeline *p);

/* Runs the plan over the batch (forward, and backward when `backward`). Layer plans'
 * record_grad_a / perturb point at whole-batch buffers [B*T, D]; each micro-batch uses its
 * rows. Returns the batch loss on every rank. */
/* Bytes of the receive buffers this rank holds (allocated on first use). */
size_t pipeline_buffer_bytes(const Pipeline *p);

double pipeline_pass(Pipeline *p, const PassPlan *plan, const Batch *batch, int backward);

#endif
