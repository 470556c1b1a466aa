/* Internal to the attention kernels: one warp owns one query row of one head and streams the
 * visible keys with an online softmax, so no T x T score matrix exists anywhere. Each lane
 * holds head-dim elements lane, lane + 32, ... (at most ATT_PER_LANE of them). */
#ifndef TV_ATTENTION_COMMON_CUH
#define TV_ATTENTION_COMMON_CUH

#include "cuda_common.cuh"

#define ATT_PER_LANE 8 /* head dims up to 256 */
#define ATT_MAX_HEAD_DIM (32 * ATT_PER_LANE)

__device__ static inline float att_warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/* Dot product of a lane-held row with a row of memory, summed over the warp. */
__device__ static inline float att_dot(const float reg[ATT_PER_LANE], const float *row, int Dh) {
  float s = 0;
#pragma unroll
  for (int j = 0; j < ATT_PER_LANE; j++) {
    int e = (int)(threadIdx.x & 31) + 32 * j;
    if (e < Dh) s += reg[j] * row[e];
  }
  return att_warp_sum(s);
}

__device__ static inline void att_load(float reg[ATT_PER_LANE], const float *row, int Dh) {
#pragma unroll
  for (int j = 0; j < ATT_PER_LANE; j++) {
    int e = (int)(threadIdx.x & 31) + 32 * j;
    reg[j] = e < Dh ? row[e] : 0.0f;
  }
}

/* Online softmax over keys 0..keys-1 of one head: out = sum_s softmax(scale q k_s) v_s;
 * returns the log-sum-exp of the scaled scores. */
__device__ static inline float att_row(const float q[ATT_PER_LANE], const float *k0,
                                       const float *v0, size_t kld, int keys, int Dh,
                                       float scale, float acc[ATT_PER_LANE]) {
  float m = -3.402823466e38f, l = 0.0f;
#pragma unroll
  for (int j = 0; j < ATT_PER_LANE; j++) acc[j] = 0.0f;
  for (int s = 0; s < keys; s++) {
    float score = scale * att_dot(q, k0 + (size_t)s * kld, Dh);
    float m_new = score > m ? score : m;
    float correction = expf(m - m_new), p = expf(score - m_new);
    l = l * correction + p;
    const float *vs = v0 + (size_t)s * kld;
#pragma unroll
    for (int j = 0; j < ATT_PER_LANE; j++) {
      int e = (int)(threadIdx.x & 31) + 32 * j;
      acc[j] = acc[j] * correction + (e < Dh ? p * vs[e] : 0.0f);
    }
    m = m_new;
  }
  float inv = 1.0f / l;
#pragma unroll
  for (int j = 0; j < ATT_PER_LANE; j++) acc[j] *= inv;
  return m + logf(l);
}

static inline void att_check_head_dim(int Dh) {
  TV_CHECK(Dh >= 1 && Dh <= ATT_MAX_HEAD_DIM, "CUDA attention supports head dims up to %d, got %d",
           ATT_MAX_HEAD_DIM, Dh);
}

#endif
