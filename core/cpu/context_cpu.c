/* The CPU backend's context: its thread count and the per-thread scratch and reduction
 * partials that kernels use instead of allocating. */
#include <omp.h>
#include <stdlib.h>

#include "../check.h"
#include "cpu_ops.h"

CpuContext *cpu_context_create(int threads) {
  CpuContext *c = tv_calloc(1, sizeof(CpuContext));
  if (threads > 0) omp_set_num_threads(threads);
  c->threads = omp_get_max_threads();
  c->partials = tv_calloc(CPU_REDUCE_CHUNKS, sizeof(double));
  return c;
}

void cpu_context_destroy(CpuContext *c) {
  free(c->scratch);
  free(c->partials);
  free(c->widened);
  free(c);
}

void cpu_reserve_scratch(Backend *be, size_t floats_per_thread) {
  CpuContext *c = be->ctx;
  if (floats_per_thread <= c->scratch_per_thread) return;
  free(c->scratch);
  size_t per = (floats_per_thread + 15) / 16 * 16;
  c->scratch = aligned_alloc(64, per * (size_t)c->threads * sizeof(float));
  if (!c->scratch) tv_die("out of host memory for %zu floats of kernel scratch", per);
  c->scratch_per_thread = per;
}

float *cpu_thread_scratch(Backend *be) {
  CpuContext *c = be->ctx;
  int t = omp_get_thread_num();
  TV_CHECK(t < c->threads, "thread %d outside the %d the backend was made for", t, c->threads);
  return c->scratch + (size_t)t * c->scratch_per_thread;
}
