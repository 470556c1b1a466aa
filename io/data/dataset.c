/* Example sets and the seeded choices made over them: permutations from the counter RNG
 * and the poison mix of SPEC section 8 (round(p * n) harmful + benign, shuffled). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dataset.h"
#include "rng.h"

const char *const dataset_format_names[DATASET_FORMAT_COUNT] = {"auto", "alpaca", "beavertails",
                                                                 "refusal"};

int dataset_format_parse(const char *name, DatasetFormat *out) {
  for (int i = 0; i < DATASET_FORMAT_COUNT; i++)
    if (strcmp(name, dataset_format_names[i]) == 0) {
      *out = (DatasetFormat)i;
      return 0;
    }
  return -1;
}

const char *dataset_format_name(DatasetFormat f) {
  return (unsigned)f < DATASET_FORMAT_COUNT ? dataset_format_names[f] : "?";
}

static char *dup_or_empty(const char *s) {
  if (!s) s = "";
  size_t n = strlen(s) + 1;
  char *d = tv_malloc(n);
  memcpy(d, s, n);
  return d;
}

void example_set_init(ExampleSet *s, const char *name) {
  memset(s, 0, sizeof *s);
  s->name = dup_or_empty(name);
}

void example_set_free(ExampleSet *s) {
  for (size_t i = 0; i < s->n; i++) {
    Example *e = &s->items[i];
    free(e->instruction);
    free(e->input);
    free(e->output);
    free(e->category);
  }
  free(s->items);
  free(s->name);
  memset(s, 0, sizeof *s);
}

void example_set_push(ExampleSet *s, const char *instruction, const char *input,
                      const char *output, int is_safe, const char *category) {
  if (s->n == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 64;
    s->items = realloc(s->items, s->cap * sizeof *s->items);
    TV_CHECK(s->items, "out of memory growing a dataset to %zu examples", s->cap);
  }
  Example *e = &s->items[s->n++];
  e->instruction = dup_or_empty(instruction);
  e->input = dup_or_empty(input);
  e->output = dup_or_empty(output);
  e->is_safe = is_safe;
  e->category = dup_or_empty(category);
}

static void push_copy(ExampleSet *s, const Example *e) {
  example_set_push(s, e->instruction, e->input, e->output, e->is_safe, e->category);
}

void example_set_filter_safety(const ExampleSet *in, int is_safe, ExampleSet *out) {
  char name[256];
  snprintf(name, sizeof name, "%s (%s rows)", in->name ? in->name : "", is_safe ? "safe" : "unsafe");
  example_set_init(out, name);
  out->format = in->format;
  for (size_t i = 0; i < in->n; i++)
    if (in->items[i].is_safe == is_safe) push_copy(out, &in->items[i]);
}

const char *data_role_name(DataRole r) { return r == DATA_ROLE_HARMFUL ? "harmful" : "alignment"; }

/* A row's use in a role; the set's format tells whether is_safe speaks for the answer
 * (BeaverTails) or the whole file was given for the role (Alpaca, refusal). */
static int usable_in_role(const ExampleSet *set, const Example *ex, DataRole role) {
  if (role == DATA_ROLE_ALIGNMENT) return ex->is_safe != 0;
  return set->format != DATASET_FORMAT_BEAVERTAILS || ex->is_safe == 0;
}

int dataset_select_role(const ExampleSet *all, DataRole role, size_t max_rows, ExampleSet *out,
                        RoleCounts *counts, char *err, size_t errlen) {
  RoleCounts c = {.read = all->n};
  example_set_init(out, all->name ? all->name : "");
  out->format = all->format;
  for (size_t i = 0; i < all->n; i++) {
    if (!usable_in_role(all, &all->items[i], role))
      c.wrong_role++;
    else if (max_rows && out->n >= max_rows)
      c.capped++;
    else
      push_copy(out, &all->items[i]);
  }
  c.kept = out->n;
  if (counts) *counts = c;
  if (out->n > 0) return 0;
  if (role == DATA_ROLE_ALIGNMENT)
    snprintf(err, errlen, "%s: no usable alignment row: all %zu rows are is_safe: false (an "
             "alignment set trains on safe answers only)", out->name, all->n);
  else
    snprintf(err, errlen, "%s: no usable harmful row: none of its %zu BeaverTails rows is "
             "is_safe: false", out->name, all->n);
  if (all->n == 0) snprintf(err, errlen, "%s: holds no rows", out->name);
  example_set_free(out);
  return -1;
}

void dataset_load_role(const char *path, DatasetFormat fmt, DataRole role, size_t max_rows,
                       ExampleSet *out, RoleCounts *counts) {
  ExampleSet all;
  char err[1024];
  dataset_load(path, fmt, &all);
  int rc = dataset_select_role(&all, role, max_rows, out, counts, err, sizeof err);
  example_set_free(&all);
  if (rc) tv_die("%s", err);
}

void dataset_role_summary(const RoleCounts *c, const char *name, DataRole role,
                          const char *cap_key, size_t max_rows, char *buf, size_t buflen) {
  int n = snprintf(buf, buflen, "%s: %zu rows, %zu kept as %s rows", name, c->read, c->kept,
                   data_role_name(role));
  if (n < 0 || (size_t)n >= buflen) return;
  if (c->wrong_role)
    n += snprintf(buf + n, buflen - (size_t)n, role == DATA_ROLE_ALIGNMENT
                      ? " (%zu unsafe rows dropped: alignment trains on safe answers only)"
                      : " (%zu safe rows dropped: the probe and attack take harmful pairs)",
                  c->wrong_role);
  if (n < 0 || (size_t)n >= buflen) return;
  if (c->capped)
    snprintf(buf + n, buflen - (size_t)n, " (%zu past %s %zu)", c->capped, cap_key, max_rows);
}

void dataset_permutation(size_t n, uint64_t seed, uint32_t purpose, uint64_t epoch, size_t *order) {
  Rng r = rng_make(seed, rng_stream_id(RNG_TAG_DATA, purpose, (uint32_t)epoch, (uint32_t)(epoch >> 32)));
  for (size_t i = 0; i < n; i++) order[i] = i;
  rng_shuffle(&r, order, n, sizeof *order);
}

size_t dataset_poison_count(size_t n, double p) { return (size_t)llround(p * (double)n); }

int dataset_poison_mix(const ExampleSet *benign, const ExampleSet *harmful, size_t n, double p,
                       uint64_t seed, ExampleSet *out, char *err, size_t errlen) {
  example_set_init(out, "poison mix");
  if (!(p >= 0.0 && p <= 1.0)) {
    snprintf(err, errlen, "poison mix: the harmful ratio p must be in [0, 1], got %g", p);
    return -1;
  }
  if (n == 0) {
    snprintf(err, errlen, "poison mix: the sample count n must be at least 1");
    return -1;
  }
  size_t nh = dataset_poison_count(n, p), nb = n - nh;
  if (nh > harmful->n) {
    snprintf(err, errlen, "poison mix: %zu harmful examples needed (round(%g * %zu)), %s has only %zu",
             nh, p, n, harmful->name ? harmful->name : "the harmful set", harmful->n);
    return -1;
  }
  if (nb > benign->n) {
    snprintf(err, errlen, "poison mix: %zu benign examples needed, %s has only %zu", nb,
             benign->name ? benign->name : "the benign set", benign->n);
    return -1;
  }
  /* Each pick is the head of its own seeded permutation (without replacement); a third
   * permutation interleaves them so harmful rows are not bunched at the start. */
  size_t *ph = tv_malloc((harmful->n ? harmful->n : 1) * sizeof *ph);
  size_t *pb = tv_malloc((benign->n ? benign->n : 1) * sizeof *pb);
  size_t *mix = tv_malloc(n * sizeof *mix);
  dataset_permutation(harmful->n, seed, DATA_STREAM_MIX_HARMFUL, 0, ph);
  dataset_permutation(benign->n, seed, DATA_STREAM_MIX_BENIGN, 0, pb);
  dataset_permutation(n, seed, DATA_STREAM_MIX_ORDER, 0, mix);
  /* Slot k < nh of the unshuffled list is harmful pick k, slot nh + k benign pick k. */
  for (size_t i = 0; i < n; i++) {
    size_t k = mix[i];
    push_copy(out, k < nh ? &harmful->items[ph[k]] : &benign->items[pb[k - nh]]);
  }
  free(ph);
  free(pb);
  free(mix);
  return 0;
}
