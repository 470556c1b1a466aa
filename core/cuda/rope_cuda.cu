/* Rotary position embedding on the GPU, half-split pairs (i, i + Dh/2) rotated by angle
 * t * freq_i, in place; backward is the inverse rotation. Twin of core/cpu/rope_cpu.c. */
#include "cuda_common.cuh"

/* Thread per pair: x is [B, T, nh, Dh]; cos/sin are [T, Dh/2]. */
__global__ static void rotate_kernel(float *x, const float *cos_t, const float *sin_t, int B,
                                     int T, int nh, int Dh, float sign) {
  int half = Dh / 2;
  size_t pairs = (size_t)B * T * nh * half;
  for (size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x; p < pairs;
       p += (size_t)gridDim.x * blockDim.x) {
    int i = (int)(p % half);
    size_t head_row = p / half; /* (b * T + t) * nh + h */
    int t = (int)((head_row / nh) % T);
    float *v = x + head_row * Dh;
    float c = cos_t[(size_t)t * half + i], sn = sign * sin_t[(size_t)t * half + i];
    float a = v[i], bb = v[i + half];
    v[i] = a * c - bb * sn;
    v[i + half] = bb * c + a * sn;
  }
}

static void rotate(Backend *be, float *x, const float *cos_t, const float *sin_t, int B, int T,
                   int nh, int Dh, float sign) {
  size_t pairs = (size_t)B * T * nh * (Dh / 2);
  if (!pairs) return;
  rotate_kernel<<<cuda_blocks_for(pairs, 256), 256, 0, cuda_ctx(be)->stream>>>(
      x, cos_t, sin_t, B, T, nh, Dh, sign);
  CUDA_LAUNCH_CHECK();
}

static void cuda_rope_forward(Backend *be, float *x, const float *cos_t, const float *sin_t,
                              int B, int T, int nh, int Dh) {
  rotate(be, x, cos_t, sin_t, B, T, nh, Dh, 1.0f);
}

static void cuda_rope_backward(Backend *be, float *dx, const float *cos_t, const float *sin_t,
                               int B, int T, int nh, int Dh) {
  rotate(be, dx, cos_t, sin_t, B, T, nh, Dh, -1.0f);
}

void cuda_install_rope(Backend *be) {
  be->rope_forward = cuda_rope_forward;
  be->rope_backward = cuda_rope_backward;
}
