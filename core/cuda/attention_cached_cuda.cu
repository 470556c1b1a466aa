/* Attention of newly appended rows against a KV cache on the GPU (generation, forward only):
 * row i is position pos[i] of sequence seq[i] and attends to that sequence's cached
 * positions 0..pos[i]. One warp per (row, head), online softmax.
 * Twin of core/cpu/attention_cached_cpu.c. */
#include "attention_common.cuh"

__global__ static void attention_cached_kernel(AttnShape sh, const float *q, const float *kcache,
                                               const float *vcache, const int32_t *seq,
                                               const int32_t *pos, float *out, float scale) {
  int i = blockIdx.x, h = blockIdx.y;
  size_t qld = (size_t)sh.H * sh.Dh, kld = (size_t)sh.Hkv * sh.Dh;
  int g = h / (sh.H / sh.Hkv);
  size_t base = (size_t)seq[i] * sh.T * kld + (size_t)g * sh.Dh; /* sh.T is the capacity */
  float qr[ATT_PER_LANE], acc[ATT_PER_LANE];
  att_load(qr, q + (size_t)i * qld + (size_t)h * sh.Dh, sh.Dh);
  att_row(qr, kcache + base, vcache + base, kld, pos[i] + 1, sh.Dh, scale, acc);
  float *oi = out + (size_t)i * qld + (size_t)h * sh.Dh;
#pragma unroll
  for (int j = 0; j < ATT_PER_LANE; j++) {
    int e = (int)threadIdx.x + 32 * j;
    if (e < sh.Dh) oi[e] = acc[j];
  }
}

static void cuda_attention_cached(Backend *be, const AttnShape *shape, const float *q,
                                  const float *kcache, const float *vcache, const int32_t *seq,
                                  const int32_t *pos, float *out) {
  att_check_head_dim(shape->Dh);
  if (!shape->B) return;
  dim3 grid((unsigned)shape->B, (unsigned)shape->H);
  attention_cached_kernel<<<grid, 32, 0, cuda_ctx(be)->stream>>>(
      *shape, q, kcache, vcache, seq, pos, out, 1.0f / sqrtf((float)shape->Dh));
  CUDA_LAUNCH_CHECK();
}

void cuda_install_attention_cached(Backend *be) { be->attention_cached = cuda_attention_cached; }
