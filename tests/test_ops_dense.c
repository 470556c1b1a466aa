/* The dense kernels of the Backend table (gemm, AdamW, sum of squares, axpy, scale,
 * add_bias, the bf16 weight GEMM, the reductions into backend memory) on the CPU backend against double-precision loops written here (independent
 * of core/cpu). Each check uses a per-element a-priori float error bound, stated where it
 * is used; gemm's two gradient products are also checked against finite differences. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "ops_check.h"
#include "optim.h"
#include "test_util.h"

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
  MatCtx c = {.M = M, .N = N, .K = K, .A = to_double(A, M * K), .B = to_double(B, K * N),
              .W = to_double(W, M * N)};
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

/* ---------------------------------------------------------------- AdamW */

/* One step of SPEC section 4 in double with the betas as the user wrote them (0.9, 0.999,
 * not their float roundings): g' = g * grad_scale; p -= lr wd p; m = b1 m + (1-b1) g';
 * v = b2 v + (1-b2) g'^2; p -= lr (m / bc1) / (sqrt(v / bc2) + eps), bc = 1 - b^k. The
 * kernel gets its scalars from optim_adamw_scalars, the one place that forms them. */
static void adamw_case(Backend *be, int k, float lr, float wd, float grad_scale) {
  const size_t n = 67;
  const double b1 = 0.9, b2 = 0.999;
  const float eps = 1e-8f;
  double bc1 = 1.0 - pow(b1, k), bc2 = 1.0 - pow(b2, k);
  /* One step without warmup: the schedule gives lr itself at t = 0. */
  OptimConfig oc = optim_config_default(1);
  oc.lr = lr, oc.weight_decay = wd, oc.warmup_ratio = 0, oc.beta1 = b1, oc.beta2 = b2;
  oc.eps = eps;
  AdamwScalars scalars = optim_adamw_scalars(&oc, 0, k, grad_scale);
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
    rm[i] = b1 * m[i] + (1.0 - b1) * gg;
    mag_m[i] = fabs(b1 * m[i]) + fabs((1.0 - b1) * gg);
    rv[i] = b2 * v[i] + (1.0 - b2) * gg * gg;
    rp[i] = pp - (double)lr * (rm[i] / bc1) / (sqrt(rv[i] / bc2) + (double)eps);
    delta[i] = rp[i] - p[i];
  }

  float *d_p = dev_upload(be, p, n), *d_g = dev_upload(be, g, n);
  float *d_m = dev_upload(be, m, n), *d_v = dev_upload(be, v, n);
  AdamwBlock block = {.params = d_p, .grads = d_g, .m = d_m, .v = d_v, .n = n};
  be->adamw(be, &block, &scalars);
  float *gp = host_download(be, d_p, n), *gm = host_download(be, d_m, n);
  float *gv = host_download(be, d_v, n), *gg = host_download(be, d_g, n);

  /* m, v: a sum of two products, a few roundings of the size of the TERMS (m can cancel
   * to far below its terms): 4 FLT_EPSILON (|b1 m| + |(1-b1) g'|); v has no cancellation,
   * so 1e-6 of itself (1 - beta2 formed from a float beta2 is 1.3e-5 off and fails). p: its own float rounding (2 FLT_EPSILON |p|) plus 1e-5 of the
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

/* ---------------------------------------------------------------- typed weights */

/* bf16 rounding, checked on bit patterns worked out by hand: 1 + 2^-8 is halfway between
 * bf16 1 (0x3F80) and 1 + 2^-7 (0x3F81) and ties to the even 0x3F80; 1 + 3 * 2^-8 ties up
 * to the even 0x3F82; 1 + 2^-8 + 2^-16 is past halfway and rounds up; NaN stays NaN. */
static void test_bf16_rounding(void) {
  const uint32_t in[5] = {0x3F800000u, 0x3F808000u, 0x3F818000u, 0x3F808001u, 0xBF7FFFFFu};
  const uint16_t want[5] = {0x3F80u, 0x3F80u, 0x3F82u, 0x3F81u, 0xBF80u};
  for (int i = 0; i < 5; i++) {
    float f;
    memcpy(&f, &in[i], sizeof f);
    uint16_t got = tv_bf16_from_f32(f);
    EXPECT(got == want[i], "bf16 of 0x%08X: 0x%04X want 0x%04X", (unsigned)in[i], got, want[i]);
    uint32_t back_bits = (uint32_t)want[i] << 16;
    float back = tv_f32_from_bf16(want[i]), want_back;
    memcpy(&want_back, &back_bits, sizeof want_back);
    EXPECT(back == want_back, "f32 of bf16 0x%04X", want[i]);
  }
  EXPECT(isnan(tv_f32_from_bf16(tv_bf16_from_f32(NAN))), "bf16 of NaN is not NaN");
}

/* gemm_weight with a bf16 weight equals the f32 product on exactly the bf16 values
 * (widened by a shift here, independently of core), within gemm's dot-product bound; with
 * an f32 weight it is bit-identical to gemm. Both weight layouts, padded leading dims. */
static void gemm_weight_case(Backend *be, int tb, int M, int N, int K, int pad) {
  int br = tb ? N : K, bc = tb ? K : N, ldb = bc + pad, lda = K + pad, ldc = N;
  size_t na = (size_t)M * lda, nb = (size_t)br * ldb, nc = (size_t)M * ldc;
  float *A = hnew(na), *W = hnew(nb), *Wr = hnew(nb);
  uint16_t *W16 = calloc(nb, sizeof(uint16_t));
  fill(A, na, -1, 1);
  fill(W, nb, -1, 1);
  for (size_t i = 0; i < nb; i++) {
    W16[i] = tv_bf16_from_f32(W[i]);
    uint32_t bits = (uint32_t)W16[i] << 16;
    memcpy(&Wr[i], &bits, sizeof bits);
  }
  float *d_a = dev_upload(be, A, na), *d_w = dev_upload(be, W, nb);
  uint16_t *d_w16 = be->alloc(be, nb * sizeof(uint16_t));
  be->from_host(be, d_w16, W16, nb * sizeof(uint16_t));
  float *d_c = dev_filled(be, nc, GARBAGE), *d_ref = dev_filled(be, nc, GARBAGE);
  WeightRef w16 = {.dtype = TV_BF16, .data = d_w16};
  be->gemm_weight(be, 0, tb, M, N, K, 1.0f, d_a, lda, w16, ldb, 0.0f, d_c, ldc);
  float *got = host_download(be, d_c, nc);
  int bad = 0;
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      double sum = 0, mag = 0;
      for (int k = 0; k < K; k++) {
        double b = tb ? Wr[(size_t)j * ldb + k] : Wr[(size_t)k * ldb + j];
        sum += A[(size_t)i * lda + k] * b;
        mag += fabs(A[(size_t)i * lda + k] * b);
      }
      if (!(fabs(got[(size_t)i * ldc + j] - sum) <= (K + 3) * FLT_EPSILON * mag + 1e-30)) bad++;
    }
  EXPECT(bad == 0, "[%s] gemm_weight bf16 tb=%d %dx%dx%d: %d of %zu elements off the product of "
         "the bf16 values", g_label, tb, M, N, K, bad, nc);

  be->gemm_weight(be, 0, tb, M, N, K, 0.5f, d_a, lda, weight_f32(d_w), ldb, 0.0f, d_c, ldc);
  be->gemm(be, 0, tb, M, N, K, 0.5f, d_a, lda, d_w, ldb, 0.0f, d_ref, ldc);
  float *g32 = host_download(be, d_c, nc), *r32 = host_download(be, d_ref, nc);
  EXPECT(memcmp(g32, r32, nc * sizeof(float)) == 0, "[%s] gemm_weight f32 differs from gemm",
         g_label);
  be->free(be, d_a), be->free(be, d_w), be->free(be, d_w16), be->free(be, d_c);
  be->free(be, d_ref);
  free(A), free(W), free(Wr), free(W16), free(got), free(g32), free(r32);
}

static void test_gemm_weight(Backend *be) {
  gemm_weight_case(be, 1, 5, 7, 33, 3);
  gemm_weight_case(be, 0, 4, 9, 17, 2);
  gemm_weight_case(be, 1, 64, 48, 96, 0);
  /* A weight this large makes the CPU widen it in tiles of 279 output columns (2 tiles). */
  gemm_weight_case(be, 1, 3, 300, 30000, 1);
  gemm_weight_case(be, 0, 3, 300, 30000, 1);
}

/* The accumulate-into-memory reductions add (+=) exactly the value the returning ones give,
 * to a double that lives in backend memory. */
static void test_reductions_into_memory(Backend *be) {
  const size_t n = 10007;
  float *x = hnew(n);
  fill(x, n, -1, 1);
  float *d_x = dev_upload(be, x, n);
  double start = 0.25, *d_acc = be->alloc(be, sizeof(double)), got;
  be->from_host(be, d_acc, &start, sizeof start);
  be->sum_squares_acc(be, n, d_x, d_acc);
  be->sum_squares_acc(be, n / 2, d_x, d_acc);
  be->sync(be);
  be->to_host(be, &got, d_acc, sizeof got);
  double want = start + be->sum_squares(be, n, d_x) + be->sum_squares(be, n / 2, d_x);
  EXPECT(got == want, "[%s] sum_squares_acc: %.17g want %.17g", g_label, got, want);

  const int N = 6, V = 37;
  float *z = hnew((size_t)N * V);
  fill(z, (size_t)N * V, -3, 3);
  int32_t tgt[6] = {0, 36, -1, 5, 17, -100};
  float *d_z = dev_upload(be, z, (size_t)N * V), *d_g1 = dev_filled(be, (size_t)N * V, GARBAGE);
  float *d_g2 = dev_filled(be, (size_t)N * V, GARBAGE);
  int32_t *d_t = be->alloc(be, sizeof tgt);
  be->from_host(be, d_t, tgt, sizeof tgt);
  be->from_host(be, d_acc, &start, sizeof start);
  be->cross_entropy_acc(be, d_z, d_g1, d_t, N, V, 0.125f, d_acc);
  double ret = be->cross_entropy(be, d_z, d_g2, d_t, N, V, 0.125f);
  be->sync(be);
  be->to_host(be, &got, d_acc, sizeof got);
  float *g1 = host_download(be, d_g1, (size_t)N * V), *g2 = host_download(be, d_g2, (size_t)N * V);
  EXPECT(got == start + ret, "[%s] cross_entropy_acc: %.17g want %.17g", g_label, got,
         start + ret);
  EXPECT(memcmp(g1, g2, (size_t)N * V * sizeof(float)) == 0,
         "[%s] cross_entropy_acc's gradient differs from cross_entropy's", g_label);
  be->free(be, d_x), be->free(be, d_acc), be->free(be, d_z), be->free(be, d_g1);
  be->free(be, d_g2), be->free(be, d_t);
  free(x), free(z), free(g1), free(g2);
}

/* Device names of the config key: exactly "cpu" and "cuda". */
static void test_backend_kind_names(void) {
  BackendKind k = BACKEND_CPU;
  EXPECT(backend_kind_parse("cuda", &k) && k == BACKEND_CUDA, "'cuda' is not BACKEND_CUDA");
  EXPECT(backend_kind_parse("cpu", &k) && k == BACKEND_CPU, "'cpu' is not BACKEND_CPU");
  EXPECT(!backend_kind_parse("gpu", &k) && !backend_kind_parse("CUDA", &k) &&
             !backend_kind_parse(NULL, &k), "an unknown device name was accepted");
  Backend *be = backend_create(BACKEND_CPU, 0, 1);
  EXPECT(strcmp(be->name, "cpu") == 0, "backend_create(BACKEND_CPU) made '%s'", be->name);
  backend_destroy(be);
}

/* ---------------------------------------------------------------- main */

static void run_all(Backend *be) {
  test_gemm(be);
  test_adamw(be);
  test_sum_squares(be);
  test_axpy_scale_bias(be);
  test_gemm_weight(be);
  test_reductions_into_memory(be);
}

int main(void) {
  run_on_cpu_backends(run_all);
  g_label = "cpu";
  test_sum_squares_threads();
  test_bf16_rounding();
  test_backend_kind_names();
  return tv_test_report("test_ops_dense");
}
