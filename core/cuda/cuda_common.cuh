/* Internal to the CUDA backend: its context, the error checks every call goes through (one
 * abort hook, as on the host), and the op families each .cu file contributes to the table. */
#ifndef TV_CUDA_COMMON_CUH
#define TV_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

extern "C" {
#include "../backend.h"
#include "../check.h"
}

/* Reductions use this many blocks of partial sums, added in order by one block, so a sum is
 * the same on every run (no atomics on the result). */
#define CUDA_REDUCE_BLOCKS 256
#define CUDA_REDUCE_THREADS 256

typedef struct {
  int device;
  cudaStream_t stream; /* every kernel, copy and cuBLAS call of this backend runs on it */
  cublasHandle_t cublas;
  double *partials;    /* [CUDA_REDUCE_BLOCKS] device */
  double *result;      /* [1] device: where a returning reduction lands before the copy */
  double *row_losses;  /* [row_capacity] device: per-row cross-entropy, summed in order */
  size_t row_capacity;
  __nv_bfloat16 *narrowed; /* f32 activations narrowed for a bf16 GEMM; grown, never shrunk */
  size_t narrowed_capacity;
} CudaContext;

static inline CudaContext *cuda_ctx(Backend *be) { return (CudaContext *)be->ctx; }

#define CUDA_CHECK(call)                                                                   \
  do {                                                                                     \
    cudaError_t cuda_err_ = (call);                                                        \
    if (cuda_err_ != cudaSuccess)                                                          \
      tv_fatal_at(__FILE__, __LINE__, "CUDA: %s failed: %s", #call,                        \
                  cudaGetErrorString(cuda_err_));                                          \
  } while (0)

#define CUBLAS_CHECK(call)                                                                 \
  do {                                                                                     \
    cublasStatus_t cublas_st_ = (call);                                                    \
    if (cublas_st_ != CUBLAS_STATUS_SUCCESS)                                               \
      tv_fatal_at(__FILE__, __LINE__, "cuBLAS: %s failed: %s", #call,                      \
                  cublasGetStatusString(cublas_st_));                                      \
  } while (0)

/* After every kernel launch: a bad configuration is reported at the launch, not later. */
#define CUDA_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

/* Blocks of `threads` covering n elements (grid-stride loops take the rest). */
static inline unsigned cuda_blocks_for(size_t n, unsigned threads) {
  size_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return b > 65535u * 8u ? 65535u * 8u : (unsigned)b;
}

/* Sum of a float over a block (blockDim.x a multiple of 32, <= 1024), in double. The
 * result is valid in thread 0. `shared` holds 32 doubles. */
__device__ static inline double cuda_block_sum(double v, double *shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = 0;
  if (warp == 0) {
    int warps = (blockDim.x + 31) >> 5;
    v = lane < warps ? shared[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  return v;
}

/* Adds partials[0..count) in order into *dst (one block of one thread: count is small). */
void cuda_add_partials(Backend *be, const double *partials, size_t count, double *dst);

void cuda_install_dense(Backend *be);
void cuda_install_norm(Backend *be);
void cuda_install_rope(Backend *be);
void cuda_install_attention(Backend *be);
void cuda_install_attention_cached(Backend *be);
void cuda_install_mlp(Backend *be);
void cuda_install_loss(Backend *be);
void cuda_install_adamw(Backend *be);

#endif
