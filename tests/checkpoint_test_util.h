/* Shared by the checkpoint tests (test_checkpoint.c, test_checkpoint_corrupt.c): random
 * states, bit-exact comparison, expected load results and a scratch folder per run.
 * Needs nftw: the including file defines _XOPEN_SOURCE 700 before any include. */
#ifndef TV_CHECKPOINT_TEST_UTIL_H
#define TV_CHECKPOINT_TEST_UTIL_H

#include <ftw.h>
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "test_util.h"

static uint64_t rng_state;
static uint64_t rnd(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static char *dup_str(const char *s) {
  char *d = malloc(strlen(s) + 1);
  strcpy(d, s);
  return d;
}

/* Random contents in every field. Floats are random bit patterns (NaN payloads, infinities,
 * subnormals included), so "bit-exact" means exactly that. */
static void make_state(CheckpointState *s, uint64_t seed, int L, int64_t N, int A) {
  rng_state = seed;
  memset(s, 0, sizeof *s);
  s->total_steps = (int64_t)(rnd() % 100000) + 1;
  s->step = (int64_t)(rnd() % (uint64_t)(s->total_steps + 1));
  s->seed = rnd();
  s->sample_rng_stream = rnd();
  s->sample_rng_counter = rnd();
  s->data_epoch = (int64_t)(rnd() >> 2);
  s->data_cursor = (int64_t)(rnd() >> 2);
  s->probe_epoch = (int64_t)(rnd() >> 2);
  s->probe_cursor = (int64_t)(rnd() >> 2);
  s->model_digest = rnd();
  s->tokenizer_digest = rnd();
  s->data_digest = rnd();
  s->probe_digest = rnd();
  s->num_layers = L;
  s->layer_probs = malloc(sizeof(double) * (size_t)L);
  double sum = 0;
  for (int l = 0; l < L; l++) sum += (s->layer_probs[l] = (double)(rnd() >> 11) + 1.0);
  for (int l = 0; l < L; l++) s->layer_probs[l] /= sum;
  int *perm = malloc(sizeof(int) * (size_t)L);
  for (int l = 0; l < L; l++) perm[l] = l;
  for (int l = L - 1; l > 0; l--) {
    int j = (int)(rnd() % (uint64_t)(l + 1)), t = perm[l];
    perm[l] = perm[j], perm[j] = t;
  }
  s->num_active = A;
  s->active_layers = malloc(sizeof(int32_t) * (size_t)(A > 0 ? A : 1));
  for (int i = 0; i < A; i++) s->active_layers[i] = perm[i];
  free(perm);
  size_t ylen = 1 + rnd() % 400;
  s->config_yaml = malloc(ylen + 1);
  for (size_t i = 0; i < ylen; i++) s->config_yaml[i] = (char)(1 + rnd() % 255); /* no NUL */
  s->config_yaml[ylen] = '\0';
  static const char *methods[] = {"sft", "vaccine", "tvaccine"};
  s->method = dup_str(methods[rnd() % 3]);
  s->lora_r = 1 + (int)(rnd() % 64);
  s->lora_alpha = (double)(rnd() >> 11) / 1e9;
  s->lora_target_mask = 1 + (uint32_t)(rnd() % 127);
  s->layer_numel = N;
  size_t n = (size_t)L * (size_t)N;
  float **arrays[3] = {&s->lora_params, &s->lora_m, &s->lora_v};
  for (int a = 0; a < 3; a++) {
    *arrays[a] = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) {
      uint32_t bits = (uint32_t)rnd();
      memcpy(&(*arrays[a])[i], &bits, 4);
    }
  }
  s->lora_steps = malloc(sizeof(int64_t) * (size_t)L * LORA_NUM_TARGETS);
  for (int l = 0; l < L * LORA_NUM_TARGETS; l++) s->lora_steps[l] = (int64_t)(rnd() % 1000000);
}

static void expect_same(const CheckpointState *a, const CheckpointState *b, const char *what) {
#define SAME(f) EXPECT(a->f == b->f, "%s: field " #f " differs", what)
  SAME(step); SAME(total_steps); SAME(seed); SAME(sample_rng_stream); SAME(sample_rng_counter);
  SAME(data_epoch); SAME(data_cursor); SAME(probe_epoch); SAME(probe_cursor);
  SAME(model_digest); SAME(tokenizer_digest); SAME(data_digest); SAME(probe_digest);
  SAME(num_layers); SAME(num_active); SAME(lora_r); SAME(lora_target_mask); SAME(layer_numel);
#undef SAME
  EXPECT(memcmp(&a->lora_alpha, &b->lora_alpha, sizeof(double)) == 0, "%s: lora_alpha", what);
  if (a->num_layers != b->num_layers || a->num_active != b->num_active ||
      a->layer_numel != b->layer_numel)
    return;
  size_t L = (size_t)a->num_layers, n = L * (size_t)a->layer_numel;
  EXPECT(!memcmp(a->layer_probs, b->layer_probs, L * sizeof(double)), "%s: layer_probs", what);
  EXPECT(!memcmp(a->active_layers, b->active_layers, (size_t)a->num_active * sizeof(int32_t)),
         "%s: active_layers", what);
  EXPECT(!strcmp(a->config_yaml, b->config_yaml), "%s: config_yaml", what);
  EXPECT(!strcmp(a->method, b->method), "%s: method", what);
  EXPECT(!memcmp(a->lora_params, b->lora_params, n * sizeof(float)), "%s: lora_params", what);
  EXPECT(!memcmp(a->lora_m, b->lora_m, n * sizeof(float)), "%s: lora_m", what);
  EXPECT(!memcmp(a->lora_v, b->lora_v, n * sizeof(float)), "%s: lora_v", what);
  EXPECT(!memcmp(a->lora_steps, b->lora_steps, L * LORA_NUM_TARGETS * sizeof(int64_t)),
         "%s: lora_steps", what);
}

/* Loads path and expects exactly `want`. */
static void expect_loads(const char *path, const CheckpointState *want, const char *what) {
  CheckpointState got;
  char err[1024];
  const char *msg = checkpoint_load(path, &got, err, sizeof err);
  EXPECT(msg == NULL, "%s: load failed: %s", what, msg);
  if (msg) return;
  expect_same(want, &got, what);
  checkpoint_state_free(&got);
}

/* Loads path and expects one line naming the file and containing `needle`; *s zeroed. */
static void expect_load_error(const char *path, const char *needle, const char *what) {
  CheckpointState s;
  char err[1024];
  memset(&s, 0xab, sizeof s);
  const char *msg = checkpoint_load(path, &s, err, sizeof err);
  EXPECT(msg != NULL, "%s: a bad file loaded", what);
  if (!msg) {
    checkpoint_state_free(&s);
    return;
  }
  char prefix[600];
  snprintf(prefix, sizeof prefix, "checkpoint %s: ", path);
  EXPECT(strncmp(msg, prefix, strlen(prefix)) == 0, "%s: '%s' does not name the file", what, msg);
  EXPECT(!needle || strstr(msg, needle), "%s: '%s' lacks '%s'", what, msg, needle);
  EXPECT(!strchr(msg, '\n'), "%s: message has several lines: '%s'", what, msg);
  CheckpointState zero;
  memset(&zero, 0, sizeof zero);
  EXPECT(!memcmp(&s, &zero, sizeof s), "%s: state not zeroed after a failed load", what);
  ssize_t open_ids = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL);
  EXPECT(open_ids == 0, "%s: %zd HDF5 ids left open", what, open_ids);
  if (needle) printf("  %-28s -> %s\n", what, msg + strlen(prefix));
}

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* ---- scratch folder ---- */

static char root[64]; /* scratch folder of this run, with its checkpoints/ folder */

static int scratch_create(void) {
  snprintf(root, sizeof root, "/tmp/tv_checkpoint_XXXXXX");
  if (!mkdtemp(root)) {
    perror("mkdtemp");
    return -1;
  }
  checkpoint_dir_create(root);
  return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static void scratch_remove(void) { nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

#endif
