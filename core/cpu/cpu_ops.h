/* Internal to the CPU backend: the kernels each file of cpu/ contributes to the table,
 * and the per-thread scratch the backend context keeps so kernels never malloc. */
#ifndef TV_CPU_OPS_H
#define TV_CPU_OPS_H

#include "../backend.h"

typedef struct {
  int threads;
  float *scratch;          /* [threads * scratch_per_thread] */
  size_t scratch_per_thread;
  double *partials;        /* [CPU_REDUCE_CHUNKS] for order-fixed reductions */
} CpuContext;

/* Reductions split the input into this many fixed chunks whatever the thread count, so
 * sums are bit-identical for 1 or 64 threads. */
#define CPU_REDUCE_CHUNKS 256

/* Scratch of at least `floats` for the calling thread (grows between kernels, never
 * inside a parallel region: call cpu_reserve_scratch first). */
void cpu_reserve_scratch(Backend *be, size_t floats_per_thread);
float *cpu_thread_scratch(Backend *be);

void cpu_install_dense(Backend *be);
void cpu_install_norm(Backend *be);
void cpu_install_rope(Backend *be);
void cpu_install_attention(Backend *be);
void cpu_install_mlp(Backend *be);
void cpu_install_loss(Backend *be);
void cpu_install_adamw(Backend *be);

#endif
