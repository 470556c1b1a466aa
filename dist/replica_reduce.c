/* Fixed-order sums across data-parallel replicas (see replica_reduce.h). */
#include "replica_reduce.h"

#include <stdlib.h>

#include "check.h"
#include "comm_internal.h"

void replica_micro_range(int m, int D, int r, int *m0, int *m1) {
  TV_CHECK(D >= 1 && r >= 0 && r < D && m >= 0, "replica %d of %d, %d micro-batches", r, D, m);
  int base = m / D, extra = m % D;
  *m0 = r * base + (r < extra ? r : extra);
  *m1 = *m0 + base + (r < extra);
}

void replica_fold_table(Comm *pipe, double *table, int rows, int width, double *out) {
  TV_CHECK((size_t)rows * (size_t)width <= (size_t)2147483647, "fold table of %d x %d", rows, width);
  if (pipe) {
    comm_allreduce_sum(pipe, table, rows * width);
    Comm *peers = comm_replica_peers(pipe);
    if (peers) comm_allreduce_sum(peers, table, rows * width);
  }
  for (int j = 0; j < width; j++) {
    double sum = 0;
    for (int i = 0; i < rows; i++) sum += table[(size_t)i * width + j];
    out[j] = sum;
  }
}

typedef struct {
  float *grad; /* the stage's gradient of one trained adapter (dA then dB), backend memory */
  size_t n;
} Span;

struct GradFold {
  Comm *pipe;
  Backend *be;
  int D, replica;
  Span *spans;
  int n_spans, max_spans;
  size_t total;             /* floats of the trained gradients (sum of the spans) */
  float *acc;               /* [total] backend: the fold so far */
  float *kept;              /* [kept_micro * total] backend: replica > 0's micro-batches */
  size_t acc_cap, kept_cap; /* floats allocated */
  float *host;              /* [total] the fold in transit between replicas */
  size_t host_cap;
  int m0, m1, active;
};

GradFold *grad_fold_create(Comm *pipe, Backend *be) {
  GradFold *f = tv_calloc(1, sizeof(GradFold));
  f->pipe = pipe;
  f->be = be;
  f->D = pipe ? comm_num_replicas(pipe) : 1;
  f->replica = pipe ? comm_replica(pipe) : 0;
  return f;
}

void grad_fold_destroy(GradFold *f) {
  if (!f) return;
  if (f->acc) f->be->free(f->be, f->acc);
  if (f->kept) f->be->free(f->be, f->kept);
  free(f->host);
  free(f->spans);
  free(f);
}

/* Backend buffer of at least n floats, grown (never shrunk) only when a pass needs more. */
static float *grown(Backend *be, float *buf, size_t *cap, size_t n) {
  if (n <= *cap) return buf;
  if (buf) be->free(be, buf);
  *cap = n;
  return be->alloc(be, n * sizeof(float));
}

void grad_fold_begin(GradFold *f, LoraSet *lora, const unsigned *train, int m0, int m1) {
  int nl = lora->l1 - lora->l0;
  if (f->max_spans < nl * LORA_NUM_TARGETS) {
    free(f->spans);
    f->max_spans = nl * LORA_NUM_TARGETS;
    f->spans = tv_malloc((size_t)f->max_spans * sizeof(Span));
  }
  f->n_spans = 0;
  f->total = 0;
  for (int i = 0; i < nl; i++)
    for (int t = 0; t < LORA_NUM_TARGETS; t++) {
      LoraAdapter *a = &lora->layers[i][t];
      if (!a->in || !lora_is_trained(train, i, t)) continue;
      f->spans[f->n_spans++] = (Span){a->dA, lora_adapter_numel(lora, a)};
      f->total += lora_adapter_numel(lora, a);
    }
  f->m0 = m0, f->m1 = m1;
  /* One replica with one micro-batch: the stage's gradients are already 0 + g_0. Every
   * replica of a stage trains the same adapters, so they all agree on skipping. */
  f->active = f->total > 0 && (f->D > 1 || m1 - m0 > 1);
  if (!f->active) return;
  f->acc = grown(f->be, f->acc, &f->acc_cap, f->total);
  f->be->zero(f->be, f->acc, f->total * sizeof(float));
  if (f->replica > 0)
    f->kept = grown(f->be, f->kept, &f->kept_cap, (size_t)(m1 - m0) * f->total);
}

void grad_fold_take(GradFold *f, int micro) {
  if (!f->active) return;
  TV_CHECK(micro >= f->m0 && micro < f->m1, "micro-batch %d outside this replica's [%d, %d)",
           micro, f->m0, f->m1);
  Backend *be = f->be;
  float *dst = f->replica == 0 ? f->acc : f->kept + (size_t)(micro - f->m0) * f->total;
  for (int s = 0; s < f->n_spans; s++) {
    const Span *sp = &f->spans[s];
    if (f->replica == 0)
      be->axpy(be, sp->n, 1.0f, sp->grad, dst);
    else
      be->copy(be, dst, sp->grad, sp->n * sizeof(float));
    be->zero(be, sp->grad, sp->n * sizeof(float));
    dst += sp->n;
  }
}

/* The fold through host memory (MPI reads host memory only). */
static float *host_buffer(GradFold *f) {
  if (f->host_cap < f->total) {
    free(f->host);
    f->host = tv_malloc(f->total * sizeof(float));
    f->host_cap = f->total;
  }
  return f->host;
}

/* Replica r continues the fold of replicas 0..r-1 with its own micro-batches, in order, and
 * hands it on; the last replica's fold is the batch's, broadcast to all. */
static void chain_over_replicas(GradFold *f) {
  Backend *be = f->be;
  Comm *peers = comm_replica_peers(f->pipe);
  TV_CHECK(peers, "a fold over %d replicas without replica peers", f->D);
  TV_CHECK(f->total <= (size_t)2147483647, "%zu trained gradients exceed one MPI message",
           f->total);
  int n = (int)f->total, r = f->replica;
  float *host = host_buffer(f);
  size_t bytes = f->total * sizeof(float);
  if (r > 0) {
    MPI_CHECK(MPI_Recv(host, n, MPI_FLOAT, r - 1, 0, peers->world, MPI_STATUS_IGNORE));
    be->from_host(be, f->acc, host, bytes);
    for (int k = 0; k < f->m1 - f->m0; k++)
      be->axpy(be, f->total, 1.0f, f->kept + (size_t)k * f->total, f->acc);
  }
  be->to_host(be, host, f->acc, bytes);
  if (r < f->D - 1) MPI_CHECK(MPI_Send(host, n, MPI_FLOAT, r + 1, 0, peers->world));
  MPI_CHECK(MPI_Bcast(host, n, MPI_FLOAT, f->D - 1, peers->world));
  if (r != f->D - 1) be->from_host(be, f->acc, host, bytes);
}

void grad_fold_finish(GradFold *f) {
  if (!f->active) return;
  if (f->D > 1) chain_over_replicas(f);
  const float *src = f->acc;
  for (int s = 0; s < f->n_spans; s++) {
    f->be->copy(f->be, f->spans[s].grad, src, f->spans[s].n * sizeof(float));
    src += f->spans[s].n;
  }
  f->active = 0;
}
