/* Attention of newly appended rows against a KV cache, for generation: each row is one
 * query position of one sequence and attends to that sequence's cached positions up to and
 * including its own. Query head h reads kv head h / (H / Hkv). Forward only. */
#include <math.h>

#include "cpu_ops.h"

static void cpu_attention_cached(Backend *be, const AttnShape *shape, const float *q,
                                 const float *kcache, const float *vcache, const int32_t *seq,
                                 const int32_t *pos, float *out) {
  int N = shape->B, Tcap = shape->T, H = shape->H, Hkv = shape->Hkv, Dh = shape->Dh;
  int group = H / Hkv;
  float scale = 1.0f / sqrtf((float)Dh);
  size_t qld = (size_t)H * Dh, kld = (size_t)Hkv * Dh;
  cpu_reserve_scratch(be, (size_t)Tcap);
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
  for (int i = 0; i < N; i++)
    for (int h = 0; h < H; h++) {
      float *p = cpu_thread_scratch(be);
      int keys = pos[i] + 1;
      /* Rows of sequence seq[i] in the cache, at this query head's kv head. */
      size_t base = (size_t)seq[i] * Tcap * kld + (size_t)(h / group) * Dh;
      const float *qi = q + (size_t)i * qld + (size_t)h * Dh;
      for (int t = 0; t < keys; t++) {
        const float *kt = kcache + base + (size_t)t * kld;
        float dot = 0.0f;
        for (int e = 0; e < Dh; e++) dot += qi[e] * kt[e];
        p[t] = scale * dot;
      }
      float mx = cpu_row_max(p, keys);
      double sum = cpu_exp_shift_sum(p, p, keys, mx);
      float inv = (float)(1.0 / sum);
      float *oi = out + (size_t)i * qld + (size_t)h * Dh;
      for (int e = 0; e < Dh; e++) oi[e] = 0.0f;
      for (int t = 0; t < keys; t++) {
        const float *vt = vcache + base + (size_t)t * kld;
        float w = p[t] * inv;
        for (int e = 0; e < Dh; e++) oi[e] += w * vt[e];
      }
    }
}

void cpu_install_attention_cached(Backend *be) { be->attention_cached = cpu_attention_cached; }
