/* Every op of the Backend table on the CUDA backend against the CPU backend on the same
 * inputs. Exits 77 (ctest's skip) when no GPU is visible or the build has no CUDA backend.
 *
 * Tolerances, as max_i |cuda_i - cpu_i| / max_i |cpu_i| (REL_* below):
 *   F32_TOL    1e-5  f32 kernels whose sums run in another order (GEMM, norms, softmax
 *                    rows, cross-entropy): a few 2^-24 roundings over sums of <= 128 terms;
 *   EXP_TOL    1e-4  kernels that also differ in exp (the CPU's polynomial cpu_expf vs
 *                    CUDA's expf: a few ulp each, summed over up to 70 keys) — attention;
 *   BF16_TOL   1e-2  a GEMM on a bf16 weight: CUDA also narrows the f32 activation to bf16
 *                    (relative rounding 2^-9 per element), the CPU keeps it f32;
 *   EXACT            dropout (same Philox bits, one multiply), embedding forward (a copy).
 * A wrong index, head or sign gives an O(1) error. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "test_util.h"

#define F32_TOL 1e-5
#define EXP_TOL 1e-4
#define BF16_TOL 1e-2

static Backend *cpu, *gpu;
static uint64_t seed_state = 0x9e3779b97f4a7c15ull;

static float urand(void) {
  uint64_t z = (seed_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (float)((double)(z >> 11) * (1.0 / 9007199254740992.0));
}

static float *host_random(size_t n, float lo, float hi) {
  float *h = malloc((n ? n : 1) * sizeof(float));
  for (size_t i = 0; i < n; i++) h[i] = lo + (hi - lo) * urand();
  return h;
}

/* The same bytes on both backends. */
typedef struct {
  void *c, *g;
} Twin;

static Twin twin_upload(const void *host, size_t bytes) {
  Twin t = {.c = cpu->alloc(cpu, bytes), .g = gpu->alloc(gpu, bytes)};
  cpu->from_host(cpu, t.c, host, bytes);
  gpu->from_host(gpu, t.g, host, bytes);
  return t;
}

static Twin twin_random(size_t n, float lo, float hi) {
  float *h = host_random(n, lo, hi);
  Twin t = twin_upload(h, n * sizeof(float));
  free(h);
  return t;
}

static void twin_free(Twin t) {
  cpu->free(cpu, t.c);
  gpu->free(gpu, t.g);
}

/* max |g - c| / max |c| of n floats; non-finite anywhere is an infinite error. */
static double twin_rel_err(Twin t, size_t n) {
  float *hc = malloc(n * sizeof(float)), *hg = malloc(n * sizeof(float));
  cpu->sync(cpu);
  gpu->sync(gpu);
  cpu->to_host(cpu, hc, t.c, n * sizeof(float));
  gpu->to_host(gpu, hg, t.g, n * sizeof(float));
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(hc[i]) || !isfinite(hg[i])) {
      num = INFINITY;
      break;
    }
    double d = fabs((double)hg[i] - hc[i]);
    if (d > num) num = d;
    if (fabs(hc[i]) > den) den = fabs(hc[i]);
  }
  free(hc), free(hg);
  return num / den;
}

static int twin_equal(Twin t, size_t bytes) {
  char *hc = malloc(bytes), *hg = malloc(bytes);
  cpu->to_host(cpu, hc, t.c, bytes);
  gpu->to_host(gpu, hg, t.g, bytes);
  int same = memcmp(hc, hg, bytes) == 0;
  free(hc), free(hg);
  return same;
}

#define EXPECT_TWIN(t, n, tol, what)                                                          \
  do {                                                                                      \
    double e_ = twin_rel_err((t), (n));                                                     \
    EXPECT(e_ <= (tol), "%s: CUDA vs CPU rel err %.3g > %.1g", (what), e_, (double)(tol));  \
    if (getenv("TV_VERBOSE"))                                                               \
      printf("  %-40s rel err %.3g (tol %.1g)\n", (what), e_, (double)(tol));               \
  } while (0)

static void test_gemm(void) {
  const int M = 37, N = 29, K = 70;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      Twin A = twin_random((size_t)M * K, -1, 1), B = twin_random((size_t)N * K, -1, 1);
      Twin C = twin_random((size_t)M * N, -1, 1);
      int lda = ta ? M : K, ldb = tb ? K : N;
      cpu->gemm(cpu, ta, tb, M, N, K, 0.7f, A.c, lda, B.c, ldb, 0.5f, C.c, N);
      gpu->gemm(gpu, ta, tb, M, N, K, 0.7f, A.g, lda, B.g, ldb, 0.5f, C.g, N);
      char what[64];
      snprintf(what, sizeof what, "gemm ta=%d tb=%d", ta, tb);
      EXPECT_TWIN(C, (size_t)M * N, F32_TOL, what);
      twin_free(A), twin_free(B), twin_free(C);
    }
  /* bf16 weight, both layouts the model uses: x W^T (forward) and dy W (input gradient). */
  for (int tb = 0; tb < 2; tb++) {
    size_t nw = (size_t)N * K;
    float *w = host_random(nw, -1, 1);
    uint16_t *w16 = malloc(nw * sizeof(uint16_t));
    for (size_t i = 0; i < nw; i++) w16[i] = tv_bf16_from_f32(w[i]);
    Twin W = twin_upload(w16, nw * sizeof(uint16_t));
    Twin A = twin_random((size_t)M * K, -1, 1), C = twin_random((size_t)M * N, -1, 1);
    int ldb = tb ? K : N;
    WeightRef wc = {.dtype = TV_BF16, .data = W.c}, wg = {.dtype = TV_BF16, .data = W.g};
    cpu->gemm_weight(cpu, 0, tb, M, N, K, 1.0f, A.c, K, wc, ldb, 0.0f, C.c, N);
    gpu->gemm_weight(gpu, 0, tb, M, N, K, 1.0f, A.g, K, wg, ldb, 0.0f, C.g, N);
    EXPECT_TWIN(C, (size_t)M * N, BF16_TOL,
                tb ? "gemm_weight bf16 x W^T" : "gemm_weight bf16 dy W");
    twin_free(W), twin_free(A), twin_free(C);
    free(w), free(w16);
  }
}

static void test_vector_ops(void) {
  const size_t n = 100003;
  Twin x = twin_random(n, -2, 2), y = twin_random(n, -2, 2);
  cpu->axpy(cpu, n, -0.3f, x.c, y.c);
  gpu->axpy(gpu, n, -0.3f, x.g, y.g);
  EXPECT_TWIN(y, n, 1e-6, "axpy");
  cpu->scale(cpu, n, 1.7f, x.c);
  gpu->scale(gpu, n, 1.7f, x.g);
  EXPECT_TWIN(x, n, 1e-6, "scale");
  double sc = cpu->sum_squares(cpu, n, x.c), sg = gpu->sum_squares(gpu, n, x.g);
  EXPECT(fabs(sc - sg) <= 1e-12 * sc, "sum_squares: cuda %.17g cpu %.17g", sg, sc);
  double start = 2.5, got = 0;
  double *acc = gpu->alloc(gpu, sizeof(double));
  gpu->from_host(gpu, acc, &start, sizeof start);
  gpu->sum_squares_acc(gpu, n, x.g, acc);
  gpu->sum_squares_acc(gpu, n, x.g, acc);
  gpu->to_host(gpu, &got, acc, sizeof got);
  EXPECT(fabs(got - (start + 2 * sg)) <= 1e-12 * got, "sum_squares_acc: %.17g want %.17g", got,
         start + 2 * sg);
  gpu->free(gpu, acc);
  const int N = 33, C = 57;
  Twin yb = twin_random((size_t)N * C, -1, 1), b = twin_random((size_t)C, -1, 1);
  cpu->add_bias(cpu, yb.c, b.c, N, C);
  gpu->add_bias(gpu, yb.g, b.g, N, C);
  EXPECT_TWIN(yb, (size_t)N * C, 1e-6, "add_bias");
  twin_free(x), twin_free(y), twin_free(yb), twin_free(b);
}

static void test_embedding_norm(void) {
  const int N = 41, D = 96, V = 13;
  int32_t tok[41];
  for (int i = 0; i < N; i++) tok[i] = (int32_t)(urand() * V) % V; /* repeats on purpose */
  Twin t = twin_upload(tok, sizeof tok), table = twin_random((size_t)V * D, -1, 1);
  Twin out = twin_random((size_t)N * D, -1, 1);
  cpu->embedding_forward(cpu, out.c, weight_f32(table.c), t.c, N, D);
  gpu->embedding_forward(gpu, out.g, weight_f32(table.g), t.g, N, D);
  EXPECT(twin_equal(out, (size_t)N * D * sizeof(float)), "embedding_forward differs");
  {
    float *th = host_random((size_t)V * D, -1, 1);
    uint16_t t16[13 * 96];
    for (int i = 0; i < V * D; i++) t16[i] = tv_bf16_from_f32(th[i]);
    Twin table16 = twin_upload(t16, sizeof t16);
    WeightRef rc = {.dtype = TV_BF16, .data = table16.c}, rg = {.dtype = TV_BF16, .data = table16.g};
    cpu->embedding_forward(cpu, out.c, rc, t.c, N, D);
    gpu->embedding_forward(gpu, out.g, rg, t.g, N, D);
    EXPECT(twin_equal(out, (size_t)N * D * sizeof(float)), "embedding_forward bf16 differs");
    twin_free(table16);
    free(th);
  }
  cpu->embedding_backward(cpu, table.c, out.c, t.c, N, D);
  gpu->embedding_backward(gpu, table.g, out.g, t.g, N, D);
  EXPECT_TWIN(table, (size_t)V * D, 1e-6, "embedding_backward (accumulated)");

  Twin x = twin_random((size_t)N * D, -2, 2), w = twin_random((size_t)D, 0.5f, 1.5f);
  Twin y = twin_random((size_t)N * D, -1, 1), inv = twin_random((size_t)N, -1, 1);
  cpu->rmsnorm_forward(cpu, y.c, inv.c, x.c, w.c, N, D, 1e-5f);
  gpu->rmsnorm_forward(gpu, y.g, inv.g, x.g, w.g, N, D, 1e-5f);
  EXPECT_TWIN(y, (size_t)N * D, F32_TOL, "rmsnorm_forward y");
  EXPECT_TWIN(inv, (size_t)N, F32_TOL, "rmsnorm_forward inv_rms");
  Twin dy = twin_random((size_t)N * D, -1, 1), dx = twin_random((size_t)N * D, -1, 1);
  Twin dw = twin_random((size_t)D, -1, 1);
  cpu->rmsnorm_backward(cpu, dx.c, dw.c, dy.c, x.c, w.c, inv.c, N, D);
  gpu->rmsnorm_backward(gpu, dx.g, dw.g, dy.g, x.g, w.g, inv.g, N, D);
  EXPECT_TWIN(dx, (size_t)N * D, F32_TOL, "rmsnorm_backward dx");
  EXPECT_TWIN(dw, (size_t)D, F32_TOL, "rmsnorm_backward dw (accumulated)");
  Twin all[] = {t, table, out, x, w, y, inv, dy, dx, dw};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) twin_free(all[i]);
}

static void test_rope(void) {
  const int B = 2, T = 11, nh = 3, Dh = 16, half = Dh / 2;
  Twin cs = twin_random((size_t)T * half, -1, 1), sn = twin_random((size_t)T * half, -1, 1);
  size_t n = (size_t)B * T * nh * Dh;
  Twin x = twin_random(n, -1, 1);
  cpu->rope_forward(cpu, x.c, cs.c, sn.c, B, T, nh, Dh);
  gpu->rope_forward(gpu, x.g, cs.g, sn.g, B, T, nh, Dh);
  EXPECT_TWIN(x, n, 1e-6, "rope_forward");
  cpu->rope_backward(cpu, x.c, cs.c, sn.c, B, T, nh, Dh);
  gpu->rope_backward(gpu, x.g, cs.g, sn.g, B, T, nh, Dh);
  EXPECT_TWIN(x, n, 1e-6, "rope_backward");
  twin_free(cs), twin_free(sn), twin_free(x);
}

static void attention_case(int B, int T, int H, int Hkv, int Dh) {
  AttnShape sh = {.B = B, .T = T, .H = H, .Hkv = Hkv, .Dh = Dh};
  size_t nq = (size_t)B * T * H * Dh, nk = (size_t)B * T * Hkv * Dh, nl = (size_t)B * H * T;
  Twin q = twin_random(nq, -2, 2), k = twin_random(nk, -2, 2), v = twin_random(nk, -1, 1);
  Twin out = twin_random(nq, -1, 1), lse = twin_random(nl, -1, 1);
  cpu->attention_forward(cpu, &sh, q.c, k.c, v.c, out.c, lse.c);
  gpu->attention_forward(gpu, &sh, q.g, k.g, v.g, out.g, lse.g);
  char what[96];
  snprintf(what, sizeof what, "attention_forward out B%d T%d H%d/%d Dh%d", B, T, H, Hkv, Dh);
  EXPECT_TWIN(out, nq, EXP_TOL, what);
  EXPECT_TWIN(lse, nl, EXP_TOL, "attention_forward lse");
  Twin dout = twin_random(nq, -1, 1), dq = twin_random(nq, 9, 9);
  Twin dk = twin_random(nk, 9, 9), dv = twin_random(nk, 9, 9); /* written, not accumulated */
  AttnRecord rc = {.q = q.c, .k = k.c, .v = v.c, .out = out.c, .lse = lse.c};
  AttnRecord rg = {.q = q.g, .k = k.g, .v = v.g, .out = out.g, .lse = lse.g};
  cpu->attention_backward(cpu, &sh, &rc, dout.c, dq.c, dk.c, dv.c);
  gpu->attention_backward(gpu, &sh, &rg, dout.g, dq.g, dk.g, dv.g);
  EXPECT_TWIN(dq, nq, EXP_TOL, "attention_backward dq");
  EXPECT_TWIN(dk, nk, EXP_TOL, "attention_backward dk");
  EXPECT_TWIN(dv, nk, EXP_TOL, "attention_backward dv");

  /* Cached attention: rows of scrambled sequences and positions against the k / v above
   * read as a cache of B sequences of capacity T. */
  const int rows = 5;
  int32_t seq[5], pos[5];
  for (int i = 0; i < rows; i++) {
    seq[i] = (int32_t)(urand() * B) % B;
    pos[i] = (int32_t)(urand() * T) % T;
  }
  Twin ts = twin_upload(seq, sizeof seq), tp = twin_upload(pos, sizeof pos);
  Twin qc = twin_random((size_t)rows * H * Dh, -2, 2);
  Twin oc = twin_random((size_t)rows * H * Dh, 0, 1);
  AttnShape cs = {.B = rows, .T = T, .H = H, .Hkv = Hkv, .Dh = Dh};
  cpu->attention_cached(cpu, &cs, qc.c, k.c, v.c, ts.c, tp.c, oc.c);
  gpu->attention_cached(gpu, &cs, qc.g, k.g, v.g, ts.g, tp.g, oc.g);
  EXPECT_TWIN(oc, (size_t)rows * H * Dh, EXP_TOL, "attention_cached");
  Twin all[] = {q, k, v, out, lse, dout, dq, dk, dv, ts, tp, qc, oc};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) twin_free(all[i]);
}

static void test_mlp_dropout(void) {
  const size_t n = 50001;
  Twin g = twin_random(n, -6, 6), u = twin_random(n, -2, 2), o = twin_random(n, 0, 1);
  cpu->swiglu_forward(cpu, o.c, g.c, u.c, n);
  gpu->swiglu_forward(gpu, o.g, g.g, u.g, n);
  EXPECT_TWIN(o, n, F32_TOL, "swiglu_forward");
  Twin dgt = twin_random(n, 0, 1), dup = twin_random(n, 0, 1);
  cpu->swiglu_backward(cpu, dgt.c, dup.c, o.c, g.c, u.c, n);
  gpu->swiglu_backward(gpu, dgt.g, dup.g, o.g, g.g, u.g, n);
  EXPECT_TWIN(dgt, n, F32_TOL, "swiglu_backward dgate");
  EXPECT_TWIN(dup, n, F32_TOL, "swiglu_backward dup");
  /* Same key -> the same mask bit for bit, including a row offset that starts mid-block. */
  const int N = 77, C = 131;
  Twin x = twin_random((size_t)N * C, -1, 1), y = twin_random((size_t)N * C, 0, 1);
  cpu->dropout(cpu, y.c, x.c, N, C, 0.1f, 42, 7, 3);
  gpu->dropout(gpu, y.g, x.g, N, C, 0.1f, 42, 7, 3);
  EXPECT(twin_equal(y, (size_t)N * C * sizeof(float)), "dropout: masks or values differ");
  Twin all[] = {g, u, o, dgt, dup, x, y};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) twin_free(all[i]);
}

static void test_cross_entropy_adamw(void) {
  const int N = 19, V = 1000;
  int32_t tgt[19];
  for (int i = 0; i < N; i++) tgt[i] = i % 5 == 2 ? -1 : (int32_t)(urand() * V) % V;
  float *z = host_random((size_t)N * V, -4, 4);
  for (int j = 0; j < V; j++) z[3 * V + j] += 100.0f; /* needs the max shift */
  Twin lg = twin_upload(z, (size_t)N * V * sizeof(float)), t = twin_upload(tgt, sizeof tgt);
  Twin d = twin_random((size_t)N * V, 5, 5);
  double lc = cpu->cross_entropy(cpu, lg.c, d.c, t.c, N, V, 0.05f);
  double lgp = gpu->cross_entropy(gpu, lg.g, d.g, t.g, N, V, 0.05f);
  EXPECT(fabs(lc - lgp) <= F32_TOL * fabs(lc), "cross_entropy loss: cuda %.9g cpu %.9g", lgp, lc);
  EXPECT_TWIN(d, (size_t)N * V, F32_TOL, "cross_entropy dlogits");
  double l_inplace = gpu->cross_entropy(gpu, lg.g, lg.g, t.g, N, V, 0.05f);
  EXPECT(l_inplace == lgp, "cross_entropy in place: %.17g vs %.17g", l_inplace, lgp);
  free(z);

  const size_t n = 4099;
  Twin p = twin_random(n, -1, 1), gr = twin_random(n, -1, 1), m = twin_random(n, -0.1f, 0.1f);
  Twin v = twin_random(n, 0, 0.01f);
  AdamwScalars k = {.lr = 1e-3f, .weight_decay = 0.1f, .eps = 1e-8f, .beta1 = 0.9f,
                    .beta2 = 0.999f, .one_minus_beta1 = 0.1f, .one_minus_beta2 = 0.001f,
                    .bias_correction1 = 0.271f, .bias_correction2 = 0.003f, .grad_scale = 0.5f};
  AdamwBlock bc = {.params = p.c, .grads = gr.c, .m = m.c, .v = v.c, .n = n};
  AdamwBlock bg = {.params = p.g, .grads = gr.g, .m = m.g, .v = v.g, .n = n};
  cpu->adamw(cpu, &bc, &k);
  gpu->adamw(gpu, &bg, &k);
  EXPECT_TWIN(p, n, 1e-6, "adamw params");
  EXPECT_TWIN(m, n, 1e-6, "adamw m");
  EXPECT_TWIN(v, n, 1e-6, "adamw v");
  Twin all[] = {lg, t, d, p, gr, m, v};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) twin_free(all[i]);
}

/* TV_GPU_TEST_ON_CPU=1 puts a second CPU backend where the GPU would be: a dry run of this
 * program's own logic (uploads, comparisons, tolerances) on a machine without a GPU. */
int main(void) {
  int dry_run = getenv("TV_GPU_TEST_ON_CPU") != NULL;
  if (!dry_run && backend_cuda_device_count() == 0) {
    printf("test_cuda_ops: skipped (%s)\n",
           backend_cuda_built() ? "no CUDA GPU visible" : "built without the CUDA backend");
    return 77;
  }
  cpu = backend_create(BACKEND_CPU, 0, 0);
  gpu = dry_run ? backend_cpu_create(0) : backend_create(BACKEND_CUDA, 0, 0);
  test_gemm();
  test_vector_ops();
  test_embedding_norm();
  test_rope();
  attention_case(2, 37, 4, 2, 16);
  attention_case(1, 70, 2, 1, 128);
  test_mlp_dropout();
  test_cross_entropy_adamw();
  backend_destroy(gpu);
  backend_destroy(cpu);
  return tv_test_report("test_cuda_ops");
}
