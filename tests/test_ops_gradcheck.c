/* Every kernel of the Backend table on the CPU backend against small double-precision
 * reference functions written here (independent of core/cpu), and every backward against
 * central finite differences of those references.
 *
 * Method: scalar objective L = sum_i W_i * y_i with fixed random weights W. The kernel's
 * backward is fed dy = W; the reference gradient is the central difference of the double
 * reference L (step FD_STEP) at the same (float-representable) input point.
 *
 * Tolerances (all as max_i |got_i - want_i| / max(max_i |want_i|, floor)):
 *   GRAD_RTOL 1e-3  float32 analytic gradient vs double FD. The kernel's own rounding is
 *                   ~1e-7 per operation and accumulates over at most tens of terms here
 *                   (<1e-5); the FD error is O(h^2 f''') + O(eps_double |L| / h) ~ 1e-9.
 *                   A formula error (missing term, wrong sign, wrong head) is O(1).
 *   FWD_RTOL  1e-5  float32 forward vs double reference forward: a few float roundings
 *                   (2^-24 = 6e-8 each) over reductions of <= 40 terms.
 * gemm/axpy/scale/add_bias/adamw use per-element a-priori float error bounds instead,
 * stated where they are used. */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "rng.h"
#include "test_util.h"

#define GRAD_RTOL 1e-3
#define FWD_RTOL 1e-5
#define FD_STEP 1e-6
#define GARBAGE 777.0f /* pre-fill of "written" outputs: an accumulating kernel is caught */

/* ---------------------------------------------------------------- helpers */

static uint64_t g_seed = 0x1234abcd5678ef01ull;

static double urand(void) { /* splitmix64 -> [0, 1); test inputs only */
  uint64_t z = (g_seed += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static void fill(float *x, size_t n, double lo, double hi) {
  for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * urand());
}

static float *hnew(size_t n) { return calloc(n ? n : 1, sizeof(float)); }
static double *dnew(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

static double *to_double(const float *x, size_t n) {
  double *d = dnew(n);
  for (size_t i = 0; i < n; i++) d[i] = x[i];
  return d;
}

static float *dev_upload(Backend *be, const float *h, size_t n) {
  float *d = be->alloc(be, n * sizeof(float));
  be->from_host(be, d, h, n * sizeof(float));
  return d;
}

static float *dev_filled(Backend *be, size_t n, float value) {
  float *h = hnew(n);
  for (size_t i = 0; i < n; i++) h[i] = value;
  float *d = dev_upload(be, h, n);
  free(h);
  return d;
}

static float *host_download(Backend *be, const float *d, size_t n) {
  float *h = hnew(n);
  be->sync(be);
  be->to_host(be, h, d, n * sizeof(float));
  return h;
}

/* Like tv_max_rel_err, but any non-finite value counts as an infinite error (a NaN
 * would otherwise compare false and pass silently). */
static double rel_err_dd(const double *a, const double *b, size_t n, double floor_) {
  double num = 0, den = floor_;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
    double d = fabs(a[i] - b[i]);
    if (d > num) num = d;
    if (fabs(b[i]) > den) den = fabs(b[i]);
  }
  return num / den;
}

static double rel_err(const float *a, const double *b, size_t n, double floor_) {
  double *ad = to_double(a, n);
  double e = rel_err_dd(ad, b, n, floor_);
  free(ad);
  return e;
}

/* One counted check with a formatted label; prints the measured error when TV_VERBOSE
 * is set so the margins can be read off a passing run. */
static const char *g_label = "";
static int g_verbose = 0;
static void expect_rel_at(int line, double err, double tol, const char *fmt, ...) {
  char what[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  tv_test_checks++;
  if (!(err <= tol)) {
    tv_test_failures++;
    fprintf(stderr, "%s:%d: FAILED [%s] %s: rel err %.3g > tol %.1g\n", __FILE__, line,
            g_label, what, err, tol);
  } else if (g_verbose) {
    printf("  ok [%s] %-48s rel err %.3g (tol %.1g)\n", g_label, what, err, tol);
  }
}
#define EXPECT_REL(err, tol, ...) expect_rel_at(__LINE__, (err), (tol), __VA_ARGS__)

/* Central differences of f (which reads *x among its inputs) with respect to x[0..n). */
typedef double (*Objective)(void *ctx);
static void fd_grad(Objective f, void *ctx, double *x, size_t n, double *g) {
  for (size_t i = 0; i < n; i++) {
    double save = x[i];
    x[i] = save + FD_STEP;
    double fp = f(ctx);
    x[i] = save - FD_STEP;
    double fm = f(ctx);
    x[i] = save;
    g[i] = (fp - fm) / (2 * FD_STEP);
  }
}


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
  be->embedding_forward(be, d_out, d_table, d_tok, N, D);
  float *out = host_download(be, d_out, (size_t)N * D);
  int bad = 0;
  for (int n = 0; n < N; n++)
    for (int d = 0; d < D; d++)
      if (out[n * D + d] != table[tok[n] * D + d]) bad++; /* a copy: exact */
  EXPECT(bad == 0, "[%s] embedding_forward: %d of %d elements differ from table rows", g_label,
         bad, N * D);
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

  RmsCtx c = {N, D, eps, to_double(x, nd), to_double(w, D), to_double(W, nd), dnew(nd), dnew(N)};
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
  RopeCtx c = {B, T, nh, Dh, cs, sn, to_double(x, n), to_double(W, n), dnew(n)};
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
  AttnCtx c = {B, T, H, Hkv, Dh, to_double(q, nq), to_double(k, nk), to_double(v, nk),
               to_double(W, nq), dnew(nq), dnew(nl)};
  attn_ref(&c);

  float *d_q = dev_upload(be, q, nq), *d_k = dev_upload(be, k, nk), *d_v = dev_upload(be, v, nk);
  float *d_out = dev_filled(be, nq, GARBAGE), *d_lse = dev_filled(be, nl, GARBAGE);
  be->attention_forward(be, d_out, d_lse, d_q, d_k, d_v, B, T, H, Hkv, Dh);
  float *out = host_download(be, d_out, nq), *lse = host_download(be, d_lse, nl);
  EXPECT_REL(rel_err(out, c.out, nq, 1e-30), FWD_RTOL, "attention_forward out H=%d Hkv=%d", H,
             Hkv);
  /* lse can be near 0 for the first row; floor 1 makes this an absolute 1e-5 there. */
  EXPECT_REL(rel_err(lse, c.lse, nl, 1.0), FWD_RTOL, "attention_forward lse H=%d Hkv=%d", H, Hkv);

  float *d_dout = dev_upload(be, W, nq);
  float *d_dq = dev_filled(be, nq, GARBAGE), *d_dk = dev_filled(be, nk, GARBAGE);
  float *d_dv = dev_filled(be, nk, GARBAGE);
  be->attention_backward(be, d_dq, d_dk, d_dv, d_dout, d_out, d_lse, d_q, d_k, d_v, B, T, H, Hkv,
                         Dh);
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
  SwiCtx c = {n, to_double(gate, n), to_double(up, n), to_double(W, n)};
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
  CeCtx c = {N, V, scale, tgt, to_double(z, nv)};
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

/* ---------------------------------------------------------------- gemm */

/* C = alpha op(A) op(B) + beta C against a naive double loop, row-major with padded
 * leading dimensions. Per element the bound is the classic dot-product bound
 * |fl(s) - s| <= K u sum_k |a_ik b_kj| (u = 2^-24), widened to (K + 3) FLT_EPSILON to
 * cover the alpha/beta roundings and any summation order or FMA use. Padding columns of
 * C must not be touched. */
static void gemm_case(Backend *be, int ta, int tb, int M, int N, int K, float alpha, float beta,
                      int pad) {
  int ar = ta ? K : M, ac = ta ? M : K, lda = ac + pad;
  int br = tb ? N : K, bc = tb ? K : N, ldb = bc + pad;
  int ldc = N + pad;
  size_t na = (size_t)ar * lda, nb = (size_t)br * ldb, nc = (size_t)M * ldc;
  float *A = hnew(na), *Bm = hnew(nb), *C = hnew(nc);
  fill(A, na, -1, 1);
  fill(Bm, nb, -1, 1);
  fill(C, nc, -1, 1);
  const float sentinel = 12345.0f;
  for (int i = 0; i < M; i++)
    for (int j = N; j < ldc; j++) C[(size_t)i * ldc + j] = sentinel;

  float *d_a = dev_upload(be, A, na), *d_b = dev_upload(be, Bm, nb), *d_c = dev_upload(be, C, nc);
  be->gemm(be, ta, tb, M, N, K, alpha, d_a, lda, d_b, ldb, beta, d_c, ldc);
  float *got = host_download(be, d_c, nc);

  int bad = 0, pad_bad = 0;
  double worst = 0;
  for (int i = 0; i < M; i++) {
    for (int j = 0; j < N; j++) {
      double s = 0, mag = 0;
      for (int k = 0; k < K; k++) {
        double a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
        double b = tb ? Bm[(size_t)j * ldb + k] : Bm[(size_t)k * ldb + j];
        s += a * b;
        mag += fabs(a * b);
      }
      double c0 = C[(size_t)i * ldc + j];
      double want = alpha * s + beta * c0;
      double bound = (K + 3) * FLT_EPSILON * (fabs(alpha) * mag + fabs(beta * c0)) + 1e-30;
      double err = fabs(got[(size_t)i * ldc + j] - want);
      if (!(err <= bound)) bad++;
      if (err / bound > worst) worst = err / bound;
    }
    for (int j = N; j < ldc; j++) pad_bad += got[(size_t)i * ldc + j] != sentinel;
  }
  EXPECT(bad == 0, "[%s] gemm ta=%d tb=%d M=%d N=%d K=%d alpha=%g beta=%g: %d of %d elements "
         "outside the float error bound (worst err/bound %.3g)", g_label, ta, tb, M, N, K, alpha,
         beta, bad, M * N, worst);
  EXPECT(pad_bad == 0, "[%s] gemm ta=%d tb=%d wrote %d padding elements of C", g_label, ta, tb,
         pad_bad);
  if (g_verbose)
    printf("  ok [%s] gemm ta=%d tb=%d %dx%dx%d worst err/bound %.3g\n", g_label, ta, tb, M, N,
           K, worst);
  be->free(be, d_a), be->free(be, d_b), be->free(be, d_c);
  free(A), free(Bm), free(C), free(got);
}

/* Y = A B, L = sum W * Y: the two gradient products the model runs with gemm,
 * dA = W B^T and dB = A^T W, against FD of the double reference. */
typedef struct {
  int M, N, K;
  double *A, *B, *W;
} MatCtx;

static double mat_obj(void *p) {
  MatCtx *c = p;
  double L = 0;
  for (int i = 0; i < c->M; i++)
    for (int j = 0; j < c->N; j++) {
      double s = 0;
      for (int k = 0; k < c->K; k++) s += c->A[i * c->K + k] * c->B[k * c->N + j];
      L += c->W[i * c->N + j] * s;
    }
  return L;
}

static void test_gemm(Backend *be) {
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      gemm_case(be, ta, tb, 5, 7, 3, 0.7f, -0.3f, 3);
      gemm_case(be, ta, tb, 67, 45, 33, 1.0f, 0.0f, 0);
      gemm_case(be, ta, tb, 33, 70, 129, -1.25f, 1.0f, 5);
    }

  const int M = 6, N = 5, K = 4;
  float *A = hnew(M * K), *B = hnew(K * N), *W = hnew(M * N);
  fill(A, M * K, -1, 1), fill(B, K * N, -1, 1), fill(W, M * N, -1, 1);
  MatCtx c = {M, N, K, to_double(A, M * K), to_double(B, K * N), to_double(W, M * N)};
  double *gA = dnew(M * K), *gB = dnew(K * N);
  fd_grad(mat_obj, &c, c.A, M * K, gA);
  fd_grad(mat_obj, &c, c.B, K * N, gB);
  float *d_a = dev_upload(be, A, M * K), *d_b = dev_upload(be, B, K * N);
  float *d_w = dev_upload(be, W, M * N);
  float *d_ga = dev_filled(be, M * K, GARBAGE), *d_gb = dev_filled(be, K * N, GARBAGE);
  be->gemm(be, 0, 1, M, K, N, 1.0f, d_w, N, d_b, N, 0.0f, d_ga, K); /* W[M,N] B^T[N,K] */
  be->gemm(be, 1, 0, K, N, M, 1.0f, d_a, K, d_w, N, 0.0f, d_gb, N); /* A^T[K,M] W[M,N] */
  float *ga = host_download(be, d_ga, M * K), *gb = host_download(be, d_gb, K * N);
  EXPECT_REL(rel_err(ga, gA, M * K, 1e-30), GRAD_RTOL, "gemm dA = W B^T vs FD");
  EXPECT_REL(rel_err(gb, gB, K * N, 1e-30), GRAD_RTOL, "gemm dB = A^T W vs FD");
  be->free(be, d_a), be->free(be, d_b), be->free(be, d_w), be->free(be, d_ga);
  be->free(be, d_gb);
  free(A), free(B), free(W), free(gA), free(gB), free(ga), free(gb);
  free(c.A), free(c.B), free(c.W);
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
    DropCtx c = {n2, c2, p, seed, stream, off, to_double(xs, n2 * c2), to_double(W, n2 * c2)};
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

/* ---------------------------------------------------------------- AdamW */

/* One step of SPEC section 4 in double, using the float parameters the kernel gets:
 * g' = g * grad_scale; p -= lr wd p; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;
 * p -= lr (m / bc1) / (sqrt(v / bc2) + eps), bc1 = 1 - b1^k, bc2 = 1 - b2^k. */
static void adamw_case(Backend *be, int k, float lr, float wd, float grad_scale) {
  const size_t n = 67;
  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  float bc1 = (float)(1.0 - pow((double)b1, k)), bc2 = (float)(1.0 - pow((double)b2, k));
  float *p = hnew(n), *g = hnew(n), *m = hnew(n), *v = hnew(n);
  fill(p, n, -1, 1);
  fill(g, n, -0.5, 0.5);
  if (k > 1) { /* moments of earlier steps */
    fill(m, n, -0.1, 0.1);
    fill(v, n, 0, 0.01);
  }
  /* A few coordinates with tiny gradients, where sqrt(v / bc2) is comparable to eps:
   * they catch eps placed inside the sqrt or applied before the bias correction. */
  for (size_t i = 0; i < 6; i++) {
    g[i] = (float)(1e-8 * (urand() - 0.5));
    if (k > 1) m[i] = (float)(1e-8 * (urand() - 0.5)), v[i] = (float)(1e-18 * urand());
  }

  double *rp = dnew(n), *rm = dnew(n), *rv = dnew(n), *delta = dnew(n), *mag_m = dnew(n);
  for (size_t i = 0; i < n; i++) {
    double gg = (double)g[i] * grad_scale;
    double pp = p[i] - (double)lr * wd * p[i];
    rm[i] = (double)b1 * m[i] + (1.0 - (double)b1) * gg;
    mag_m[i] = fabs((double)b1 * m[i]) + fabs((1.0 - (double)b1) * gg);
    rv[i] = (double)b2 * v[i] + (1.0 - (double)b2) * gg * gg;
    rp[i] = pp - (double)lr * (rm[i] / bc1) / (sqrt(rv[i] / bc2) + (double)eps);
    delta[i] = rp[i] - p[i];
  }

  float *d_p = dev_upload(be, p, n), *d_g = dev_upload(be, g, n);
  float *d_m = dev_upload(be, m, n), *d_v = dev_upload(be, v, n);
  be->adamw(be, d_p, d_g, d_m, d_v, n, lr, b1, b2, eps, wd, grad_scale, bc1, bc2);
  float *gp = host_download(be, d_p, n), *gm = host_download(be, d_m, n);
  float *gv = host_download(be, d_v, n), *gg = host_download(be, d_g, n);

  /* m, v: a sum of two products, a few roundings of the size of the TERMS (m can cancel
   * to far below its terms): 4 FLT_EPSILON (|b1 m| + |(1-b1) g'|); v has no cancellation,
   * so 1e-6 of itself. p: its own float rounding (2 FLT_EPSILON |p|) plus 1e-5 of the
   * update (a handful of roundings in the update expression). */
  int bad_p = 0, bad_m = 0, bad_v = 0;
  for (size_t i = 0; i < n; i++) {
    if (!(fabs(gm[i] - rm[i]) <= 4 * FLT_EPSILON * mag_m[i] + 1e-30)) bad_m++;
    if (!(fabs(gv[i] - rv[i]) <= 1e-6 * fabs(rv[i]) + 1e-40)) bad_v++;
    if (!(fabs(gp[i] - rp[i]) <= 2 * FLT_EPSILON * fabs(rp[i]) + 1e-5 * fabs(delta[i]))) {
      if (bad_p < 3)
        fprintf(stderr, "adamw k=%d i=%zu: p %.9g -> %.9g, want %.9g (g %.3g m %.3g v %.3g)\n",
                k, i, p[i], gp[i], rp[i], g[i], m[i], v[i]);
      bad_p++;
    }
  }
  EXPECT(bad_m == 0, "[%s] adamw k=%d: %d first moments wrong", g_label, k, bad_m);
  EXPECT(bad_v == 0, "[%s] adamw k=%d: %d second moments wrong", g_label, k, bad_v);
  EXPECT(bad_p == 0, "[%s] adamw k=%d lr=%g wd=%g gs=%g: %d parameters wrong", g_label, k, lr,
         wd, grad_scale, bad_p);
  EXPECT(memcmp(gg, g, n * sizeof(float)) == 0, "[%s] adamw modified its gradient input",
         g_label);
  be->free(be, d_p), be->free(be, d_g), be->free(be, d_m), be->free(be, d_v);
  free(p), free(g), free(m), free(v), free(rp), free(rm), free(rv), free(delta), free(mag_m);
  free(gp), free(gm), free(gv), free(gg);
}

static void test_adamw(Backend *be) {
  adamw_case(be, 1, 1e-3f, 0.1f, 1.0f); /* first step: bias corrections 0.1 and 0.001 */
  adamw_case(be, 5, 1e-2f, 0.1f, 0.5f); /* later step with clipping scale */
  adamw_case(be, 200, 3e-2f, 0.0f, 2.0f);
}

/* ---------------------------------------------------------------- reductions, BLAS-1 */

static void test_sum_squares(Backend *be) {
  const size_t sizes[4] = {0, 1, 1000, 1000003};
  for (int s = 0; s < 4; s++) {
    size_t n = sizes[s];
    float *x = hnew(n);
    fill(x, n, -1, 1);
    double want = 0;
    for (size_t i = 0; i < n; i++) want += (double)x[i] * x[i];
    float *d_x = dev_upload(be, x, n ? n : 1); /* no zero-byte allocation */
    double got = be->sum_squares(be, n, d_x);
    /* Double accumulation; 1e-6 still allows squares formed in float (one rounding). */
    EXPECT(fabs(got - want) <= 1e-6 * want, "[%s] sum_squares n=%zu: %.15g want %.15g", g_label,
           n, got, want);
    be->free(be, d_x);
    free(x);
  }
  /* Float accumulation would drop the small squares: every 1000th element is 1000
   * (square 1e6) and the rest 0.1 (square 0.01, under half an ulp of a float sum >= 1e6),
   * so a float running sum loses ~1e-5 of the total; double keeps it to ~1e-15. */
  {
    const size_t n = 1000003;
    float *x = hnew(n);
    double want = 0;
    for (size_t i = 0; i < n; i++) {
      x[i] = i % 1000 == 0 ? 1000.0f : 0.1f;
      want += (double)x[i] * x[i];
    }
    float *d_x = dev_upload(be, x, n);
    double got = be->sum_squares(be, n, d_x);
    EXPECT(fabs(got - want) <= 1e-6 * want, "[%s] sum_squares is not accumulated in double: "
           "%.15g want %.15g", g_label, got, want);
    be->free(be, d_x);
    free(x);
  }
}

/* The header promises a result independent of the thread count: compare bit for bit. */
static void test_sum_squares_threads(void) {
  const size_t n = 3000017;
  float *x = hnew(n);
  fill(x, n, -2, 2);
  const int threads[3] = {1, 3, 0};
  double r[3];
  for (int t = 0; t < 3; t++) {
    Backend *be = backend_cpu_create(threads[t]);
    float *d_x = dev_upload(be, x, n);
    r[t] = be->sum_squares(be, n, d_x);
    be->free(be, d_x);
    backend_destroy(be);
  }
  EXPECT(r[0] == r[1] && r[0] == r[2], "sum_squares depends on thread count: %.17g / %.17g / "
         "%.17g (1 / 3 / default threads)", r[0], r[1], r[2]);
  free(x);
}

static void test_axpy_scale_bias(Backend *be) {
  const size_t n = 1001;
  float *x = hnew(n), *y = hnew(n);
  fill(x, n, -2, 2), fill(y, n, -2, 2);
  const float a = -0.37f;
  float *d_x = dev_upload(be, x, n), *d_y = dev_upload(be, y, n);
  be->axpy(be, n, a, d_x, d_y);
  float *gy = host_download(be, d_y, n), *gx = host_download(be, d_x, n);
  int bad = 0;
  for (size_t i = 0; i < n; i++) { /* product and sum, one rounding each (or one FMA) */
    double want = y[i] + (double)a * x[i];
    if (!(fabs(gy[i] - want) <= FLT_EPSILON * (fabs(a * x[i]) + fabs(y[i])))) bad++;
  }
  EXPECT(bad == 0, "[%s] axpy: %d of %zu elements wrong", g_label, bad, n);
  EXPECT(memcmp(gx, x, n * sizeof(float)) == 0, "[%s] axpy modified x", g_label);

  be->scale(be, n, a, d_x);
  float *sx = host_download(be, d_x, n);
  bad = 0;
  for (size_t i = 0; i < n; i++)
    if (!(fabs(sx[i] - (double)a * x[i]) <= 0.5 * FLT_EPSILON * fabs((double)a * x[i]))) bad++;
  EXPECT(bad == 0, "[%s] scale: %d of %zu elements not correctly rounded", g_label, bad, n);

  const int N = 7, C = 13;
  float *yb = hnew(N * C), *b = hnew(C);
  fill(yb, N * C, -2, 2), fill(b, C, -2, 2);
  float *d_yb = dev_upload(be, yb, N * C), *d_b = dev_upload(be, b, C);
  be->add_bias(be, d_yb, d_b, N, C);
  float *gb = host_download(be, d_yb, N * C);
  bad = 0;
  for (int i = 0; i < N; i++)
    for (int j = 0; j < C; j++) {
      double want = (double)yb[i * C + j] + b[j];
      if (!(fabs(gb[i * C + j] - want) <= 0.5 * FLT_EPSILON * fabs(want))) bad++;
    }
  EXPECT(bad == 0, "[%s] add_bias: %d of %d elements wrong", g_label, bad, N * C);

  be->free(be, d_x), be->free(be, d_y), be->free(be, d_yb), be->free(be, d_b);
  free(x), free(y), free(gy), free(gx), free(sx), free(yb), free(b), free(gb);
}

/* ---------------------------------------------------------------- main */

static void run_all(Backend *be) {
  test_embedding(be);
  test_rmsnorm(be);
  test_rope(be);
  test_attention(be);
  test_swiglu(be);
  test_cross_entropy(be);
  test_gemm(be);
  test_dropout(be);
  test_adamw(be);
  test_sum_squares(be);
  test_axpy_scale_bias(be);
}

int main(void) {
  g_verbose = getenv("TV_VERBOSE") != NULL;
  /* Default threads, then 3 threads: a kernel whose split over threads is wrong (a
   * missed tail block, a race) shows up in one of them. */
  const int threads[2] = {0, 3};
  const char *labels[2] = {"cpu threads=default", "cpu threads=3"};
  for (int t = 0; t < 2; t++) {
    Backend *be = backend_cpu_create(threads[t]);
    g_label = labels[t];
    run_all(be);
    backend_destroy(be);
  }
  g_label = "cpu";
  test_sum_squares_threads();
  return tv_test_report("test_ops_gradcheck");
}
