/* Token embedding lookup and RMSNorm (forward and backward) on the GPU. dx is written; dw
 * and dtable accumulate. Row statistics in double; column sums (dw, dtable) have one writer
 * per column adding rows in order, so results do not depend on scheduling.
 * Twin of core/cpu/norm_cpu.c. */
#include "cuda_common.cuh"

template <typename W>
__global__ static void embedding_forward_kernel(float *out, const W *table,
                                                const int32_t *tokens, int N, int D) {
  size_t n = (size_t)N * D;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    out[i] = (float)table[(size_t)tokens[i / D] * D + i % D];
}

/* Thread per column: rows repeating a token add into the same row of dtable. */
__global__ static void embedding_backward_kernel(float *dtable, const float *dout,
                                                 const int32_t *tokens, int N, int D) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= D) return;
  for (int n = 0; n < N; n++) dtable[(size_t)tokens[n] * D + i] += dout[(size_t)n * D + i];
}

/* A bf16 table is widened (exactly) as it is read. */
static void cuda_embedding_forward(Backend *be, float *out, WeightRef table,
                                   const int32_t *tokens, int N, int D) {
  if (!N) return;
  unsigned blocks = cuda_blocks_for((size_t)N * D, 256);
  cudaStream_t stream = cuda_ctx(be)->stream;
  if (table.dtype == TV_BF16)
    embedding_forward_kernel<<<blocks, 256, 0, stream>>>(
        out, (const __nv_bfloat16 *)table.data, tokens, N, D);
  else
    embedding_forward_kernel<<<blocks, 256, 0, stream>>>(out, (const float *)table.data, tokens,
                                                         N, D);
  CUDA_LAUNCH_CHECK();
}

static void cuda_embedding_backward(Backend *be, float *dtable, const float *dout,
                                    const int32_t *tokens, int N, int D) {
  embedding_backward_kernel<<<(D + 255) / 256, 256, 0, cuda_ctx(be)->stream>>>(dtable, dout,
                                                                              tokens, N, D);
  CUDA_LAUNCH_CHECK();
}

/* One block per row. */
__global__ static void rmsnorm_forward_kernel(float *y, float *inv_rms, const float *x,
                                              const float *w, int D, float eps) {
  __shared__ double shared[32];
  __shared__ float r_shared;
  const float *xr = x + (size_t)blockIdx.x * D;
  float *yr = y + (size_t)blockIdx.x * D;
  double ss = 0;
  for (int i = threadIdx.x; i < D; i += blockDim.x) ss += (double)xr[i] * xr[i];
  ss = cuda_block_sum(ss, shared);
  if (threadIdx.x == 0) {
    r_shared = (float)(1.0 / sqrt(ss / D + eps));
    inv_rms[blockIdx.x] = r_shared;
  }
  __syncthreads();
  float r = r_shared;
  for (int i = threadIdx.x; i < D; i += blockDim.x) yr[i] = xr[i] * r * w[i];
}

/* dx_i = r w_i dy_i - x_i r^3 / D * sum_j dy_j w_j x_j (as on the CPU). */
__global__ static void rmsnorm_backward_kernel(float *dx, const float *dy, const float *x,
                                               const float *w, const float *inv_rms, int D) {
  __shared__ double shared[32];
  __shared__ float c_shared;
  size_t row = (size_t)blockIdx.x * D;
  float r = inv_rms[blockIdx.x];
  double dot = 0;
  for (int i = threadIdx.x; i < D; i += blockDim.x) dot += (double)dy[row + i] * w[i] * x[row + i];
  dot = cuda_block_sum(dot, shared);
  if (threadIdx.x == 0) c_shared = (float)(dot * r * r * r / D);
  __syncthreads();
  float c = c_shared;
  for (int i = threadIdx.x; i < D; i += blockDim.x)
    dx[row + i] = r * w[i] * dy[row + i] - x[row + i] * c;
}

__global__ static void rmsnorm_dw_kernel(float *dw, const float *dy, const float *x,
                                         const float *inv_rms, int N, int D) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= D) return;
  double acc = 0;
  for (int n = 0; n < N; n++)
    acc += (double)dy[(size_t)n * D + i] * x[(size_t)n * D + i] * inv_rms[n];
  dw[i] += (float)acc;
}

static void cuda_rmsnorm_forward(Backend *be, float *y, float *inv_rms, const float *x,
                                 const float *w, int N, int D, float eps) {
  if (!N) return;
  rmsnorm_forward_kernel<<<N, 256, 0, cuda_ctx(be)->stream>>>(y, inv_rms, x, w, D, eps);
  CUDA_LAUNCH_CHECK();
}

static void cuda_rmsnorm_backward(Backend *be, float *dx, float *dw, const float *dy,
                                  const float *x, const float *w, const float *inv_rms, int N,
                                  int D) {
  if (!N) return;
  cudaStream_t st = cuda_ctx(be)->stream;
  rmsnorm_backward_kernel<<<N, 256, 0, st>>>(dx, dy, x, w, inv_rms, D);
  CUDA_LAUNCH_CHECK();
  if (!dw) return;
  rmsnorm_dw_kernel<<<(D + 255) / 256, 256, 0, st>>>(dw, dy, x, inv_rms, N, D);
  CUDA_LAUNCH_CHECK();
}

void cuda_install_norm(Backend *be) {
  be->embedding_forward = cuda_embedding_forward;
  be->embedding_backward = cuda_embedding_backward;
  be->rmsnorm_forward = cuda_rmsnorm_forward;
  be->rmsnorm_backward = cuda_rmsnorm_backward;
}
