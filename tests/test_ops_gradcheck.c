/* The kernels of the Backend table that have a backward (embedding, RMSNorm, RoPE,
 * attention, SwiGLU, cross-entropy, dropout), on the CPU backend, against small
 * double-precision reference functions written here (independent of core/cpu), and every
 * backward against central finite differences of those references.
 *
 * Method: scalar objective L = sum_i W_i * y_i with fixed random weights W. The kernel's
 * backward is fed dy = W; the reference gradient is the central difference of the double
 * reference L (step FD_STEP) at the same (float-representable) input point. Tolerances
 * (GRAD_RTOL, FWD_RTOL) are derived in ops_check.h. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "ops_check.h"
#include "rng.h"
#include "test_util.h"

/* ---------------------------------------------------------------- embedding */

static void test_embedding(Backend *be) {
  const int V = 10, D = 9, N = 7;
  const int32_t tok[7] = {3, 0, 9, 3, 5, 9, 1}; /* repeats, first and last row */
  float *table = hnew((size_t)V * D);
  fill(table, (size_t)V * D, -1, 1);
  float *d_table = dev_upload(be, table, (size_t)V * D);
  int32_t *d_tok = be->alloc(be, sizeof tok);
  be->from_host(be, d_tok, tok, sizeof tok);
  float *d_out = dev_filled(be, (size_t)N * D, GARBAGE);
  be->embedding_forward(be, d_out, weight_f32(d_table), d_tok, N, D);
  float *out = host_download(be, d_out, (size_t)N * D);
  int bad = 0;
  for (int n = 0; n < N; n++)
    for (int d = 0; d < D; d++)
      if (out[n * D + d] != table[tok[n] * D + d]) bad++; /* a copy: exact */
  EXPECT(bad == 0, "[%s] embedding_forward: %d of %d elements differ from table rows", g_label,
         bad, N * D);
  /* A bf16 table: each element is its bf16 value widened, which is exact. */
  uint16_t *t16 = malloc((size_t)V * D * sizeof(uint16_t));
  for (int i = 0; i < V * D; i++) t16[i] = tv_bf16_from_f32(table[i]);
  uint16_t *d_t16 = be->alloc(be, (size_t)V * D * sizeof(uint16_t));
  be->from_host(be, d_t16, t16, (size_t)V * D * sizeof(uint16_t));
  WeightRef ref16 = {.dtype = TV_BF16, .data = d_t16};
  be->embedding_forward(be, d_out, ref16, d_tok, N, D);
  free(out);
  out = host_download(be, d_out, (size_t)N * D);
  bad = 0;
  for (int n = 0; n < N; n++)
    for (int d = 0; d < D; d++)
      if (out[n * D + d] != tv_f32_from_bf16(t16[tok[n] * D + d])) bad++;
  EXPECT(bad == 0, "[%s] embedding_forward bf16: %d of %d elements differ from the widened rows",
         g_label, bad, N * D);
  be->free(be, d_t16);
  free(t16);
  be->free(be, d_table), be->free(be, d_tok), be->free(be, d_out);
  free(table), free(out);
}

/* ---------------------------------------------------------------- RMSNorm */

typedef struct {
  int N, D;
  double eps;
  double *x, *w, *W, *y, *inv;
} RmsCtx;

static void rms_ref(RmsCtx *c) {
  for (int n = 0; n < c->N; n++) {
    const double *x = c->x + (size_t)n * c->D;
    double ss = 0;
    for (int d = 0; d < c->D; d++) ss += x[d] * x[d];
    double r = 1.0 / sqrt(ss / c->D + c->eps);
    c->inv[n] = r;
    for (int d = 0; d < c->D; d++) c->y[(size_t)n * c->D + d] = x[d] * r * c->w[d];
  }
}

static double rms_obj(void *p) {
  RmsCtx *c = p;
  rms_ref(c);
  double L = 0;
  for (size_t i = 0; i < (size_t)c->N * c->D; i++) L += c->W[i] * c->y[i];
  return L;
}

static void rmsnorm_case(Backend *be, int N, int D, float eps) {
  size_t nd = (size_t)N * D;
  float *x = hnew(nd), *w = hnew(D), *W = hnew(nd), *dw0 = hnew(D);
  fill(x, nd, -2, 2);
  for (int n = 0; n < N; n++) /* rows of very different scale: inv_rms must be per row */
    for (int d = 0; d < D; d++) x[n * D + d] *= (float)(0.05 + 0.7 * n);
  fill(w, D, 0.5, 1.5);
  fill(W, nd, -1, 1);
  fill(dw0, D, -0.5, 0.5);

  RmsCtx c = {.N = N, .D = D, .eps = eps, .x = to_double(x, nd), .w = to_double(w, D),
              .W = to_double(W, nd), .y = dnew(nd), .inv = dnew(N)};
  rms_ref(&c);

  float *d_x = dev_upload(be, x, nd), *d_w = dev_upload(be, w, D);
  float *d_y = dev_filled(be, nd, GARBAGE), *d_inv = dev_filled(be, N, GARBAGE);
  be->rmsnorm_forward(be, d_y, d_inv, d_x, d_w, N, D, eps);
  float *y = host_download(be, d_y, nd), *inv = host_download(be, d_inv, N);
  EXPECT_REL(rel_err(y, c.y, nd, 1e-30), FWD_RTOL, "rmsnorm_forward y N=%d D=%d", N, D);
  EXPECT_REL(rel_err(inv, c.inv, N, 1e-30), FWD_RTOL, "rmsnorm_forward inv_rms N=%d D=%d", N, D);

  float *d_dy = dev_upload(be, W, nd), *d_dx = dev_filled(be, nd, GARBAGE);
  float *d_dw = dev_upload(be, dw0, D);
  be->rmsnorm_backward(be, d_dx, d_dw, d_dy, d_x, d_w, d_inv, N, D);
  float *dx = host_download(be, d_dx, nd), *dw = host_download(be, d_dw, D);

  double *gx = dnew(nd), *gw = dnew(D), *dw_inc = dnew(D);
  fd_grad(rms_obj, &c, c.x, nd, gx);
  fd_grad(rms_obj, &c, c.w, D, gw);
  for (int d = 0; d < D; d++) dw_inc[d] = (double)dw[d] - (double)dw0[d];
  EXPECT_REL(rel_err(dx, gx, nd, 1e-30), GRAD_RTOL, "rmsnorm_backward dx N=%d D=%d", N, D);
  /* dw ACCUMULATES: (dw after) - (dw before) must be the gradient. */
  EXPECT_REL(rel_err_dd(dw_inc, gw, D, 1e-30), GRAD_RTOL, "rmsnorm_backward dw += N=%d D=%d",
             N, D);

  /* dw == NULL is allowed and must give the same dx. */
  float *d_dx2 = dev_filled(be, nd, GARBAGE);
  be->rmsnorm_backward(be, d_dx2, NULL, d_dy, d_x, d_w, d_inv, N, D);
  float *dx2 = host_download(be, d_dx2, nd);
  EXPECT(memcmp(dx, dx2, nd * sizeof(float)) == 0, "[%s] rmsnorm_backward dx changes when dw "
         "is NULL", g_label);

  be->free(be, d_x), be->free(be, d_w), be->free(be, d_y), be->free(be, d_inv);
  be->free(be, d_dy), be->free(be, d_dx), be->free(be, d_dw), be->free(be, d_dx2);
  free(x), free(w), free(W), free(dw0), free(y), free(inv), free(dx), free(dw), free(dx2);
  free(c.x), free(c.w), free(c.W), free(c.y), free(c.inv), free(gx), free(gw), free(dw_inc);
}

static void test_rmsnorm(Backend *be) {
  rmsnorm_case(be, 6, 16, 1e-5f);
  rmsnorm_case(be, 3, 19, 1e-6f); /* odd width: vector tails */
  rmsnorm_case(be, 2, 8, 0.5f);   /* eps large enough to matter in the gradient */
}

/* ---------------------------------------------------------------- RoPE */

/* Hugging Face tables: inv_freq_j = theta^(-2j/Dh), angle = t * inv_freq_j; the full
 * cos/sin rows are these Dh/2 values repeated twice, so the kernel gets only [T, Dh/2]. */
static void rope_tables(int T, int Dh, double theta, float *cos_t, float *sin_t) {
  for (int t = 0; t < T; t++)
    for (int j = 0; j < Dh / 2; j++) {
      double ang = t * pow(theta, -2.0 * j / Dh);
      cos_t[t * (Dh / 2) + j] = (float)cos(ang);
      sin_t[t * (Dh / 2) + j] = (float)sin(ang);
    }
}

typedef struct {
  int B, T, nh, Dh;
  const float *cos_t, *sin_t;
  double *x, *W, *y;
} RopeCtx;

/* HF apply_rotary_pos_emb: y = x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]. */
static void rope_ref(RopeCtx *c) {
  int h = c->Dh / 2;
  for (int b = 0; b < c->B; b++)
    for (int t = 0; t < c->T; t++)
      for (int k = 0; k < c->nh; k++) {
        size_t o = (((size_t)b * c->T + t) * c->nh + k) * c->Dh;
        for (int i = 0; i < h; i++) {
          double cs = c->cos_t[t * h + i], sn = c->sin_t[t * h + i];
          double x1 = c->x[o + i], x2 = c->x[o + i + h];
          c->y[o + i] = x1 * cs - x2 * sn;
          c->y[o + i + h] = x2 * cs + x1 * sn;
        }
      }
}

static double rope_obj(void *p) {
  RopeCtx *c = p;
  rope_ref(c);
  double L = 0;
  for (size_t i = 0; i < (size_t)c->B * c->T * c->nh * c->Dh; i++) L += c->W[i] * c->y[i];
  return L;
}

static void test_rope(Backend *be) {
  const int B = 2, T = 5, nh = 3, Dh = 8, h = Dh / 2;
  size_t n = (size_t)B * T * nh * Dh, nt = (size_t)T * h;
  float *cs = hnew(nt), *sn = hnew(nt);
  rope_tables(T, Dh, 10000.0, cs, sn);
  float *d_cs = dev_upload(be, cs, nt), *d_sn = dev_upload(be, sn, nt);

  /* 1. Pairing: a one-hot e_i must come out with weight only on i and its partner
   * i +- Dh/2, as (cos, sin) for i < Dh/2 and (-sin, cos) for i >= Dh/2. */
  {
    int bad = 0;
    size_t n1 = (size_t)T * Dh; /* B = 1, nh = 1 */
    float *x = hnew(n1);
    float *d_x = be->alloc(be, n1 * sizeof(float));
    for (int i = 0; i < Dh; i++) {
      memset(x, 0, n1 * sizeof(float));
      for (int t = 0; t < T; t++) x[t * Dh + i] = 1.0f;
      be->from_host(be, d_x, x, n1 * sizeof(float));
      be->rope_forward(be, d_x, d_cs, d_sn, 1, T, 1, Dh);
      float *y = host_download(be, d_x, n1);
      for (int t = 0; t < T; t++) {
        int j = i % h, partner = i < h ? i + h : i - h;
        double c = cs[t * h + j], s = sn[t * h + j];
        for (int e = 0; e < Dh; e++) {
          double want = 0;
          if (e == i) want = c;
          else if (e == partner) want = i < h ? s : -s;
          if (fabs(y[t * Dh + e] - want) > 1e-6) {
            if (bad < 5)
              fprintf(stderr, "rope pairing: t=%d one-hot i=%d -> y[%d]=%g want %g\n", t, i, e,
                      y[t * Dh + e], want);
            bad++;
          }
        }
      }
      free(y);
    }
    EXPECT(bad == 0, "[%s] rope_forward does not rotate element i with i + Dh/2 (%d wrong)",
           g_label, bad);
    be->free(be, d_x);
    free(x);
  }

  /* 2. Forward against the reference, backward against finite differences. */
  float *x = hnew(n), *W = hnew(n);
  fill(x, n, -1, 1);
  fill(W, n, -1, 1);
  RopeCtx c = {.B = B, .T = T, .nh = nh, .Dh = Dh, .cos_t = cs, .sin_t = sn,
               .x = to_double(x, n), .W = to_double(W, n), .y = dnew(n)};
  rope_ref(&c);
  float *d_x = dev_upload(be, x, n);
  be->rope_forward(be, d_x, d_cs, d_sn, B, T, nh, Dh);
  float *y = host_download(be, d_x, n);
  EXPECT_REL(rel_err(y, c.y, n, 1e-30), FWD_RTOL, "rope_forward");

  float *d_g = dev_upload(be, W, n);
  be->rope_backward(be, d_g, d_cs, d_sn, B, T, nh, Dh);
  float *g = host_download(be, d_g, n);
  double *fd = dnew(n);
  fd_grad(rope_obj, &c, c.x, n, fd);
  EXPECT_REL(rel_err(g, fd, n, 1e-30), GRAD_RTOL, "rope_backward vs FD");

  /* 3. Adjoint: <rope(x), v> == <x, rope_backward(v)> for an independent v. The bound is
   * float rounding of a 2-term rotation, relative to sum |x| |v|. */
  float *v = hnew(n);
  fill(v, n, -1, 1);
  float *d_v = dev_upload(be, v, n);
  be->rope_backward(be, d_v, d_cs, d_sn, B, T, nh, Dh);
  float *bv = host_download(be, d_v, n);
  double lhs = 0, rhs = 0, mag = 0;
  for (size_t i = 0; i < n; i++) {
    lhs += (double)y[i] * v[i];
    rhs += (double)x[i] * bv[i];
    mag += fabs((double)x[i] * v[i]);
  }
  EXPECT_REL(fabs(lhs - rhs) / mag, 1e-6, "rope adjoint <rope(x),v> = %.9g vs <x,rope^T(v)> = "
             "%.9g", lhs, rhs);

  /* 4. Orthogonal: backward undoes forward. */
  be->rope_backward(be, d_x, d_cs, d_sn, B, T, nh, Dh);
  float *xx = host_download(be, d_x, n);
  double *xd = to_double(x, n);
  EXPECT_REL(rel_err(xx, xd, n, 1e-30), FWD_RTOL, "rope_backward(rope_forward(x)) == x");

  be->free(be, d_cs), be->free(be, d_sn), be->free(be, d_x), be->free(be, d_g);
  be->free(be, d_v);
  free(cs), free(sn), free(x), free(W), free(y), free(g), free(fd), free(v), free(bv), free(xx);
  free(xd), free(c.x), free(c.W), free(c.y);
}

/* ---------------------------------------------------------------- attention */

typedef struct {
  int B, T, H, Hkv, Dh;
  double *q, *k, *v, *W, *out, *lse;
} AttnCtx;

/* Causal softmax(q k^T / sqrt(Dh)) v; query head h reads kv head h / (H / Hkv), as
 * Hugging Face's repeat_kv (each kv head repeated H / Hkv times, consecutively). */
static void attn_ref(AttnCtx *c) {
  int rep = c->H / c->Hkv, Dh = c->Dh;
  double scale = 1.0 / sqrt((double)Dh), s[64];
  for (int b = 0; b < c->B; b++)
    for (int h = 0; h < c->H; h++) {
      int g = h / rep;
      for (int t = 0; t < c->T; t++) {
        const double *q = c->q + (((size_t)b * c->T + t) * c->H + h) * Dh;
        double m = -INFINITY;
        for (int j = 0; j <= t; j++) {
          const double *k = c->k + (((size_t)b * c->T + j) * c->Hkv + g) * Dh;
          double d = 0;
          for (int e = 0; e < Dh; e++) d += q[e] * k[e];
          s[j] = d * scale;
          if (s[j] > m) m = s[j];
        }
        double z = 0;
        for (int j = 0; j <= t; j++) z += exp(s[j] - m);
        double lse = m + log(z);
        c->lse[((size_t)b * c->H + h) * c->T + t] = lse;
        double *o = c->out + (((size_t)b * c->T + t) * c->H + h) * Dh;
        for (int e = 0; e < Dh; e++) o[e] = 0;
        for (int j = 0; j <= t; j++) {
          double p = exp(s[j] - lse);
          const double *v = c->v + (((size_t)b * c->T + j) * c->Hkv + g) * Dh;
          for (int e = 0; e < Dh; e++) o[e] += p * v[e];
        }
      }
    }
}

static double attn_obj(void *p) {
  AttnCtx *c = p;
  attn_ref(c);
  double L = 0;
  for (size_t i = 0; i < (size_t)c->B * c->T * c->H * c->Dh; i++) L += c->W[i] * c->out[i];
  return L;
}

static void attention_case(Backend *be, int B, int T, int H, int Hkv, int Dh) {
  size_t nq = (size_t)B * T * H * Dh, nk = (size_t)B * T * Hkv * Dh, nl = (size_t)B * H * T;
  float *q = hnew(nq), *k = hnew(nk), *v = hnew(nk), *W = hnew(nq);
  /* Scores spread over a few units so the softmax is far from uniform. */
  fill(q, nq, -1.5, 1.5);
  fill(k, nk, -1.5, 1.5);
  fill(v, nk, -1, 1);
  fill(W, nq, -1, 1);
  AttnCtx c = {.B = B, .T = T, .H = H, .Hkv = Hkv, .Dh = Dh, .q = to_double(q, nq),
               .k = to_double(k, nk), .v = to_double(v, nk), .W = to_double(W, nq),
               .out = dnew(nq), .lse = dnew(nl)};
  attn_ref(&c);

  float *d_q = dev_upload(be, q, nq), *d_k = dev_upload(be, k, nk), *d_v = dev_upload(be, v, nk);
  float *d_out = dev_filled(be, nq, GARBAGE), *d_lse = dev_filled(be, nl, GARBAGE);
  AttnShape shape = {.B = B, .T = T, .H = H, .Hkv = Hkv, .Dh = Dh};
  be->attention_forward(be, &shape, d_q, d_k, d_v, d_out, d_lse);
  float *out = host_download(be, d_out, nq), *lse = host_download(be, d_lse, nl);
  EXPECT_REL(rel_err(out, c.out, nq, 1e-30), FWD_RTOL, "attention_forward out H=%d Hkv=%d", H,
             Hkv);
  /* lse can be near 0 for the first row; floor 1 makes this an absolute 1e-5 there. */
  EXPECT_REL(rel_err(lse, c.lse, nl, 1.0), FWD_RTOL, "attention_forward lse H=%d Hkv=%d", H, Hkv);

  float *d_dout = dev_upload(be, W, nq);
  float *d_dq = dev_filled(be, nq, GARBAGE), *d_dk = dev_filled(be, nk, GARBAGE);
  float *d_dv = dev_filled(be, nk, GARBAGE);
  AttnRecord fwd = {.q = d_q, .k = d_k, .v = d_v, .out = d_out, .lse = d_lse};
  be->attention_backward(be, &shape, &fwd, d_dout, d_dq, d_dk, d_dv);
  float *dq = host_download(be, d_dq, nq), *dk = host_download(be, d_dk, nk);
  float *dv = host_download(be, d_dv, nk);
  double *gq = dnew(nq), *gk = dnew(nk), *gv = dnew(nk);
  fd_grad(attn_obj, &c, c.q, nq, gq);
  fd_grad(attn_obj, &c, c.k, nk, gk);
  fd_grad(attn_obj, &c, c.v, nk, gv);
  EXPECT_REL(rel_err(dq, gq, nq, 1e-30), GRAD_RTOL, "attention_backward dq H=%d Hkv=%d", H, Hkv);
  EXPECT_REL(rel_err(dk, gk, nk, 1e-30), GRAD_RTOL, "attention_backward dk H=%d Hkv=%d", H, Hkv);
  EXPECT_REL(rel_err(dv, gv, nk, 1e-30), GRAD_RTOL, "attention_backward dv H=%d Hkv=%d", H, Hkv);

  be->free(be, d_q), be->free(be, d_k), be->free(be, d_v), be->free(be, d_out);
  be->free(be, d_lse), be->free(be, d_dout), be->free(be, d_dq), be->free(be, d_dk);
  be->free(be, d_dv);
  free(q), free(k), free(v), free(W), free(out), free(lse), free(dq), free(dk), free(dv);
  free(gq), free(gk), free(gv);
  free(c.q), free(c.k), free(c.v), free(c.W), free(c.out), free(c.lse);
}

static void test_attention(Backend *be) {
  attention_case(be, 2, 5, 4, 2, 4); /* GQA, 2 query heads per kv head */
  attention_case(be, 2, 5, 4, 4, 4); /* plain multi-head */
  attention_case(be, 2, 5, 4, 1, 4); /* multi-query */
  attention_case(be, 1, 7, 2, 1, 6); /* other shapes */
}

/* ---------------------------------------------------------------- SwiGLU */

typedef struct {
  size_t n;
  double *gate, *up, *W;
} SwiCtx;

static double silu(double g) { return g / (1.0 + exp(-g)); }

static double swi_obj(void *p) {
  SwiCtx *c = p;
  double L = 0;
  for (size_t i = 0; i < c->n; i++) L += c->W[i] * silu(c->gate[i]) * c->up[i];
  return L;
}

static void test_swiglu(Backend *be) {
  const size_t n = 37; /* odd: vector tails */
  float *gate = hnew(n), *up = hnew(n), *W = hnew(n);
  fill(gate, n, -6, 6);
  fill(up, n, -2, 2);
  fill(W, n, -1, 1);
  SwiCtx c = {.n = n, .gate = to_double(gate, n), .up = to_double(up, n), .W = to_double(W, n)};
  double *ref = dnew(n);
  for (size_t i = 0; i < n; i++) ref[i] = silu(c.gate[i]) * c.up[i];

  float *d_g = dev_upload(be, gate, n), *d_u = dev_upload(be, up, n);
  float *d_o = dev_filled(be, n, GARBAGE);
  be->swiglu_forward(be, d_o, d_g, d_u, n);
  float *out = host_download(be, d_o, n);
  EXPECT_REL(rel_err(out, ref, n, 1e-30), FWD_RTOL, "swiglu_forward");

  float *d_dy = dev_upload(be, W, n);
  float *d_dg = dev_filled(be, n, GARBAGE), *d_du = dev_filled(be, n, GARBAGE);
  be->swiglu_backward(be, d_dg, d_du, d_dy, d_g, d_u, n);
  float *dg = host_download(be, d_dg, n), *du = host_download(be, d_du, n);
  double *fg = dnew(n), *fu = dnew(n);
  fd_grad(swi_obj, &c, c.gate, n, fg);
  fd_grad(swi_obj, &c, c.up, n, fu);
  EXPECT_REL(rel_err(dg, fg, n, 1e-30), GRAD_RTOL, "swiglu_backward dgate");
  EXPECT_REL(rel_err(du, fu, n, 1e-30), GRAD_RTOL, "swiglu_backward dup");

  be->free(be, d_g), be->free(be, d_u), be->free(be, d_o), be->free(be, d_dy);
  be->free(be, d_dg), be->free(be, d_du);
  free(gate), free(up), free(W), free(ref), free(out), free(dg), free(du), free(fg), free(fu);
  free(c.gate), free(c.up), free(c.W);
}

/* ---------------------------------------------------------------- cross-entropy */

typedef struct {
  int N, V;
  double scale;
  const int32_t *tgt;
  double *logits;
} CeCtx;

static double ce_sum(const CeCtx *c) { /* sum over non-ignored rows, stable log-sum-exp */
  double s = 0;
  for (int n = 0; n < c->N; n++) {
    if (c->tgt[n] < 0) continue;
    const double *z = c->logits + (size_t)n * c->V;
    double m = z[0], acc = 0;
    for (int j = 1; j < c->V; j++)
      if (z[j] > m) m = z[j];
    for (int j = 0; j < c->V; j++) acc += exp(z[j] - m);
    s += m + log(acc) - z[c->tgt[n]];
  }
  return s;
}

static double ce_obj(void *p) {
  CeCtx *c = p;
  return c->scale * ce_sum(c);
}

static void cross_entropy_case(Backend *be, int N, int V, const int32_t *tgt, float scale,
                               const char *what) {
  size_t nv = (size_t)N * V;
  float *z = hnew(nv);
  fill(z, nv, -3, 3);
  /* Row 3 (when present) sits near +100, where exp() overflows float: a kernel without
   * the max shift returns inf/nan there. */
  if (N > 3)
    for (int j = 0; j < V; j++) z[3 * V + j] += 100.0f;
  CeCtx c = {.N = N, .V = V, .scale = scale, .tgt = tgt, .logits = to_double(z, nv)};
  double want = ce_sum(&c);
  double *g = dnew(nv);
  fd_grad(ce_obj, &c, c.logits, nv, g);

  float *d_z = dev_upload(be, z, nv), *d_dz = dev_filled(be, nv, GARBAGE);
  int32_t *d_t = be->alloc(be, (size_t)N * sizeof(int32_t));
  be->from_host(be, d_t, tgt, (size_t)N * sizeof(int32_t));
  double got = be->cross_entropy(be, d_z, d_dz, d_t, N, V, scale);
  float *dz = host_download(be, d_dz, nv), *z_after = host_download(be, d_z, nv);
  EXPECT(memcmp(z_after, z, nv * sizeof(float)) == 0,
         "[%s] cross_entropy %s: logits changed although dlogits is a separate buffer", g_label,
         what);
  /* dlogits == NULL: loss only, same value. */
  double got_null = be->cross_entropy(be, d_z, NULL, d_t, N, V, scale);
  EXPECT(got_null == got, "[%s] cross_entropy %s: loss %.17g with dlogits NULL, %.17g without",
         g_label, what, got_null, got);
  /* In place (dlogits == logits) gives the same gradient. */
  double got_inplace = be->cross_entropy(be, d_z, d_z, d_t, N, V, scale);
  float *dz_inplace = host_download(be, d_z, nv);
  EXPECT(got_inplace == got && memcmp(dz_inplace, dz, nv * sizeof(float)) == 0,
         "[%s] cross_entropy %s: in-place result differs", g_label, what);

  /* The returned sum is unscaled and over non-ignored rows only. */
  EXPECT(isfinite(got) && fabs(got - want) <= FWD_RTOL * fabs(want) + 1e-6,
         "[%s] cross_entropy %s: returned %.9g want %.9g", g_label, what, got, want);
  EXPECT_REL(rel_err(dz, g, nv, 1e-30), GRAD_RTOL, "cross_entropy dlogits %s (scale %g)", what,
             scale);
  int nonzero_ignored = 0;
  for (int n = 0; n < N; n++)
    if (tgt[n] < 0)
      for (int j = 0; j < V; j++) nonzero_ignored += dz[(size_t)n * V + j] != 0.0f;
  EXPECT(nonzero_ignored == 0, "[%s] cross_entropy %s: %d gradient entries of ignored rows are "
         "not exactly 0", g_label, what, nonzero_ignored);

  be->free(be, d_z), be->free(be, d_dz), be->free(be, d_t);
  free(z), free(dz), free(z_after), free(dz_inplace), free(g), free(c.logits);
}

static void test_cross_entropy(Backend *be) {
  const int32_t t1[6] = {3, -1, 0, 10, -1, 7};
  cross_entropy_case(be, 6, 11, t1, 0.25f, "mixed ignored");
  const int32_t t2[5] = {1, 2, 0, 4, 4};
  cross_entropy_case(be, 5, 5, t2, 1.0f, "none ignored");
  const int32_t t3[4] = {-1, -1, -100, -1};
  cross_entropy_case(be, 4, 9, t3, 0.5f, "all ignored");
  const int32_t t4[3] = {0, 300, 511}; /* wider vocabulary */
  cross_entropy_case(be, 3, 512, t4, -0.1f, "V=512 negative scale");
}

/* ---------------------------------------------------------------- dropout */

typedef struct {
  int N, C;
  float p;
  uint64_t seed, stream;
  int64_t row_offset;
  double *x, *W;
} DropCtx;

/* The documented mask (core/backend.h): element i = (row_offset + n) * C + c is kept when
 * u_i >= p, u_i = word (i % 4) of philox4x32(seed, stream, i / 4) as a 24-bit uniform.
 * "24 bits" is read as the top 24 bits, w >> 8, the same as rng_uniform_at. */
static int drop_keep(uint64_t seed, uint64_t stream, uint64_t i, float p) {
  uint32_t w[4];
  philox4x32(seed, stream, i / 4, w);
  float u = (float)(w[i % 4] >> 8) * (1.0f / 16777216.0f);
  return u >= p;
}

static double drop_obj(void *pp) {
  DropCtx *c = pp;
  double L = 0;
  for (size_t i = 0; i < (size_t)c->N * c->C; i++)
    if (drop_keep(c->seed, c->stream, (uint64_t)(c->row_offset * c->C) + i, c->p))
      L += c->W[i] * c->x[i] / (1.0 - c->p);
  return L;
}

static float *run_dropout(Backend *be, const float *x, int N, int C, float p, uint64_t seed,
                          uint64_t stream, int64_t row_offset) {
  size_t n = (size_t)N * C;
  float *d_x = dev_upload(be, x, n), *d_o = dev_filled(be, n, GARBAGE);
  be->dropout(be, d_o, d_x, N, C, p, seed, stream, row_offset);
  float *out = host_download(be, d_o, n);
  be->free(be, d_x), be->free(be, d_o);
  return out;
}

static void test_dropout(Backend *be) {
  const int N = 100, C = 1000;
  const size_t n = (size_t)N * C;
  const uint64_t seed = 77, stream = rng_stream_id(RNG_TAG_DROPOUT, 1, 2, 3);
  float *x = hnew(n);
  fill(x, n, 0.5, 1.5); /* never 0, so out == 0 means dropped */

  /* p = 0 is the identity, bit for bit. */
  float *o0 = run_dropout(be, x, N, C, 0.0f, seed, stream, 0);
  EXPECT(memcmp(o0, x, n * sizeof(float)) == 0, "[%s] dropout with p = 0 is not the identity",
         g_label);
  free(o0);

  const float ps[2] = {0.1f, 0.5f};
  for (int pi = 0; pi < 2; pi++) {
    float p = ps[pi];
    float *o1 = run_dropout(be, x, N, C, p, seed, stream, 0);
    float *o2 = run_dropout(be, x, N, C, p, seed, stream, 0);
    float *o3 = run_dropout(be, x, N, C, p, seed, stream + 1, 0);
    float *o4 = run_dropout(be, x, N, C, p, seed + 1, stream, 0);
    EXPECT(memcmp(o1, o2, n * sizeof(float)) == 0, "[%s] dropout p=%g: same seed/stream gave "
           "a different result", g_label, p);
    size_t kept = 0, diff_stream = 0, diff_seed = 0, bad_value = 0, bad_mask = 0;
    for (size_t i = 0; i < n; i++) {
      int k1 = o1[i] != 0.0f;
      kept += k1;
      diff_stream += k1 != (o3[i] != 0.0f);
      diff_seed += k1 != (o4[i] != 0.0f);
      bad_mask += k1 != drop_keep(seed, stream, i, p);
      /* Kept values are x / (1 - p); x * (1 / (1 - p)) is also accepted: 4 ulp. */
      if (k1 && fabs(o1[i] - x[i] / (1.0 - p)) > 4 * FLT_EPSILON * fabs(x[i] / (1.0 - p)))
        bad_value++;
    }
    /* Kept fraction: binomial with sd sqrt(p (1 - p) / n) (9.5e-4 at p = 0.1, 1.6e-3 at
     * p = 0.5 for n = 100000); bound 5 sd, false-failure probability < 1e-6. */
    double frac = (double)kept / n, sd = sqrt(p * (1.0 - p) / n);
    EXPECT(fabs(frac - (1.0 - p)) <= 5 * sd, "[%s] dropout p=%g: kept fraction %.5f, want %.5f "
           "+- %.5f (5 sd)", g_label, p, frac, 1.0 - p, 5 * sd);
    EXPECT(bad_value == 0, "[%s] dropout p=%g: %zu kept values are not x / (1 - p)", g_label, p,
           bad_value);
    EXPECT(bad_mask == 0, "[%s] dropout p=%g: %zu mask bits differ from rng_uniform_at(seed, "
           "stream, i / 4) word i %% 4 >= p", g_label, p, bad_mask);
    /* Independent masks differ in a fraction 2p(1-p) of places (18 % / 50 %); half that
     * is a safe floor, 0 would mean the stream (seed) is ignored. */
    EXPECT(diff_stream > n * p * (1 - p), "[%s] dropout p=%g: another stream changes only %zu "
           "of %zu mask bits", g_label, p, diff_stream, n);
    EXPECT(diff_seed > n * p * (1 - p), "[%s] dropout p=%g: another seed changes only %zu of "
           "%zu mask bits", g_label, p, diff_seed, n);

    /* In place (out == x) gives the same result. */
    float *d_x = dev_upload(be, x, n);
    be->dropout(be, d_x, d_x, N, C, p, seed, stream, 0);
    float *oi = host_download(be, d_x, n);
    EXPECT(memcmp(oi, o1, n * sizeof(float)) == 0, "[%s] dropout p=%g in place differs",
           g_label, p);
    be->free(be, d_x);
    free(o1), free(o2), free(o3), free(o4), free(oi);
  }

  /* Micro-batches: rows [r0, r1) run with row_offset r0 must reproduce the same rows of
   * the whole batch. C = 13 puts the split inside a Philox block of 4 words. */
  {
    const int nb = 10, cb = 13, splits[3] = {0, 3, 10};
    const float p = 0.4f;
    float *xb = hnew(nb * cb);
    fill(xb, nb * cb, 0.5, 1.5);
    float *whole = run_dropout(be, xb, nb, cb, p, seed, stream, 0);
    int bad = 0;
    for (int s = 0; s < 2; s++) {
      int r0 = splits[s], rows = splits[s + 1] - r0;
      float *part = run_dropout(be, xb + r0 * cb, rows, cb, p, seed, stream, r0);
      bad += memcmp(part, whole + r0 * cb, (size_t)rows * cb * sizeof(float)) != 0;
      free(part);
    }
    EXPECT(bad == 0, "[%s] dropout with row_offset differs from the same rows of the whole "
           "batch", g_label);
    free(xb), free(whole);
  }

  /* Backward = the same mask applied to dy: dropout(dy) with the same seed, stream and
   * row_offset must be the FD gradient of the reference (which uses the documented mask). */
  {
    const int n2 = 4, c2 = 9;
    const int64_t off = 5;
    const float p = 0.3f;
    float *xs = hnew(n2 * c2), *W = hnew(n2 * c2);
    fill(xs, n2 * c2, -1, 1), fill(W, n2 * c2, -1, 1);
    DropCtx c = {.N = n2, .C = c2, .p = p, .seed = seed, .stream = stream, .row_offset = off,
                 .x = to_double(xs, n2 * c2), .W = to_double(W, n2 * c2)};
    double *g = dnew(n2 * c2);
    fd_grad(drop_obj, &c, c.x, n2 * c2, g);
    float *dx = run_dropout(be, W, n2, c2, p, seed, stream, off);
    int dropped = 0;
    for (int i = 0; i < n2 * c2; i++) dropped += g[i] == 0.0;
    EXPECT(dropped > 0, "[%s] dropout gradient case drops nothing: test would be vacuous",
           g_label);
    EXPECT_REL(rel_err(dx, g, n2 * c2, 1e-30), GRAD_RTOL, "dropout backward (same mask) vs FD");
    free(xs), free(W), free(g), free(dx), free(c.x), free(c.W);
  }
  free(x);
}

/* ---------------------------------------------------------------- main */

static void run_all(Backend *be) {
  test_embedding(be);
  test_rmsnorm(be);
  test_rope(be);
  test_attention(be);
  test_swiglu(be);
  test_cross_entropy(be);
  test_dropout(be);
}

int main(void) {
  run_on_cpu_backends(run_all);
  return tv_test_report("test_ops_gradcheck");
}
