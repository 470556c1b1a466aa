/* SwiGLU (silu(gate) * up) and counter-based inverted dropout on the CPU. */
#include <math.h>

#include "../philox.h"
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
  /* Element e uses word e % 4 of Philox block e / 4, so one Philox evaluation serves four
   * elements; blocks are indexed globally so a partial first block is still exact. Blocks
   * are generated RNG_LANES at a time (vectorised), each chunk by one thread. */
  uint64_t first_block = base >> 2, end_block = (base + total + 3) >> 2;
  uint64_t chunks = (end_block - first_block + RNG_LANES - 1) / RNG_LANES;
  const uint64_t span = 4 * RNG_LANES; /* elements per chunk */
#pragma omp parallel for schedule(static)
  for (uint64_t ch = 0; ch < chunks; ch++) {
    uint64_t e0 = (first_block + ch * RNG_LANES) << 2; /* first element of the chunk */
    uint32_t w[4 * RNG_LANES];
    philox4x32_lanes(seed, stream, e0 >> 2, w);
    uint64_t lo = e0 < base ? base - e0 : 0;
    uint64_t hi = e0 + span > base + total ? base + total - e0 : span;
    float *o = out + (e0 + lo - base);
    const float *xi = x + (e0 + lo - base);
    for (uint64_t k = lo; k < hi; k++) {
      float u = philox_dropout_uniform(w[k]);
      o[k - lo] = u >= p ? xi[k - lo] * keep_scale : 0.0f;
    }
  }
}

void cpu_install_mlp(Backend *be) {
  be->swiglu_forward = cpu_swiglu_forward;
  be->swiglu_backward = cpu_swiglu_backward;
  be->dropout = cpu_dropout;
}
