/* SwiGLU (silu(gate) * up) and counter-based inverted dropout on the CPU. */
#include <math.h>

#include "../rng.h"
#include "cpu_ops.h"

static inline float sigmoidf(float x) { return 1.0f / (1.0f + cpu_expf(-x)); }

static void cpu_swiglu_forward(Backend *be, float *out, const float *gate, const float *up,
                               size_t n) {
  (void)be;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) out[i] = gate[i] * sigmoidf(gate[i]) * up[i];
}

/* d silu(g)/dg = s (1 + g (1 - s)), s = sigmoid(g). dgate and dup are written and may
 * alias gate and up (each element is read before it is written). */
static void cpu_swiglu_backward(Backend *be, float *dgate, float *dup, const float *dout,
                                const float *gate, const float *up, size_t n) {
  (void)be;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    float g = gate[i], u = up[i], d = dout[i];
    float s = sigmoidf(g);
    dgate[i] = d * u * s * (1.0f + g * (1.0f - s));
    dup[i] = d * g * s;
  }
}

static void cpu_dropout(Backend *be, float *out, const float *x, int N, int C, float p,
                        uint64_t seed, uint64_t stream, int64_t row_offset) {
  (void)be;
  float keep_scale = 1.0f / (1.0f - p);
  size_t total = (size_t)N * C;
  uint64_t base = (uint64_t)row_offset * (uint64_t)C;
  /* Element e uses word e % 4 of Philox block e / 4, so one Philox call serves four
   * elements; blocks are indexed globally so a partial first block is still exact. */
  uint64_t first_block = base >> 2, end_block = (base + total + 3) >> 2;
#pragma omp parallel for schedule(static)
  for (uint64_t blk = first_block; blk < end_block; blk++) {
    uint32_t w[4];
    philox4x32(seed, stream, blk, w);
    for (int j = 0; j < 4; j++) {
      uint64_t e = (blk << 2) + (uint64_t)j;
      if (e < base || e >= base + total) continue;
      size_t i = (size_t)(e - base);
      float u = (float)(w[j] >> 8) * (1.0f / 16777216.0f);
      out[i] = u >= p ? x[i] * keep_scale : 0.0f;
    }
  }
}

void cpu_install_mlp(Backend *be) {
  be->swiglu_forward = cpu_swiglu_forward;
  be->swiglu_backward = cpu_swiglu_backward;
  be->dropout = cpu_dropout;
}
