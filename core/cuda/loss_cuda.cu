/* Cross-entropy over non-ignored targets on the GPU and, when asked, its gradient
 * scale * (softmax - onehot) (zero on ignored rows), possibly in place over the logits.
 * One block per row reads the row in vocabulary chunks (max, then sum of exponentials, then
 * the gradient): no second [N, V] buffer. Row losses are added in order afterwards.
 * Twin of core/cpu/loss_cpu.c. */
#include "cuda_common.cuh"

__global__ static void cross_entropy_kernel(const float *logits, float *dlogits,
                                            const int32_t *targets, int V, float scale,
                                            double *row_losses) {
  __shared__ double shared[32];
  __shared__ float max_shared;
  __shared__ double sum_shared;
  size_t n = blockIdx.x;
  const float *row = logits + n * V;
  float *grad = dlogits ? dlogits + n * V : NULL;
  int tgt = targets[n];
  if (tgt < 0) {
    if (grad)
      for (int i = threadIdx.x; i < V; i += blockDim.x) grad[i] = 0.0f;
    if (threadIdx.x == 0) row_losses[n] = 0.0;
    return;
  }
  float mx = -3.402823466e38f;
  for (int i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, row[i]);
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  __shared__ float warp_max[32];
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = mx;
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = warp_max[0];
    for (int w = 1; w < (int)((blockDim.x + 31) >> 5); w++) m = fmaxf(m, warp_max[w]);
    max_shared = m;
  }
  __syncthreads();
  mx = max_shared;
  double sum = 0;
  for (int i = threadIdx.x; i < V; i += blockDim.x) sum += expf(row[i] - mx);
  sum = cuda_block_sum(sum, shared);
  if (threadIdx.x == 0) {
    sum_shared = sum;
    row_losses[n] = mx + log(sum) - row[tgt]; /* read before any in-place write below */
  }
  __syncthreads();
  if (!grad) return;
  float norm = (float)(scale / sum_shared);
  for (int i = threadIdx.x; i < V; i += blockDim.x)
    grad[i] = expf(row[i] - mx) * norm - (i == tgt ? scale : 0.0f);
}

static void cuda_cross_entropy_acc(Backend *be, const float *logits, float *dlogits,
                                   const int32_t *targets, int N, int V, float scale,
                                   double *loss_sum) {
  if (!N) return;
  CudaContext *c = cuda_ctx(be);
  if ((size_t)N > c->row_capacity) { /* sized by the first step, reused after */
    /* Stream-ordered, so growing it mid-pass never waits for the device (backend_cuda.cu). */
    if (c->row_losses) CUDA_CHECK(cudaFreeAsync(c->row_losses, c->stream));
    CUDA_CHECK(cudaMallocAsync(&c->row_losses, (size_t)N * sizeof(double), c->stream));
    c->row_capacity = (size_t)N;
  }
  cross_entropy_kernel<<<N, 256, 0, c->stream>>>(logits, dlogits, targets, V, scale,
                                                 c->row_losses);
  CUDA_LAUNCH_CHECK();
  if (loss_sum) cuda_add_partials(be, c->row_losses, (size_t)N, loss_sum);
}

static double cuda_cross_entropy(Backend *be, const float *logits, float *dlogits,
                                 const int32_t *targets, int N, int V, float scale) {
  CudaContext *c = cuda_ctx(be);
  double total = 0;
  CUDA_CHECK(cudaMemsetAsync(c->result, 0, sizeof(double), c->stream));
  cuda_cross_entropy_acc(be, logits, dlogits, targets, N, V, scale, c->result);
  be->to_host(be, &total, c->result, sizeof total);
  return total;
}

void cuda_install_loss(Backend *be) {
  be->cross_entropy = cuda_cross_entropy;
  be->cross_entropy_acc = cuda_cross_entropy_acc;
}
