/* Causal grouped-query attention on the CPU, flash-style: forward keeps only the
 * log-sum-exp of each score row; backward recomputes the probabilities from it.
 * Query head h reads kv head h / (H / Hkv). dq, dk, dv are written. */
#include <math.h>
#include <string.h>

#include "../check.h"
#include "cpu_ops.h"

static inline float dot(const float *a, const float *b, int n) {
  float s = 0;
  for (int i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

static void cpu_attention_forward(Backend *be, float *out, float *lse, const float *q,
                                  const float *k, const float *v, int B, int T, int H, int Hkv,
                                  int Dh) {
  int group = H / Hkv;
  float scale = 1.0f / sqrtf((float)Dh);
  size_t qrow = (size_t)H * Dh, kvrow = (size_t)Hkv * Dh;
  cpu_reserve_scratch(be, (size_t)T);
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++) {
      float *p = cpu_thread_scratch(be);
      int g = h / group;
      const float *kb = k + (size_t)b * T * kvrow + (size_t)g * Dh;
      const float *vb = v + (size_t)b * T * kvrow + (size_t)g * Dh;
      for (int t = 0; t < T; t++) {
        const float *qt = q + ((size_t)b * T + t) * qrow + (size_t)h * Dh;
        float *ot = out + ((size_t)b * T + t) * qrow + (size_t)h * Dh;
        float mx = -INFINITY;
        for (int s = 0; s <= t; s++) {
          p[s] = dot(qt, kb + (size_t)s * kvrow, Dh) * scale;
          if (p[s] > mx) mx = p[s];
        }
        float sum = 0;
        for (int s = 0; s <= t; s++) {
          p[s] = expf(p[s] - mx);
          sum += p[s];
        }
        float inv = 1.0f / sum;
        memset(ot, 0, (size_t)Dh * sizeof(float));
        for (int s = 0; s <= t; s++) {
          const float *vs = vb + (size_t)s * kvrow;
          float w = p[s] * inv;
          for (int i = 0; i < Dh; i++) ot[i] += w * vs[i];
        }
        lse[((size_t)b * H + h) * T + t] = mx + logf(sum);
      }
    }
}

/* With P = softmax(S), S = scale q k^T: dP = dout v^T, dS = P (dP - rowsum(dout * out)),
 * dq = scale dS k, dk = scale dS^T q, dv = P^T dout. Tasks own one kv head of one sequence,
 * so the query heads sharing it add into dk, dv without races. */
static void cpu_attention_backward(Backend *be, float *dq, float *dk, float *dv,
                                   const float *dout, const float *out, const float *lse,
                                   const float *q, const float *k, const float *v, int B, int T,
                                   int H, int Hkv, int Dh) {
  int group = H / Hkv;
  float scale = 1.0f / sqrtf((float)Dh);
  size_t qrow = (size_t)H * Dh, kvrow = (size_t)Hkv * Dh;
  cpu_reserve_scratch(be, (size_t)T);
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
  for (int b = 0; b < B; b++)
    for (int g = 0; g < Hkv; g++) {
      float *ds = cpu_thread_scratch(be);
      const float *kb = k + (size_t)b * T * kvrow + (size_t)g * Dh;
      const float *vb = v + (size_t)b * T * kvrow + (size_t)g * Dh;
      float *dkb = dk + (size_t)b * T * kvrow + (size_t)g * Dh;
      float *dvb = dv + (size_t)b * T * kvrow + (size_t)g * Dh;
      for (int s = 0; s < T; s++) {
        memset(dkb + (size_t)s * kvrow, 0, (size_t)Dh * sizeof(float));
        memset(dvb + (size_t)s * kvrow, 0, (size_t)Dh * sizeof(float));
      }
      for (int h = g * group; h < (g + 1) * group; h++)
        for (int t = 0; t < T; t++) {
          size_t qo = ((size_t)b * T + t) * qrow + (size_t)h * Dh;
          const float *qt = q + qo, *dot_ = dout + qo;
          float *dqt = dq + qo;
          float row_lse = lse[((size_t)b * H + h) * T + t];
          float delta = dot(dot_, out + qo, Dh);
          for (int s = 0; s <= t; s++) {
            float p = expf(dot(qt, kb + (size_t)s * kvrow, Dh) * scale - row_lse);
            float dp = dot(dot_, vb + (size_t)s * kvrow, Dh);
            float *dvs = dvb + (size_t)s * kvrow;
            for (int i = 0; i < Dh; i++) dvs[i] += p * dot_[i];
            ds[s] = p * (dp - delta) * scale;
          }
          memset(dqt, 0, (size_t)Dh * sizeof(float));
          for (int s = 0; s <= t; s++) {
            const float *ks = kb + (size_t)s * kvrow;
            float *dks = dkb + (size_t)s * kvrow;
            float w = ds[s];
            for (int i = 0; i < Dh; i++) {
              dqt[i] += w * ks[i];
              dks[i] += w * qt[i];
            }
          }
        }
    }
}

void cpu_install_attention(Backend *be) {
  be->attention_forward = cpu_attention_forward;
  be->attention_backward = cpu_attention_backward;
}
