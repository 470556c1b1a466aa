/* SwiGLU (silu(gate) * up) and counter-based inverted dropout on the GPU. The dropout mask
 * is the CPU's bit for bit: the same Philox block (core/philox.h) and element numbering.
 * Twin of core/cpu/mlp_cpu.c. */
#include "cuda_common.cuh"

extern "C" {
#include "../philox.h"
}

__device__ static inline float sigmoid_dev(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ static void swiglu_forward_kernel(float *out, const float *gate, const float *up,
                                             size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    out[i] = gate[i] * sigmoid_dev(gate[i]) * up[i];
}

/* d silu(g)/dg = s (1 + g (1 - s)); dgate, dup may alias gate, up (read before written). */
__global__ static void swiglu_backward_kernel(float *dgate, float *dup, const float *dout,
                                              const float *gate, const float *up, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    float g = gate[i], u = up[i], d = dout[i];
    float s = sigmoid_dev(g);
    dgate[i] = d * u * s * (1.0f + g * (1.0f - s));
    dup[i] = d * g * s;
  }
}

/* Element i of the mask is word (base + i) % 4 of Philox block (base + i) / 4. Each thread
 * evaluates its own block: four times the Philox work of sharing, still far under the
 * memory time of reading x and writing out. */
__global__ static void dropout_kernel(float *out, const float *x, size_t total, float p,
                                      float keep_scale, uint64_t seed, uint64_t stream,
                                      uint64_t base) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
       i += (size_t)gridDim.x * blockDim.x) {
    uint64_t e = base + i;
    uint32_t w[4];
    philox4x32_block(seed, stream, e >> 2, w);
    float u = philox_dropout_uniform(w[e & 3]);
    out[i] = u >= p ? x[i] * keep_scale : 0.0f;
  }
}

static void cuda_swiglu_forward(Backend *be, float *out, const float *gate, const float *up,
                                size_t n) {
  if (!n) return;
  swiglu_forward_kernel<<<cuda_blocks_for(n, 256), 256, 0, cuda_ctx(be)->stream>>>(out, gate, up,
                                                                                  n);
  CUDA_LAUNCH_CHECK();
}

static void cuda_swiglu_backward(Backend *be, float *dgate, float *dup, const float *dout,
                                 const float *gate, const float *up, size_t n) {
  if (!n) return;
  swiglu_backward_kernel<<<cuda_blocks_for(n, 256), 256, 0, cuda_ctx(be)->stream>>>(
      dgate, dup, dout, gate, up, n);
  CUDA_LAUNCH_CHECK();
}

static void cuda_dropout(Backend *be, float *out, const float *x, int N, int C, float p,
                         uint64_t seed, uint64_t stream, int64_t row_offset) {
  size_t total = (size_t)N * C;
  if (!total) return;
  float keep_scale = 1.0f / (1.0f - p); /* formed on the host exactly as the CPU forms it */
  dropout_kernel<<<cuda_blocks_for(total, 256), 256, 0, cuda_ctx(be)->stream>>>(
      out, x, total, p, keep_scale, seed, stream, (uint64_t)row_offset * (uint64_t)C);
  CUDA_LAUNCH_CHECK();
}

void cuda_install_mlp(Backend *be) {
  be->swiglu_forward = cuda_swiglu_forward;
  be->swiglu_backward = cuda_swiglu_backward;
  be->dropout = cuda_dropout;
}
