/* Micro-batch pipeline over MPI ranks (see pipeline.h). Receives are posted as soon as their
 * slot's buffer is free, sends are posted right after the compute that fills them and
 * waited for only before that buffer is written again, so transfers overlap compute. */
#include "pipeline.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "p2p.h"
#include "replica_reduce.h"

int pipeline_schedule_ops(PipelineSchedule kind, int P, int rank, int m, int backward,
                          PipeOp *ops) {
  TV_CHECK(P >= 1 && rank >= 0 && rank < P && m >= 1, "schedule of stage %d of %d, %d micro-batches",
           rank, P, m);
  int n = 0;
  if (!backward || kind == SCHEDULE_GPIPE) {
    for (int i = 0; i < m; i++) ops[n++] = (PipeOp){.kind = PIPE_FORWARD, .micro = i};
    for (int i = 0; i < m && backward; i++) ops[n++] = (PipeOp){.kind = PIPE_BACKWARD, .micro = i};
    return n;
  }
  /* 1F1B: warm-up forwards fill the stages above; each later forward is followed by the
   * oldest backward; the cool-down drains what is left. */
  int warm = P - 1 - rank < m ? P - 1 - rank : m;
  for (int i = 0; i < warm; i++) ops[n++] = (PipeOp){.kind = PIPE_FORWARD, .micro = i};
  for (int i = 0; i < m - warm; i++) {
    ops[n++] = (PipeOp){.kind = PIPE_FORWARD, .micro = warm + i};
    ops[n++] = (PipeOp){.kind = PIPE_BACKWARD, .micro = i};
  }
  for (int i = m - warm; i < m; i++) ops[n++] = (PipeOp){.kind = PIPE_BACKWARD, .micro = i};
  return n;
}

int pipeline_schedule_slots(PipelineSchedule kind, int P, int rank, int m, int backward) {
  if (kind == SCHEDULE_GPIPE && backward) return m;
  return P - rank < m ? P - rank : m;
}

double pipeline_head_cost(const LlamaConfig *mc) {
  double D = mc->hidden_size, F = mc->intermediate_size;
  double HD = (double)mc->num_heads * mc->head_dim, KD = (double)mc->num_kv_heads * mc->head_dim;
  return (double)mc->vocab_size * D / (2 * D * HD + 2 * D * KD + 3 * D * F);
}

struct Pipeline {
  Comm *comm;
  Stage *stage;
  P2p *p2p; /* NULL on one rank */
  int micro_B, rank, size;
  int replica, replicas; /* this pipeline's index among the grid's D, and D */
  PipelineSchedule schedule;
  PipelineBackwardHook hook;
  void *hook_ctx;
  double *micro_loss; /* [max_batch_micro] the last stage's loss of each global micro-batch */
  int max_batch_micro;
  PipeOp *ops;  /* [2 * max_micro] */
  double *loss_sums; /* [max_micro] backend memory, last stage: each micro-batch's sum CE */
  int max_micro;
  /* Per slot: receive buffers [micro_B * T_max, D] and the transfers in flight. */
  float **x_in, **dy;
  P2pRequest *recv_x, *recv_dy, *send_x, *send_dx;
  int slots;
  size_t buffer_bytes;
  PipelineStats stats;
};

Pipeline *pipeline_create(Comm *comm, Stage *stage, int micro_B, PipelineSchedule schedule) {
  TV_CHECK(micro_B >= 1, "micro-batch of %d rows", micro_B);
  TV_CHECK((unsigned)schedule < SCHEDULE_COUNT, "unknown pipeline schedule %d", (int)schedule);
  Pipeline *p = tv_calloc(1, sizeof(Pipeline));
  p->comm = comm;
  p->stage = stage;
  p->micro_B = micro_B;
  p->schedule = schedule;
  p->rank = comm ? comm_rank(comm) : 0;
  p->size = comm ? comm_size(comm) : 1;
  p->replica = comm ? comm_replica(comm) : 0;
  p->replicas = comm ? comm_num_replicas(comm) : 1;
  /* Collective (it duplicates the communicator): every rank creates its pipeline together. */
  if (p->size > 1) p->p2p = p2p_create(comm, stage_backend(stage), 4);
  TV_CHECK(stage_is_first(stage) == (p->rank == 0) && stage_is_last(stage) == (p->rank == p->size - 1),
           "rank %d of %d does not hold pipeline stage %d", p->rank, p->size, p->rank);
  return p;
}

/* The host tables of the per-slot state (not the buffers they point at). */
static void free_slot_tables(Pipeline *p) {
  free(p->x_in);
  free(p->dy);
  free(p->recv_x);
  free(p->recv_dy);
  free(p->send_x);
  free(p->send_dx);
}

static void free_slots(Pipeline *p) {
  Backend *be = stage_backend(p->stage);
  for (int k = 0; k < p->slots; k++) {
    if (p->x_in[k]) be->free(be, p->x_in[k]);
    if (p->dy[k]) be->free(be, p->dy[k]);
  }
  free_slot_tables(p);
}

void pipeline_destroy(Pipeline *p) {
  if (!p) return;
  free_slots(p);
  p2p_destroy(p->p2p);
  free(p->ops);
  if (p->loss_sums) stage_backend(p->stage)->free(stage_backend(p->stage), p->loss_sums);
  free(p->micro_loss);
  free(p);
}

/* Grows the per-slot state to `slots` (and the stage's slots with it). Happens on the first
 * pass of each shape only, never in a step that repeats one. */
static void ensure_slots(Pipeline *p, int slots) {
  if (slots <= p->slots) return;
  Backend *be = stage_backend(p->stage);
  int max_B, max_T;
  stage_max_shape(p->stage, &max_B, &max_T);
  size_t n = (size_t)max_B * max_T * stage_config(p->stage)->hidden_size;
  stage_reserve_slots(p->stage, slots);
  float **x_in = tv_calloc((size_t)slots, sizeof(float *)), **dy = tv_calloc((size_t)slots, sizeof(float *));
  for (int k = 0; k < p->slots; k++) x_in[k] = p->x_in[k], dy[k] = p->dy[k];
  for (int k = p->slots; k < slots; k++) {
    if (!stage_is_first(p->stage)) x_in[k] = be->alloc(be, n * sizeof(float));
    if (!stage_is_last(p->stage)) dy[k] = be->alloc(be, n * sizeof(float));
    p->buffer_bytes += ((x_in[k] != NULL) + (dy[k] != NULL)) * n * sizeof(float);
  }
  free_slot_tables(p);
  p->x_in = x_in;
  p->dy = dy;
  P2pRequest **reqs[] = {&p->recv_x, &p->recv_dy, &p->send_x, &p->send_dx};
  for (int j = 0; j < 4; j++) {
    *reqs[j] = tv_malloc((size_t)slots * sizeof(P2pRequest));
    for (int k = 0; k < slots; k++) (*reqs[j])[k] = P2P_NONE;
  }
  p->slots = slots;
  /* Four transfers per slot at most (receive and send, forward and backward). Ranks grow
   * their slots at different passes, so this must not be collective. */
  if (p->p2p) p2p_reserve(p->p2p, 4 * slots);
}

size_t pipeline_buffer_bytes(const Pipeline *p) { return p->buffer_bytes; }

void pipeline_set_backward_hook(Pipeline *p, PipelineBackwardHook hook, void *ctx) {
  p->hook = hook;
  p->hook_ctx = ctx;
}

void pipeline_micro_range(const Pipeline *p, const Batch *batch, int *m, int *m0, int *m1) {
  *m = (batch->B + p->micro_B - 1) / p->micro_B;
  replica_micro_range(*m, p->replicas, p->replica, m0, m1);
}

void pipeline_row_range(const Pipeline *p, const Batch *batch, size_t *r0, size_t *r1) {
  int m, m0, m1;
  pipeline_micro_range(p, batch, &m, &m0, &m1);
  size_t b0 = (size_t)m0 * p->micro_B, b1 = (size_t)m1 * p->micro_B;
  if (b1 > (size_t)batch->B) b1 = (size_t)batch->B;
  if (b0 > b1) b0 = b1;
  *r0 = b0 * (size_t)batch->T;
  *r1 = b1 * (size_t)batch->T;
}

int pipeline_micro_batches_held(const Pipeline *p, const PassPlan *plan, const Batch *batch) {
  int m, m0, m1;
  pipeline_micro_range(p, batch, &m, &m0, &m1);
  if (m1 == m0) return 1; /* a replica with no micro-batch this pass holds none */
  int runs_backward = plan->backward_stop < stage_end_layer(p->stage);
  return pipeline_schedule_slots(p->schedule, p->size, p->rank, m1 - m0, runs_backward);
}

PipelineStats pipeline_stats(const Pipeline *p) {
  PipelineStats s = p->stats;
  s.bytes_sent = p->p2p ? p2p_bytes_sent(p->p2p) : 0;
  return s;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds of the calling thread: with one thread per rank, the work of a compute
 * section, whatever else the machine runs. */
static double thread_cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void wait_counted(Pipeline *p, P2pRequest *r) {
  if (*r == P2P_NONE) return;
  double t0 = now_s();
  p2p_wait(p->p2p, r);
  p->stats.wait_s += now_s() - t0;
}

/* Tags keep micro-batches apart: a receive posted early matches only its own message. */
static int tag_of(int kind, int micro) { return kind + 2 * micro; }

/* One pass's shape: what this rank does and the micro-batch geometry. */
typedef struct {
  const Batch *batch;
  int m, slots, T, D; /* m: this replica's micro-batches, local index 0 .. m-1 */
  int m0, m_all;      /* global index of local micro-batch 0; micro-batches of the batch */
  int runs_backward, sends_dx;
  int next_x, next_dy; /* the next micro-batch whose receive is not yet posted */
} Pass;

/* Rows of local micro-batch i. */
static size_t micro_rows(const Pipeline *p, const Pass *ps, int i) {
  int b0 = (ps->m0 + i) * p->micro_B, mb = ps->batch->B - b0 < p->micro_B ? ps->batch->B - b0 : p->micro_B;
  return (size_t)mb * ps->T;
}

/* Posts the receives whose buffers are free: micro-batch i uses slot i % slots, free once
 * micro-batch i - slots has been consumed (done = how many have been). */
static void post_receives(Pipeline *p, Pass *ps, int fwd_done, int bwd_done) {
  if (!stage_is_first(p->stage))
    for (; ps->next_x < ps->m && ps->next_x < fwd_done + ps->slots; ps->next_x++) {
      int k = ps->next_x % ps->slots;
      p->recv_x[k] = p2p_post_recv(p->p2p, p->x_in[k], micro_rows(p, ps, ps->next_x) * ps->D,
                                   p->rank - 1, tag_of(P2P_TAG_ACTIVATION, ps->next_x));
    }
  if (!stage_is_last(p->stage) && ps->runs_backward)
    for (; ps->next_dy < ps->m && ps->next_dy < bwd_done + ps->slots; ps->next_dy++) {
      int k = ps->next_dy % ps->slots;
      p->recv_dy[k] = p2p_post_recv(p->p2p, p->dy[k], micro_rows(p, ps, ps->next_dy) * ps->D,
                                    p->rank + 1, tag_of(P2P_TAG_GRADIENT, ps->next_dy));
    }
}

double pipeline_pass(Pipeline *p, const PassPlan *plan, const Batch *batch, int backward) {
  Stage *s = p->stage;
  int first = stage_is_first(s), last = stage_is_last(s);
  TV_CHECK(batch->B >= 1, "a pipeline pass needs a batch of at least one row");
  PassPlan local = *plan;
  if (!backward) local.backward_stop = 1 << 30;
  Pass ps = {.batch = batch, .T = batch->T, .D = stage_config(s)->hidden_size};
  int m1;
  pipeline_micro_range(p, batch, &ps.m_all, &ps.m0, &m1);
  ps.m = m1 - ps.m0;
  /* MPI guarantees tags up to 32767 only; tag_of uses 2 per micro-batch. */
  if (ps.m > 16383) tv_die("%d micro-batches in one pass: at most 16383 fit the MPI tags", ps.m);
  ps.runs_backward = local.backward_stop < stage_end_layer(s);
  ps.sends_dx = ps.runs_backward && !first && local.backward_stop < stage_first_layer(s);
  ps.slots = pipeline_schedule_slots(p->schedule, p->size, p->rank, ps.m, ps.runs_backward);
  ensure_slots(p, ps.slots);
  Backend *be = stage_backend(s);
  if (ps.m_all > p->max_batch_micro) {
    free(p->micro_loss);
    p->micro_loss = tv_malloc((size_t)ps.m_all * sizeof(double));
    p->max_batch_micro = ps.m_all;
  }
  for (int i = 0; i < ps.m_all; i++) p->micro_loss[i] = 0;
  if (ps.m > p->max_micro) {
    free(p->ops);
    p->ops = tv_malloc((size_t)2 * ps.m * sizeof(PipeOp));
    if (p->loss_sums) be->free(be, p->loss_sums);
    p->loss_sums = last ? be->alloc(be, (size_t)ps.m * sizeof(double)) : NULL;
    p->max_micro = ps.m;
  }
  /* The losses stay on the device until the pass ends: one host sync, not one per micro. */
  if (last && ps.m) be->zero(be, p->loss_sums, (size_t)ps.m * sizeof(double));
  /* A replica given no micro-batch (fewer micro-batches than replicas) only joins the sums. */
  int n_ops = ps.m == 0 ? 0
                        : pipeline_schedule_ops(p->schedule, p->size, p->rank, ps.m,
                                                ps.runs_backward, p->ops);
  float scale = batch->n_targets > 0 ? 1.0f / (float)batch->n_targets : 0.0f;
  int fwd_done = 0, bwd_done = 0;
  if (p->p2p) post_receives(p, &ps, 0, 0);
  for (int o = 0; o < n_ops; o++) {
    const PipeOp *op = &p->ops[o];
    int k = op->micro % ps.slots;
    int global = ps.m0 + op->micro;
    size_t rows = micro_rows(p, &ps, op->micro), row0 = (size_t)global * p->micro_B * ps.T;
    if (op->kind == PIPE_FORWARD) {
      if (!first) wait_counted(p, &p->recv_x[k]);
      if (!last) wait_counted(p, &p->send_x[k]); /* the slot's x_out is still being sent */
      MicroBatch micro = {.tokens = batch->tokens + row0,
                          .x_in = first ? NULL : p->x_in[k],
                          .targets = batch->targets + row0,
                          .B = (int)(rows / ps.T),
                          .T = ps.T,
                          .row_offset = (int)row0,
                          .slot = k,
                          .loss_scale = scale,
                          .loss_sum = last ? p->loss_sums + op->micro : NULL};
      float *x_out = NULL;
      double t0 = now_s(), c0 = thread_cpu_s();
      stage_forward(s, &local, &micro, &x_out);
      p->stats.compute_s += now_s() - t0;
      p->stats.compute_cpu_s += thread_cpu_s() - c0;
      fwd_done++;
      if (!last) p->send_x[k] = p2p_post_send(p->p2p, x_out, rows * ps.D, p->rank + 1,
                                              tag_of(P2P_TAG_ACTIVATION, op->micro));
    } else {
      if (!last) wait_counted(p, &p->recv_dy[k]);
      if (ps.sends_dx) wait_counted(p, &p->send_dx[k]);
      float *dx = NULL;
      double t0 = now_s(), c0 = thread_cpu_s();
      stage_backward(s, &local, k, last ? NULL : p->dy[k], &dx);
      p->stats.compute_s += now_s() - t0;
      p->stats.compute_cpu_s += thread_cpu_s() - c0;
      bwd_done++;
      if (p->hook) p->hook(p->hook_ctx, global);
      if (ps.sends_dx) {
        TV_CHECK(dx, "stage %d produced no input gradient for the stage below", p->rank);
        p->send_dx[k] = p2p_post_send(p->p2p, dx, rows * ps.D, p->rank - 1,
                                      tag_of(P2P_TAG_GRADIENT, op->micro));
      }
    }
    if (p->p2p) post_receives(p, &ps, fwd_done, bwd_done);
  }
  /* Drain: the pass ends with every buffer free and nothing in flight. */
  for (int k = 0; k < ps.slots && p->p2p; k++) {
    wait_counted(p, &p->send_x[k]);
    wait_counted(p, &p->send_dx[k]);
    TV_CHECK(p->recv_x[k] == P2P_NONE && p->recv_dy[k] == P2P_NONE,
             "rank %d: a receive of slot %d was never consumed", p->rank, k);
  }
  p->stats.passes++;
  /* The loss lives on the last stage of each replica: its micro-batches' sums come back
   * from the device once, scaled, into their global entries (the others' stay 0); every
   * rank reports the batch's. */
  if (last && ps.m) {
    double *mine = p->micro_loss + ps.m0;
    be->to_host(be, mine, p->loss_sums, (size_t)ps.m * sizeof(double));
    for (int i = 0; i < ps.m; i++) mine[i] *= scale;
  }
  double total;
  replica_fold_table(p->comm, p->micro_loss, ps.m_all, 1, &total);
  return total;
}
