/* Causal grouped-query attention on the GPU, forward and backward, without a T x T matrix:
 * forward streams keys with an online softmax and keeps the log-sum-exp; backward recomputes
 * each probability from it. Query head h reads kv head h / (H / Hkv). dq, dk, dv are written.
 * One warp per (sequence, head, query row); dk and dv gather over query rows and heads of a
 * group with atomic adds (their summation order, and so their last bits, vary run to run).
 * Twin of core/cpu/attention_cpu.c. */
#include "attention_common.cuh"

__global__ static void attention_forward_kernel(AttnShape sh, const float *q, const float *k,
                                                const float *v, float *out, float *lse,
                                                float scale) {
  int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  size_t qld = (size_t)sh.H * sh.Dh, kld = (size_t)sh.Hkv * sh.Dh;
  int g = h / (sh.H / sh.Hkv);
  size_t qo = ((size_t)b * sh.T + t) * qld + (size_t)h * sh.Dh;
  size_t ko = (size_t)b * sh.T * kld + (size_t)g * sh.Dh;
  float qr[ATT_PER_LANE], acc[ATT_PER_LANE];
  att_load(qr, q + qo, sh.Dh);
  float row_lse = att_row(qr, k + ko, v + ko, kld, t + 1, sh.Dh, scale, acc);
#pragma unroll
  for (int j = 0; j < ATT_PER_LANE; j++) {
    int e = (int)threadIdx.x + 32 * j;
    if (e < sh.Dh) out[qo + e] = acc[j];
  }
  if (threadIdx.x == 0) lse[((size_t)b * sh.H + h) * sh.T + t] = row_lse;
}

/* P_s = exp(scale q k_s - lse), dS_s = P_s (dout . v_s - dout . out) scale;
 * dq = sum_s dS_s k_s, dk_s += dS_s q, dv_s += P_s dout. */
__global__ static void attention_backward_kernel(AttnShape sh, AttnRecord fwd, const float *dout,
                                                 float *dq, float *dk, float *dv, float scale) {
  int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  size_t qld = (size_t)sh.H * sh.Dh, kld = (size_t)sh.Hkv * sh.Dh;
  int g = h / (sh.H / sh.Hkv);
  size_t qo = ((size_t)b * sh.T + t) * qld + (size_t)h * sh.Dh;
  size_t ko = (size_t)b * sh.T * kld + (size_t)g * sh.Dh;
  float qr[ATT_PER_LANE], dr[ATT_PER_LANE], orow[ATT_PER_LANE], dqr[ATT_PER_LANE];
  att_load(qr, fwd.q + qo, sh.Dh);
  att_load(dr, dout + qo, sh.Dh);
  att_load(orow, fwd.out + qo, sh.Dh);
  float delta = 0;
#pragma unroll
  for (int j = 0; j < ATT_PER_LANE; j++) {
    delta += dr[j] * orow[j];
    dqr[j] = 0.0f;
  }
  delta = att_warp_sum(delta);
  float row_lse = fwd.lse[((size_t)b * sh.H + h) * sh.T + t];
  for (int s = 0; s <= t; s++) {
    const float *ks = fwd.k + ko + (size_t)s * kld, *vs = fwd.v + ko + (size_t)s * kld;
    float p = expf(scale * att_dot(qr, ks, sh.Dh) - row_lse);
    float ds = p * (att_dot(dr, vs, sh.Dh) - delta) * scale;
#pragma unroll
    for (int j = 0; j < ATT_PER_LANE; j++) {
      int e = (int)threadIdx.x + 32 * j;
      if (e < sh.Dh) {
        dqr[j] += ds * ks[e];
        atomicAdd(dk + ko + (size_t)s * kld + e, ds * qr[j]);
        atomicAdd(dv + ko + (size_t)s * kld + e, p * dr[j]);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < ATT_PER_LANE; j++) {
    int e = (int)threadIdx.x + 32 * j;
    if (e < sh.Dh) dq[qo + e] = dqr[j];
  }
}

static void cuda_attention_forward(Backend *be, const AttnShape *shape, const float *q,
                                   const float *k, const float *v, float *out, float *lse) {
  att_check_head_dim(shape->Dh);
  if (!shape->B || !shape->T) return;
  dim3 grid((unsigned)shape->T, (unsigned)shape->H, (unsigned)shape->B);
  attention_forward_kernel<<<grid, 32, 0, cuda_ctx(be)->stream>>>(*shape, q, k, v, out, lse,
                                                                  1.0f / sqrtf((float)shape->Dh));
  CUDA_LAUNCH_CHECK();
}

static void cuda_attention_backward(Backend *be, const AttnShape *shape, const AttnRecord *fwd,
                                    const float *dout, float *dq, float *dk, float *dv) {
  att_check_head_dim(shape->Dh);
  if (!shape->B || !shape->T) return;
  cudaStream_t st = cuda_ctx(be)->stream;
  size_t kv_bytes = (size_t)shape->B * shape->T * shape->Hkv * shape->Dh * sizeof(float);
  CUDA_CHECK(cudaMemsetAsync(dk, 0, kv_bytes, st)); /* written: the kernel adds into zero */
  CUDA_CHECK(cudaMemsetAsync(dv, 0, kv_bytes, st));
  dim3 grid((unsigned)shape->T, (unsigned)shape->H, (unsigned)shape->B);
  attention_backward_kernel<<<grid, 32, 0, st>>>(*shape, *fwd, dout, dq, dk, dv,
                                                 1.0f / sqrtf((float)shape->Dh));
  CUDA_LAUNCH_CHECK();
}

void cuda_install_attention(Backend *be) {
  be->attention_forward = cuda_attention_forward;
  be->attention_backward = cuda_attention_backward;
}
