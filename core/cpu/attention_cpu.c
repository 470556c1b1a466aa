/* Causal grouped-query attention on the CPU, flash-style: forward keeps only the
 * log-sum-exp of each score row; backward recomputes the probabilities from it.
 * Query head h reads kv head h / (H / Hkv). dq, dk, dv are written.
 * Work is tiled by blocks of ATT_TILE query rows so the score products run as sgemm calls
 * (single-threaded inside our OpenMP tasks); only the diagonal tile computes masked scores. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "cpu_ops.h"

#define ATT_TILE 64

/* One head's queries and keys as causal_probs reads them: rows qld / kld floats apart. */
typedef struct {
  const float *q, *k;
  size_t qld, kld;
  int Dh;
  float scale; /* 1 / sqrt(Dh) */
} HeadQK;

/* S[rows, keys] = scale * Q[rows] K[0:keys]^T; P = exp(S - lse) with the causal mask,
 * row i being query position t0 + i. When lse is NULL it is computed (forward) into lse_out. */
static void causal_probs(float *P, const HeadQK *h, int t0, int rows, int keys, const float *lse,
                         float *lse_out) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keys, h->Dh, h->scale, h->q,
              (int)h->qld, h->k, (int)h->kld, 0.0f, P, keys);
  for (int i = 0; i < rows; i++) {
    float *p = P + (size_t)i * keys;
    int valid = t0 + i + 1; /* keys 0..t0+i are visible */
    if (lse) {
      cpu_exp_shift_sum(p, p, valid, lse[i]);
    } else {
      float mx = cpu_row_max(p, valid);
      double sum = cpu_exp_shift_sum(p, p, valid, mx);
      lse_out[i] = mx + (float)log(sum);
      float inv = (float)(1.0 / sum);
      for (int s = 0; s < valid; s++) p[s] *= inv;
    }
    for (int s = valid; s < keys; s++) p[s] = 0.0f;
  }
}

static void cpu_attention_forward(Backend *be, const AttnShape *shape, const float *q,
                                  const float *k, const float *v, float *out, float *lse) {
  int B = shape->B, T = shape->T, H = shape->H, Hkv = shape->Hkv, Dh = shape->Dh;
  int group = H / Hkv;
  float scale = 1.0f / sqrtf((float)Dh);
  size_t qld = (size_t)H * Dh, kld = (size_t)Hkv * Dh;
  int tiles = (T + ATT_TILE - 1) / ATT_TILE;
  cpu_reserve_scratch(be, (size_t)ATT_TILE * T);
#pragma omp parallel for collapse(3) schedule(dynamic, 1)
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++)
      for (int tile = 0; tile < tiles; tile++) {
        float *P = cpu_thread_scratch(be);
        int t0 = tile * ATT_TILE, rows = T - t0 < ATT_TILE ? T - t0 : ATT_TILE, keys = t0 + rows;
        const float *kb = k + (size_t)b * T * kld + (size_t)(h / group) * Dh;
        const float *vb = v + (size_t)b * T * kld + (size_t)(h / group) * Dh;
        const float *qt = q + ((size_t)b * T + t0) * qld + (size_t)h * Dh;
        float *ot = out + ((size_t)b * T + t0) * qld + (size_t)h * Dh;
        HeadQK qk = {.q = qt, .k = kb, .qld = qld, .kld = kld, .Dh = Dh, .scale = scale};
        causal_probs(P, &qk, t0, rows, keys, NULL, lse + ((size_t)b * H + h) * T + t0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, Dh, keys, 1.0f, P, keys, vb,
                    (int)kld, 0.0f, ot, (int)qld);
      }
}

/* With P = softmax(S), S = scale q k^T: dP = dout v^T, dS = P (dP - rowsum(dout * out)),
 * dq = scale dS k, dk = scale dS^T q, dv = P^T dout. Tasks own one kv head of one sequence,
 * so the query heads sharing it add into dk, dv without races. */
static void cpu_attention_backward(Backend *be, const AttnShape *shape, const AttnRecord *fwd,
                                   const float *dout, float *dq, float *dk, float *dv) {
  int B = shape->B, T = shape->T, H = shape->H, Hkv = shape->Hkv, Dh = shape->Dh;
  const float *q = fwd->q, *k = fwd->k, *v = fwd->v, *out = fwd->out, *lse = fwd->lse;
  int group = H / Hkv;
  float scale = 1.0f / sqrtf((float)Dh);
  size_t qld = (size_t)H * Dh, kld = (size_t)Hkv * Dh;
  int tiles = (T + ATT_TILE - 1) / ATT_TILE;
  cpu_reserve_scratch(be, 2 * (size_t)ATT_TILE * T + ATT_TILE);
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
  for (int b = 0; b < B; b++)
    for (int g = 0; g < Hkv; g++) {
      float *P = cpu_thread_scratch(be), *dS = P + (size_t)ATT_TILE * T;
      float *delta = dS + (size_t)ATT_TILE * T;
      const float *kb = k + (size_t)b * T * kld + (size_t)g * Dh;
      const float *vb = v + (size_t)b * T * kld + (size_t)g * Dh;
      float *dkb = dk + (size_t)b * T * kld + (size_t)g * Dh;
      float *dvb = dv + (size_t)b * T * kld + (size_t)g * Dh;
      for (int s = 0; s < T; s++) {
        memset(dkb + (size_t)s * kld, 0, (size_t)Dh * sizeof(float));
        memset(dvb + (size_t)s * kld, 0, (size_t)Dh * sizeof(float));
      }
      for (int h = g * group; h < (g + 1) * group; h++)
        for (int tile = 0; tile < tiles; tile++) {
          int t0 = tile * ATT_TILE, rows = T - t0 < ATT_TILE ? T - t0 : ATT_TILE, keys = t0 + rows;
          size_t qo = ((size_t)b * T + t0) * qld + (size_t)h * Dh;
          const float *lse_rows = lse + ((size_t)b * H + h) * T + t0;
          HeadQK qk = {.q = q + qo, .k = kb, .qld = qld, .kld = kld, .Dh = Dh, .scale = scale};
          causal_probs(P, &qk, t0, rows, keys, lse_rows, NULL);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keys, Dh, 1.0f, dout + qo,
                      (int)qld, vb, (int)kld, 0.0f, dS, keys);
          for (int i = 0; i < rows; i++) {
            const float *o = out + qo + (size_t)i * qld, *d = dout + qo + (size_t)i * qld;
            float s = 0;
            for (int j = 0; j < Dh; j++) s += o[j] * d[j];
            delta[i] = s;
          }
          for (int i = 0; i < rows; i++) {
            float *ds = dS + (size_t)i * keys;
            const float *p = P + (size_t)i * keys;
            for (int s = 0; s < keys; s++) ds[s] = p[s] * (ds[s] - delta[i]) * scale;
          }
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, Dh, keys, 1.0f, dS, keys,
                      kb, (int)kld, 0.0f, dq + qo, (int)qld);
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, keys, Dh, rows, 1.0f, dS, keys,
                      q + qo, (int)qld, 1.0f, dkb, (int)kld);
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, keys, Dh, rows, 1.0f, P, keys,
                      dout + qo, (int)qld, 1.0f, dvb, (int)kld);
        }
    }
}

void cpu_install_attention(Backend *be) {
  be->attention_forward = cpu_attention_forward;
  be->attention_backward = cpu_attention_backward;
}
