/* A counting wrapper of the CPU backend (see counted_backend.h). */
#include "counted_backend.h"

#include <stdlib.h>

#include "check.h"

static CountedBackend *counted(Backend *be) { return (CountedBackend *)be; }

static void counted_to_host(Backend *be, void *dst, const void *src, size_t bytes) {
  counted(be)->to_host_bytes += bytes;
  counted(be)->to_host_calls++;
  counted(be)->cpu->to_host(counted(be)->cpu, dst, src, bytes);
}

static void counted_from_host(Backend *be, void *dst, const void *src, size_t bytes) {
  counted(be)->from_host_bytes += bytes;
  counted(be)->from_host_calls++;
  counted(be)->cpu->from_host(counted(be)->cpu, dst, src, bytes);
}

static void counted_sync(Backend *be) {
  counted(be)->sync_calls++;
  counted(be)->cpu->sync(counted(be)->cpu);
}

static double counted_sum_squares(Backend *be, size_t n, const float *x) {
  counted(be)->host_reductions++;
  return counted(be)->cpu->sum_squares(counted(be)->cpu, n, x);
}

static double counted_cross_entropy(Backend *be, const float *logits, float *dlogits,
                                    const int32_t *targets, int N, int V, float scale) {
  counted(be)->host_reductions++;
  return counted(be)->cpu->cross_entropy(counted(be)->cpu, logits, dlogits, targets, N, V, scale);
}

static void counted_destroy(Backend *be) {
  backend_destroy(counted(be)->cpu);
  free(be);
}

CountedBackend *counted_backend_create(const char *name) {
  CountedBackend *c = tv_calloc(1, sizeof(CountedBackend));
  c->cpu = backend_cpu_create(1);
  c->be = *c->cpu; /* the same kernels and context: they reach their state through be->ctx */
  c->be.name = name;
  c->be.to_host = counted_to_host;
  c->be.from_host = counted_from_host;
  c->be.sync = counted_sync;
  c->be.sum_squares = counted_sum_squares;
  c->be.cross_entropy = counted_cross_entropy;
  c->be.destroy = counted_destroy;
  return c;
}

size_t counted_backend_reads(const CountedBackend *c) {
  return c->to_host_calls + c->sync_calls + c->host_reductions;
}
