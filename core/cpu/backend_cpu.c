/* The CPU reference backend: host memory, OpenMP threads, OpenBLAS for GEMMs.
 * Kernels live one op family per file; this file wires the table together. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "cpu_ops.h"

static void *cpu_alloc(Backend *be, size_t bytes) {
  (void)be;
  size_t rounded = (bytes + 63) / 64 * 64;
  void *p = aligned_alloc(64, rounded ? rounded : 64);
  if (!p) tv_die("out of host memory allocating %zu bytes", bytes);
  memset(p, 0, rounded ? rounded : 64);
  return p;
}

static void cpu_free(Backend *be, void *p) {
  (void)be;
  free(p);
}

static void cpu_copy(Backend *be, void *dst, const void *src, size_t bytes) {
  (void)be;
  if (bytes) memmove(dst, src, bytes);
}

static void cpu_zero(Backend *be, void *p, size_t bytes) {
  (void)be;
  if (bytes) memset(p, 0, bytes);
}

static void cpu_sync(Backend *be) { (void)be; }

static void cpu_destroy(Backend *be) {
  CpuContext *c = be->ctx;
  free(c->scratch);
  free(c->partials);
  free(c);
  free(be);
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

Backend *backend_cpu_create(int threads) {
  Backend *be = tv_calloc(1, sizeof(Backend));
  CpuContext *c = tv_calloc(1, sizeof(CpuContext));
  if (threads > 0) omp_set_num_threads(threads);
  c->threads = omp_get_max_threads();
  c->partials = tv_calloc(CPU_REDUCE_CHUNKS, sizeof(double));
  be->name = "cpu";
  be->ctx = c;
  be->alloc = cpu_alloc;
  be->free = cpu_free;
  be->copy = cpu_copy;
  be->to_host = cpu_copy;
  be->from_host = cpu_copy;
  be->zero = cpu_zero;
  be->sync = cpu_sync;
  be->destroy = cpu_destroy;
  cpu_install_dense(be);
  cpu_install_norm(be);
  cpu_install_rope(be);
  cpu_install_attention(be);
  cpu_install_attention_cached(be);
  cpu_install_mlp(be);
  cpu_install_loss(be);
  cpu_install_adamw(be);
  return be;
}
