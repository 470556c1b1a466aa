/* AdamW update of one parameter block on the GPU (SPEC section 4 arithmetic, the CPU's
 * expression order). Twin of core/cpu/adamw_cpu.c. */
#include "../adamw_element.h"
#include "cuda_common.cuh"

__global__ static void adamw_kernel(float *p, const float *g, float *m, float *v, size_t n,
                                    AdamwScalars c) {
  float decay = 1.0f - c.lr * c.weight_decay;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    adamw_element(&p[i], g[i], &m[i], &v[i], &c, decay);
}

static void cuda_adamw(Backend *be, const AdamwBlock *block, const AdamwScalars *k) {
  if (!block->n) return;
  adamw_kernel<<<cuda_blocks_for(block->n, 256), 256, 0, cuda_ctx(be)->stream>>>(
      block->params, block->grads, block->m, block->v, block->n, *k);
  CUDA_LAUNCH_CHECK();
}

void cuda_install_adamw(Backend *be) { be->adamw = cuda_adamw; }
