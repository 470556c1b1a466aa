/* The CPU reference backend: host memory, OpenMP threads, OpenBLAS for GEMMs.
 * Kernels live one op family per file; this file wires the table together. */
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
  cpu_context_destroy(be->ctx);
  free(be);
}

Backend *backend_cpu_create(int threads) {
  Backend *be = tv_calloc(1, sizeof(Backend));
  be->name = "cpu";
  be->ctx = cpu_context_create(threads);
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
