/* Dense algebra on the GPU: GEMMs through cuBLAS (bf16 weights on tensor cores with f32
 * accumulation), vector ops, and sums of squares reduced in double in a fixed order.
 * Twin of core/cpu/dense_cpu.c. */
#include "cuda_common.cuh"

/* cuBLAS is column-major: row-major C[M,N] = op(A) op(B) is column-major
 * C^T[N,M] = op(B)^T op(A)^T, i.e. the same call with A and B swapped. */
static void cuda_gemm(Backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta, float *C,
                      int ldc) {
  if (M == 0 || N == 0) return;
  CUBLAS_CHECK(cublasSgemm(cuda_ctx(be)->cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                           trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, ldb, A, lda,
                           &beta, C, ldc));
}

__global__ static void narrow_kernel(__nv_bfloat16 *dst, const float *src, size_t rows,
                                     size_t cols, size_t ld) {
  size_t n = rows * cols;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[(i / cols) * ld + i % cols]);
}

/* A bf16 weight: the f32 activation A is narrowed (round to nearest even) into the
 * context's buffer and both operands go to cublasGemmEx as bf16 with f32 accumulation. */
static void cuda_gemm_weight(Backend *be, int trans_a, int trans_b, int M, int N, int K,
                             float alpha, const float *A, int lda, WeightRef B, int ldb,
                             float beta, float *C, int ldc) {
  if (B.dtype == TV_F32) {
    cuda_gemm(be, trans_a, trans_b, M, N, K, alpha, A, lda, (const float *)B.data, ldb, beta, C,
              ldc);
    return;
  }
  if (M == 0 || N == 0) return;
  CudaContext *c = cuda_ctx(be);
  size_t rows = trans_a ? (size_t)K : (size_t)M, cols = trans_a ? (size_t)M : (size_t)K;
  if (rows * cols > c->narrowed_capacity) { /* the first step sizes it; later steps reuse it */
    /* Stream-ordered, so growing it mid-pass never waits for the device (backend_cuda.cu). */
    if (c->narrowed) CUDA_CHECK(cudaFreeAsync(c->narrowed, c->stream));
    CUDA_CHECK(cudaMallocAsync(&c->narrowed, rows * cols * sizeof(__nv_bfloat16), c->stream));
    c->narrowed_capacity = rows * cols;
  }
  narrow_kernel<<<cuda_blocks_for(rows * cols, 256), 256, 0, c->stream>>>(c->narrowed, A, rows,
                                                                         cols, (size_t)lda);
  CUDA_LAUNCH_CHECK();
  CUBLAS_CHECK(cublasGemmEx(c->cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                            trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B.data,
                            CUDA_R_16BF, ldb, c->narrowed, CUDA_R_16BF, (int)cols, &beta, C,
                            CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

__global__ static void axpy_kernel(size_t n, float alpha, const float *x, float *y) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    y[i] += alpha * x[i];
}

__global__ static void scale_kernel(size_t n, float alpha, float *x) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    x[i] *= alpha;
}

static void cuda_axpy(Backend *be, size_t n, float alpha, const float *x, float *y) {
  if (!n) return;
  axpy_kernel<<<cuda_blocks_for(n, 256), 256, 0, cuda_ctx(be)->stream>>>(n, alpha, x, y);
  CUDA_LAUNCH_CHECK();
}

static void cuda_scale(Backend *be, size_t n, float alpha, float *x) {
  if (!n) return;
  scale_kernel<<<cuda_blocks_for(n, 256), 256, 0, cuda_ctx(be)->stream>>>(n, alpha, x);
  CUDA_LAUNCH_CHECK();
}

/* Block b sums the squares of its fixed chunk of x in double; the chunks are added in order
 * afterwards, so the value does not depend on scheduling. */
__global__ static void sum_squares_kernel(size_t n, const float *x, double *partials) {
  __shared__ double shared[32];
  size_t chunk = (n + gridDim.x - 1) / gridDim.x;
  size_t lo = blockIdx.x * chunk, hi = lo + chunk < n ? lo + chunk : n;
  double s = 0;
  for (size_t i = lo + threadIdx.x; i < hi; i += blockDim.x) s += (double)x[i] * x[i];
  s = cuda_block_sum(s, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

static void cuda_sum_squares_acc(Backend *be, size_t n, const float *x, double *dst) {
  CudaContext *c = cuda_ctx(be);
  sum_squares_kernel<<<CUDA_REDUCE_BLOCKS, CUDA_REDUCE_THREADS, 0, c->stream>>>(n, x,
                                                                              c->partials);
  CUDA_LAUNCH_CHECK();
  cuda_add_partials(be, c->partials, CUDA_REDUCE_BLOCKS, dst);
}

static double cuda_sum_squares(Backend *be, size_t n, const float *x) {
  CudaContext *c = cuda_ctx(be);
  double total = 0;
  CUDA_CHECK(cudaMemsetAsync(c->result, 0, sizeof(double), c->stream));
  cuda_sum_squares_acc(be, n, x, c->result);
  be->to_host(be, &total, c->result, sizeof total);
  return total;
}

__global__ static void add_bias_kernel(float *y, const float *b, int N, int C) {
  size_t n = (size_t)N * C;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    y[i] += b[i % C];
}

static void cuda_add_bias(Backend *be, float *y, const float *b, int N, int C) {
  if (!N || !C) return;
  add_bias_kernel<<<cuda_blocks_for((size_t)N * C, 256), 256, 0, cuda_ctx(be)->stream>>>(y, b, N,
                                                                                        C);
  CUDA_LAUNCH_CHECK();
}

void cuda_install_dense(Backend *be) {
  be->gemm = cuda_gemm;
  be->gemm_weight = cuda_gemm_weight;
  be->axpy = cuda_axpy;
  be->scale = cuda_scale;
  be->sum_squares = cuda_sum_squares;
  be->sum_squares_acc = cuda_sum_squares_acc;
  be->add_bias = cuda_add_bias;
}
