/* Minimal test harness: checks that count failures and a main() that reports them.
 * A test program exits 0 when every check passed, 1 otherwise, 77 to mean "skipped". */
#ifndef TV_TEST_UTIL_H
#define TV_TEST_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int tv_test_failures = 0;
static int tv_test_checks = 0;

#define EXPECT(cond, ...)                                              \
  do {                                                                 \
    tv_test_checks++;                                                  \
    if (!(cond)) {                                                     \
      tv_test_failures++;                                              \
      fprintf(stderr, "%s:%d: FAILED: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                    \
      fprintf(stderr, "\n");                                           \
    }                                                                  \
  } while (0)

/* |a - b| <= atol + rtol * |b| */
#define EXPECT_CLOSE(a, b, rtol, atol, what)                                            \
  do {                                                                                  \
    double tv_a_ = (double)(a), tv_b_ = (double)(b);                                    \
    EXPECT(fabs(tv_a_ - tv_b_) <= (atol) + (rtol) * fabs(tv_b_), "%s: got %.9g want %.9g", \
           (what), tv_a_, tv_b_);                                                       \
  } while (0)

static inline int tv_test_report(const char *name) {
  printf("%s: %d checks, %d failed\n", name, tv_test_checks, tv_test_failures);
  return tv_test_failures ? 1 : 0;
}

/* Relative error of two vectors: max_i |a_i - b_i| / max(max_i |b_i|, floor). */
static inline double tv_max_rel_err(const float *a, const double *b, size_t n, double floor_) {
  double num = 0, den = floor_;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (d > num) num = d;
    if (fabs(b[i]) > den) den = fabs(b[i]);
  }
  return num / den;
}

#endif
