/* Shared by the kernel tests (test_ops_gradcheck.c, test_ops_dense.c): random inputs,
 * device transfers, error measures and central differences for double-precision references.
 *
 * Tolerances (all as max_i |got_i - want_i| / max(max_i |want_i|, floor)):
 *   GRAD_RTOL 1e-3  float32 analytic gradient vs double FD. The kernel's own rounding is
 *                   ~1e-7 per operation and accumulates over at most tens of terms here
 *                   (<1e-5); the FD error is O(h^2 f''') + O(eps_double |L| / h) ~ 1e-9.
 *                   A formula error (missing term, wrong sign, wrong head) is O(1).
 *   FWD_RTOL  1e-5  float32 forward vs double reference forward: a few float roundings
 *                   (2^-24 = 6e-8 each) over reductions of <= 40 terms. */
#ifndef TV_OPS_CHECK_H
#define TV_OPS_CHECK_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "test_util.h"

#define GRAD_RTOL 1e-3
#define FWD_RTOL 1e-5
#define FD_STEP 1e-6
#define GARBAGE 777.0f /* pre-fill of "written" outputs: an accumulating kernel is caught */

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
static void expect_rel_at(const char *file, int line, double err, double tol,
                          const char *fmt, ...) {
  char what[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  tv_test_checks++;
  if (!(err <= tol)) {
    tv_test_failures++;
    fprintf(stderr, "%s:%d: FAILED [%s] %s: rel err %.3g > tol %.1g\n", file, line, g_label,
            what, err, tol);
  } else if (g_verbose) {
    printf("  ok [%s] %-48s rel err %.3g (tol %.1g)\n", g_label, what, err, tol);
  }
}
#define EXPECT_REL(err, tol, ...) expect_rel_at(__FILE__, __LINE__, (err), (tol), __VA_ARGS__)

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

/* Runs run_all on the CPU backend with default threads, then 3 threads: a kernel whose
 * split over threads is wrong (a missed tail block, a race) shows up in one of them. */
static void run_on_cpu_backends(void (*run_all)(Backend *be)) {
  g_verbose = getenv("TV_VERBOSE") != NULL;
  const int threads[2] = {0, 3};
  const char *labels[2] = {"cpu threads=default", "cpu threads=3"};
  for (int t = 0; t < 2; t++) {
    Backend *be = backend_cpu_create(threads[t]);
    g_label = labels[t];
    run_all(be);
    backend_destroy(be);
  }
}

#endif
