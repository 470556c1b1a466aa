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

/* bf16 weights are widened tile by tile into the context's buffer (at most
 * CPU_WIDEN_TILE_FLOATS, a few MiB that stay in cache) and each tile multiplied by sgemm.
 * Tiles split the output columns N only, never the summed K, so every element of C is the f32
 * GEMM's dot product on exactly the bf16 values (bf16 -> f32 is exact). */
static void cpu_gemm_weight(Backend *be, int trans_a, int trans_b, int M, int N, int K,
                            float alpha, const float *A, int lda, WeightRef B, int ldb,
                            float beta, float *C, int ldc) {
  if (B.dtype == TV_F32) {
    cpu_gemm(be, trans_a, trans_b, M, N, K, alpha, A, lda, B.data, ldb, beta, C, ldc);
    return;
  }
  if (M == 0 || N == 0) return;
  CpuContext *c = be->ctx;
  size_t k = (size_t)(K > 0 ? K : 1);
  size_t tile = CPU_WIDEN_TILE_FLOATS / k;
  if (tile < CPU_WIDEN_MIN_COLUMNS) tile = CPU_WIDEN_MIN_COLUMNS;
  if (tile > (size_t)N) tile = (size_t)N;
  if (tile * k > c->widened_cap) { /* grown once to the widest K seen, never per step */
    free(c->widened);
    c->widened = aligned_alloc(64, (tile * k * sizeof(float) + 63) / 64 * 64);
    if (!c->widened) tv_die("out of host memory widening a %zu x %d bf16 tile", tile, K);
    c->widened_cap = tile * k;
  }
  const uint16_t *src = B.data;
  float *buf = c->widened;
  for (size_t n0 = 0; n0 < (size_t)N; n0 += tile) {
    size_t nb = (size_t)N - n0 < tile ? (size_t)N - n0 : tile;
    if (trans_b) { /* B [N, K]: rows n0 .. n0 + nb, as [nb, K] */
#pragma omp parallel for schedule(static)
      for (size_t r = 0; r < nb; r++)
        for (size_t j = 0; j < (size_t)K; j++)
          buf[r * k + j] = tv_f32_from_bf16(src[(n0 + r) * (size_t)ldb + j]);
      cpu_gemm(be, trans_a, 1, M, (int)nb, K, alpha, A, lda, buf, K, beta, C + n0, ldc);
    } else { /* B [K, N]: columns n0 .. n0 + nb, as [K, nb] */
#pragma omp parallel for schedule(static)
      for (size_t r = 0; r < (size_t)K; r++)
        for (size_t j = 0; j < nb; j++)
          buf[r * nb + j] = tv_f32_from_bf16(src[r * (size_t)ldb + n0 + j]);
      cpu_gemm(be, trans_a, 0, M, (int)nb, K, alpha, A, lda, buf, (int)nb, beta, C + n0, ldc);
    }
  }
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
