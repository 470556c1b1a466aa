/* Token embedding lookup and RMSNorm (forward and backward) on the CPU.
 * dx is written; dw accumulates. Row statistics in double so a row's result does not
 * depend on vector width. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "cpu_ops.h"

static void cpu_embedding_forward(Backend *be, float *out, WeightRef table,
                                  const int32_t *tokens, int N, int D) {
  (void)be;
  if (table.dtype == TV_F32) {
    const float *t = table.data;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
      memcpy(out + (size_t)n * D, t + (size_t)tokens[n] * D, (size_t)D * sizeof(float));
    return;
  }
  const uint16_t *t = table.data; /* bf16: widening is exact */
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const uint16_t *src = t + (size_t)tokens[n] * D;
    float *dst = out + (size_t)n * D;
    for (int i = 0; i < D; i++) dst[i] = tv_f32_from_bf16(src[i]);
  }
}

/* Rows may repeat a token, so threads split the columns: each element has one writer and
 * rows are added in order. */
static void cpu_embedding_backward(Backend *be, float *dtable, const float *dout,
                                   const int32_t *tokens, int N, int D) {
  (void)be;
#pragma omp parallel
  {
    int nt = omp_get_num_threads(), me = omp_get_thread_num();
    int lo = (int)((long long)D * me / nt), hi = (int)((long long)D * (me + 1) / nt);
    for (int n = 0; n < N; n++) {
      float *dst = dtable + (size_t)tokens[n] * D;
      const float *src = dout + (size_t)n * D;
      for (int i = lo; i < hi; i++) dst[i] += src[i];
    }
  }
}

static void cpu_rmsnorm_forward(Backend *be, float *y, float *inv_rms, const float *x,
                                const float *w, int N, int D, float eps) {
  (void)be;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float *xr = x + (size_t)n * D;
    float *yr = y + (size_t)n * D;
    double ss = 0;
    for (int i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
    float r = (float)(1.0 / sqrt(ss / D + eps));
    inv_rms[n] = r;
    for (int i = 0; i < D; i++) yr[i] = xr[i] * r * w[i];
  }
}

/* y_i = x_i r w_i, r = (mean x^2 + eps)^-1/2, so
 * dx_i = r w_i dy_i - x_i r^3 / D * sum_j dy_j w_j x_j. */
static void cpu_rmsnorm_backward(Backend *be, float *dx, float *dw, const float *dy,
                                 const float *x, const float *w, const float *inv_rms, int N,
                                 int D) {
  (void)be;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float *xr = x + (size_t)n * D, *dyr = dy + (size_t)n * D;
    float *dxr = dx + (size_t)n * D;
    double dot = 0;
    for (int i = 0; i < D; i++) dot += (double)dyr[i] * w[i] * xr[i];
    float r = inv_rms[n];
    float c = (float)(dot * r * r * r / D);
    for (int i = 0; i < D; i++) dxr[i] = r * w[i] * dyr[i] - xr[i] * c;
  }
  if (!dw) return;
  /* Column-parallel so each dw[i] has one writer and a fixed summation order. */
#pragma omp parallel for schedule(static)
  for (int i = 0; i < D; i++) {
    double acc = 0;
    for (int n = 0; n < N; n++)
      acc += (double)dy[(size_t)n * D + i] * x[(size_t)n * D + i] * inv_rms[n];
    dw[i] += (float)acc;
  }
}

void cpu_install_norm(Backend *be) {
  be->embedding_forward = cpu_embedding_forward;
  be->embedding_backward = cpu_embedding_backward;
  be->rmsnorm_forward = cpu_rmsnorm_forward;
  be->rmsnorm_backward = cpu_rmsnorm_backward;
}
