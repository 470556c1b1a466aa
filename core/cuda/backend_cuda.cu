/* The CUDA backend: device memory on one stream, the context, and the table wiring. Kernels
 * live one op family per file beside their CPU twins (core/cpu/<family>_cpu.c). */
#include "backend_cuda.h"
#include "cuda_common.cuh"

static void *cuda_alloc(Backend *be, size_t bytes) {
  void *p = NULL;
  size_t rounded = (bytes + 63) / 64 * 64;
  if (!rounded) rounded = 64;
  /* Stream-ordered: neither this nor cuda_free waits for the device, so growing a buffer
   * mid-pass cannot stall behind an NCCL receive posted ahead on the comm stream. */
  cudaError_t err = cudaMallocAsync(&p, rounded, cuda_ctx(be)->stream);
  if (err != cudaSuccess)
    tv_die("out of GPU memory on device %d allocating %zu bytes (%s)", cuda_ctx(be)->device,
           bytes, cudaGetErrorString(err));
  CUDA_CHECK(cudaMemsetAsync(p, 0, rounded, cuda_ctx(be)->stream));
  return p;
}

/* Freed in stream order, after the work queued on our stream that may still read p. Other
 * streams (the NCCL path's) only touch backend memory after events recorded on ours. */
static void cuda_free(Backend *be, void *p) {
  if (!p) return;
  CUDA_CHECK(cudaFreeAsync(p, cuda_ctx(be)->stream));
}

static void cuda_copy(Backend *be, void *dst, const void *src, size_t bytes) {
  if (bytes)
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_ctx(be)->stream));
}

/* Host transfers complete before returning: the caller may reuse or read its buffer at once. */
static void cuda_to_host(Backend *be, void *host_dst, const void *src, size_t bytes) {
  if (!bytes) return;
  CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, cuda_ctx(be)->stream));
  CUDA_CHECK(cudaStreamSynchronize(cuda_ctx(be)->stream));
}

static void cuda_from_host(Backend *be, void *dst, const void *host_src, size_t bytes) {
  if (!bytes) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, cuda_ctx(be)->stream));
  CUDA_CHECK(cudaStreamSynchronize(cuda_ctx(be)->stream));
}

static void cuda_zero(Backend *be, void *p, size_t bytes) {
  if (bytes) CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, cuda_ctx(be)->stream));
}

static void cuda_sync(Backend *be) { CUDA_CHECK(cudaStreamSynchronize(cuda_ctx(be)->stream)); }

static void cuda_destroy(Backend *be) {
  CudaContext *c = cuda_ctx(be);
  CUDA_CHECK(cudaStreamSynchronize(c->stream));
  CUDA_CHECK(cudaFree(c->partials));
  CUDA_CHECK(cudaFree(c->result));
  if (c->row_losses) CUDA_CHECK(cudaFree(c->row_losses));
  if (c->narrowed) CUDA_CHECK(cudaFree(c->narrowed));
  CUBLAS_CHECK(cublasDestroy(c->cublas));
  CUDA_CHECK(cudaStreamDestroy(c->stream));
  free(c);
  free(be);
}

__global__ static void add_partials_kernel(const double *partials, size_t count, double *dst) {
  double s = 0;
  for (size_t i = 0; i < count; i++) s += partials[i];
  *dst += s;
}

void cuda_add_partials(Backend *be, const double *partials, size_t count, double *dst) {
  add_partials_kernel<<<1, 1, 0, cuda_ctx(be)->stream>>>(partials, count, dst);
  CUDA_LAUNCH_CHECK();
}

extern "C" int backend_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError(); /* no driver / no GPU: clear the sticky error, report none */
    return 0;
  }
  return n;
}

/* The CUDA backend is the one whose destroy is ours: names can be copied, functions not. */
extern "C" int backend_cuda_device_of(const Backend *be) {
  return be && be->destroy == cuda_destroy ? cuda_ctx((Backend *)be)->device : -1;
}

extern "C" void *backend_cuda_stream_of(const Backend *be) {
  return be && be->destroy == cuda_destroy ? (void *)cuda_ctx((Backend *)be)->stream : NULL;
}

extern "C" Backend *backend_cuda_create(int device) {
  int count = backend_cuda_device_count();
  if (count == 0) tv_die("device: cuda asked for, but no CUDA GPU is visible to this process");
  if (device < 0 || device >= count)
    tv_die("device: GPU %d asked for, but only %d CUDA GPU(s) are visible", device, count);
  CUDA_CHECK(cudaSetDevice(device));
  CudaContext *c = (CudaContext *)tv_calloc(1, sizeof(CudaContext));
  c->device = device;
  CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
  CUBLAS_CHECK(cublasCreate(&c->cublas));
  CUBLAS_CHECK(cublasSetStream(c->cublas, c->stream));
  /* f32 GEMMs stay f32 (LoRA and gradients); bf16 GEMMs use tensor cores by their types. */
  CUBLAS_CHECK(cublasSetMathMode(c->cublas, CUBLAS_DEFAULT_MATH));
  CUDA_CHECK(cudaMalloc(&c->partials, CUDA_REDUCE_BLOCKS * sizeof(double)));
  CUDA_CHECK(cudaMalloc(&c->result, sizeof(double)));

  Backend *be = (Backend *)tv_calloc(1, sizeof(Backend));
  be->name = "cuda";
  be->ctx = c;
  be->alloc = cuda_alloc;
  be->free = cuda_free;
  be->copy = cuda_copy;
  be->to_host = cuda_to_host;
  be->from_host = cuda_from_host;
  be->zero = cuda_zero;
  be->sync = cuda_sync;
  be->destroy = cuda_destroy;
  cuda_install_dense(be);
  cuda_install_norm(be);
  cuda_install_rope(be);
  cuda_install_attention(be);
  cuda_install_attention_cached(be);
  cuda_install_mlp(be);
  cuda_install_loss(be);
  cuda_install_adamw(be);
  return be;
}
