/* Micro-batch pipeline over MPI ranks (see pipeline.h). */
#include "pipeline.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "p2p.h"

struct Pipeline {
  Comm *comm;
  Stage *stage;
  int micro_B;
  float *x_in, *dy; /* receive buffers [micro_B * T_max, D] on non-edge stages */
  size_t buffer_bytes;
  LayerPlan *shifted; /* per-micro-batch copy of the layer plans */
};

Pipeline *pipeline_create(Comm *comm, Stage *stage, int micro_B) {
  Pipeline *p = tv_calloc(1, sizeof(Pipeline));
  p->comm = comm;
  p->stage = stage;
  p->micro_B = micro_B;
  int nl = stage_end_layer(stage) - stage_first_layer(stage);
  p->shifted = tv_calloc((size_t)nl, sizeof(LayerPlan));
  return p;
}

void pipeline_destroy(Pipeline *p) {
  if (!p) return;
  Backend *be = stage_backend(p->stage);
  if (p->x_in) be->free(be, p->x_in);
  if (p->dy) be->free(be, p->dy);
  free(p->shifted);
  free(p);
}

/* Receive buffers are sized once for the largest micro-batch the stage accepts. */
static float *recv_buffer(Pipeline *p, float **slot) {
  if (!*slot) {
    Backend *be = stage_backend(p->stage);
    int max_B, max_T;
    stage_max_shape(p->stage, &max_B, &max_T);
    size_t n = (size_t)max_B * max_T * stage_config(p->stage)->hidden_size;
    *slot = be->alloc(be, n * sizeof(float));
    p->buffer_bytes += n * sizeof(float);
  }
  return *slot;
}

size_t pipeline_buffer_bytes(const Pipeline *p) { return p->buffer_bytes; }

double pipeline_pass(Pipeline *p, const PassPlan *plan, const Batch *batch, int backward) {
  Stage *s = p->stage;
  const LlamaConfig *c = stage_config(s);
  int rank = comm_rank(p->comm), first = stage_is_first(s), last = stage_is_last(s);
  int l0 = stage_first_layer(s), nl = stage_end_layer(s) - l0, D = c->hidden_size, T = batch->T;
  float scale = batch->n_targets > 0 ? 1.0f / (float)batch->n_targets : 0.0f;
  PassPlan local = *plan;
  local.layers = p->shifted;
  if (!backward) local.backward_stop = 1 << 30;
  int runs_backward = backward && local.backward_stop < stage_end_layer(s);
  int sends_dx = runs_backward && !first && local.backward_stop < l0;
  double loss = 0;
  for (int b0 = 0; b0 < batch->B; b0 += p->micro_B) {
    int mb = batch->B - b0 < p->micro_B ? batch->B - b0 : p->micro_B;
    size_t rows = (size_t)mb * T, row0 = (size_t)b0 * T;
    for (int i = 0; i < nl; i++) {
      p->shifted[i] = plan->layers[i];
      if (p->shifted[i].record_grad_a) p->shifted[i].record_grad_a += row0 * D;
      if (p->shifted[i].perturb) p->shifted[i].perturb += row0 * D;
    }
    const float *x_in = NULL;
    if (!first) {
      float *buf = recv_buffer(p, &p->x_in);
      p2p_recv(p->comm, buf, rows * D, rank - 1, P2P_TAG_ACTIVATION);
      x_in = buf;
    }
    float *x_out = NULL;
    MicroBatch micro = {.tokens = batch->tokens + row0,
                        .x_in = x_in,
                        .targets = batch->targets + row0,
                        .B = mb,
                        .T = T,
                        .row_offset = (int)row0,
                        .loss_scale = scale};
    loss += stage_forward(s, &local, &micro, &x_out);
    if (!last) p2p_send(p->comm, x_out, rows * D, rank + 1, P2P_TAG_ACTIVATION);
    if (!runs_backward) continue;
    const float *dy = NULL;
    if (!last) {
      float *buf = recv_buffer(p, &p->dy);
      p2p_recv(p->comm, buf, rows * D, rank + 1, P2P_TAG_GRADIENT);
      dy = buf;
    }
    float *dx = NULL;
    stage_backward(s, &local, dy, &dx);
    if (sends_dx) {
      TV_CHECK(dx, "stage %d produced no input gradient for the stage below", rank);
      p2p_send(p->comm, dx, rows * D, rank - 1, P2P_TAG_GRADIENT);
    }
  }
  /* The loss lives on the last stage; every rank reports it. */
  double total = last ? loss : 0.0;
  comm_allreduce_sum(p->comm, &total, 1);
  return total;
}
