/* Dense algebra on the CPU: GEMM through OpenBLAS, vector ops and order-fixed reductions. */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

#include "../check.h"

#include "cpu_ops.h"

static void cpu_gemm(Backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha,
                     const float *A, int lda, const float *B, int ldb, float beta, float *C,
                     int ldc) {
  (void)be;
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* bf16 weights are widened row by row into the context's buffer and multiplied by sgemm:
 * the products and sums are the f32 GEMM's on exactly the bf16 values. The buffer grows to
 * the largest weight once, outside any step's steady state. */
static void cpu_gemm_weight(Backend *be, int trans_a, int trans_b, int M, int N, int K,
                            float alpha, const float *A, int lda, WeightRef B, int ldb,
                            float beta, float *C, int ldc) {
  if (B.dtype == TV_F32) {
    cpu_gemm(be, trans_a, trans_b, M, N, K, alpha, A, lda, B.data, ldb, beta, C, ldc);
    return;
  }
  CpuContext *c = be->ctx;
  size_t rows = trans_b ? (size_t)N : (size_t)K, cols = trans_b ? (size_t)K : (size_t)N;
  if (rows * cols > c->widened_cap) {
    free(c->widened);
    c->widened = aligned_alloc(64, (rows * cols * sizeof(float) + 63) / 64 * 64);
    if (!c->widened) tv_die("out of host memory widening a %zu x %zu bf16 weight", rows, cols);
    c->widened_cap = rows * cols;
  }
  const uint16_t *src = B.data;
#pragma omp parallel for schedule(static)
  for (size_t r = 0; r < rows; r++)
    for (size_t j = 0; j < cols; j++)
      c->widened[r * cols + j] = tv_f32_from_bf16(src[r * (size_t)ldb + j]);
  cpu_gemm(be, trans_a, trans_b, M, N, K, alpha, A, lda, c->widened, (int)cols, beta, C, ldc);
}

static void cpu_axpy(Backend *be, size_t n, float alpha, const float *x, float *y) {
  (void)be;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

static void cpu_scale(Backend *be, size_t n, float alpha, float *x) {
  (void)be;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) x[i] *= alpha;
}

static double cpu_sum_squares(Backend *be, size_t n, const float *x) {
  CpuContext *c = be->ctx;
  size_t chunk = (n + CPU_REDUCE_CHUNKS - 1) / CPU_REDUCE_CHUNKS;
#pragma omp parallel for schedule(static)
  for (int k = 0; k < CPU_REDUCE_CHUNKS; k++) {
    size_t lo = (size_t)k * chunk, hi = lo + chunk < n ? lo + chunk : n;
    double s = 0;
    for (size_t i = lo; i < hi; i++) s += (double)x[i] * x[i];
    c->partials[k] = s;
  }
  double total = 0;
  for (int k = 0; k < CPU_REDUCE_CHUNKS; k++) total += c->partials[k];
  return total;
}

static void cpu_sum_squares_acc(Backend *be, size_t n, const float *x, double *dst) {
  *dst += cpu_sum_squares(be, n, x); /* host memory is the CPU's device memory */
}

static void cpu_add_bias(Backend *be, float *y, const float *b, int N, int C) {
  (void)be;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    float *row = y + (size_t)n * C;
    for (int j = 0; j < C; j++) row[j] += b[j];
  }
}

void cpu_install_dense(Backend *be) {
  be->gemm = cpu_gemm;
  be->gemm_weight = cpu_gemm_weight;
  be->sum_squares_acc = cpu_sum_squares_acc;
  be->axpy = cpu_axpy;
  be->scale = cpu_scale;
  be->sum_squares = cpu_sum_squares;
  be->add_bias = cpu_add_bias;
}
