/* What both kinds of `tvaccine bench` share: the fixed model configs, their random batch
 * and the median of the timed steps. */
#include <stdlib.h>

#include "bench.h"
#include "rng.h"

const BenchConfig bench_configs[] = {
    {.name = "M", .V = 8192, .D = 512, .L = 8, .H = 8, .Hkv = 8, .F = 1376, .T = 256, .B = 4,
     .r = 8},
    {.name = "S", .V = 1024, .D = 128, .L = 2, .H = 4, .Hkv = 2, .F = 344, .T = 64, .B = 2,
     .r = 8},
};
const int bench_config_count = (int)(sizeof bench_configs / sizeof bench_configs[0]);

int64_t bench_random_batch(const BenchConfig *bc, int32_t *tokens, int32_t *targets) {
  size_t n = (size_t)bc->B * bc->T;
  Rng rng = rng_make(7, rng_stream_id(RNG_TAG_DATA, 0, 0, 0));
  for (size_t i = 0; i < n; i++) tokens[i] = (int32_t)(rng_next_u64(&rng) % (uint64_t)bc->V);
  for (size_t i = 0; i < n; i++) targets[i] = (i + 1) % bc->T ? tokens[i + 1] : -1;
  return (int64_t)(n - (size_t)bc->B);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double bench_median(double *values, int n) {
  qsort(values, (size_t)n, sizeof(double), cmp_double);
  return values[n / 2];
}
