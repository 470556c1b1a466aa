/* Internal to the CPU backend: the kernels each file of cpu/ contributes to the table,
 * and the per-thread scratch the backend context keeps so kernels never malloc. */
#ifndef TV_CPU_OPS_H
#define TV_CPU_OPS_H

#include <stdint.h>
#include <string.h>

#include "../backend.h"

typedef struct {
  int threads;
  float *scratch;          /* [threads * scratch_per_thread] */
  size_t scratch_per_thread;
  double *partials;        /* [CPU_REDUCE_CHUNKS] for order-fixed reductions */
  float *widened;          /* a tile of a bf16 weight widened to f32 (grown, never shrunk) */
  size_t widened_cap;      /* floats */
} CpuContext;

/* Reductions split the input into this many fixed chunks whatever the thread count, so
 * sums are bit-identical for 1 or 64 threads. */
#define CPU_REDUCE_CHUNKS 256

/* A bf16 weight GEMM widens at most this many floats of the weight at a time (32 MiB), but
 * never fewer than CPU_WIDEN_MIN_COLUMNS output columns per sgemm: sgemm re-packs A for
 * every call, so narrow tiles cost more than the widening (measured: 16-column tiles of a
 * 32000 x 4096 head ran 7x slower than f32). */
#define CPU_WIDEN_TILE_FLOATS ((size_t)1 << 23)
#define CPU_WIDEN_MIN_COLUMNS 256

/* context_cpu.c: threads <= 0 keeps OpenMP's default thread count. */
CpuContext *cpu_context_create(int threads);
void cpu_context_destroy(CpuContext *c);

/* Scratch of at least `floats` for the calling thread (grows between kernels, never
 * inside a parallel region: call cpu_reserve_scratch first). */
void cpu_reserve_scratch(Backend *be, size_t floats_per_thread);
float *cpu_thread_scratch(Backend *be);

/* exp(x) for float x, vectorisable (no libm call) so softmax, cross-entropy and SiLU loops
 * compile to SIMD code. Cody-Waite reduction x = n ln2 + r and a degree-6 polynomial for
 * e^r (the Cephes single-precision coefficients); relative error a few ulp, inputs clamped to
 * the finite float range so e^x never overflows to inf. */
static inline float cpu_expf(float x_in) {
  /* Written so that NaN fails both comparisons and lands on the lower bound: converting NaN
   * to an integer would be undefined behaviour. The NaN itself is returned at the end. */
  float x = x_in > -87.3f ? x_in : -87.3f;
  x = x < 88.7f ? x : 88.7f;
  /* n = round(x / ln 2), via truncation of a positive number (x / ln 2 > -127 here) */
  int32_t n = (int32_t)(x * 1.44269504088896341f + 128.5f) - 128;
  float nf = (float)n;
  float r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (n + 127) << 23; /* 2^n as a float */
  float two_n;
  memcpy(&two_n, &bits, sizeof two_n);
  return x_in == x_in ? p * two_n : x_in;
}

/* Row reductions in 16 fixed lanes: the compiler turns the lanes into SIMD registers, and
 * the summation order depends only on n, never on the machine's vector width. */
#define CPU_LANES 16

static inline float cpu_row_max(const float *x, int n) {
  float lane[CPU_LANES];
  for (int j = 0; j < CPU_LANES; j++) lane[j] = -3.402823466e38f;
  int i = 0;
  for (; i + CPU_LANES <= n; i += CPU_LANES)
    for (int j = 0; j < CPU_LANES; j++) lane[j] = x[i + j] > lane[j] ? x[i + j] : lane[j];
  float m = -3.402823466e38f;
  for (int j = 0; j < CPU_LANES; j++) m = lane[j] > m ? lane[j] : m;
  for (; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

/* out[i] = exp(x[i] - shift) (out may be x); returns the sum of out, accumulated per lane in
 * float and the lanes added in double. */
static inline double cpu_exp_shift_sum(float *out, const float *x, int n, float shift) {
  float lane[CPU_LANES] = {0};
  int i = 0;
  for (; i + CPU_LANES <= n; i += CPU_LANES)
    for (int j = 0; j < CPU_LANES; j++) {
      float e = cpu_expf(x[i + j] - shift);
      out[i + j] = e;
      lane[j] += e;
    }
  double sum = 0;
  for (int j = 0; j < CPU_LANES; j++) sum += lane[j];
  for (; i < n; i++) {
    out[i] = cpu_expf(x[i] - shift);
    sum += out[i];
  }
  return sum;
}

void cpu_install_dense(Backend *be);
void cpu_install_norm(Backend *be);
void cpu_install_rope(Backend *be);
void cpu_install_attention(Backend *be);
void cpu_install_attention_cached(Backend *be);
void cpu_install_mlp(Backend *be);
void cpu_install_loss(Backend *be);
void cpu_install_adamw(Backend *be);

#endif
