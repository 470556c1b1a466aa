/* io/dataset from tokens on: encoding against the Alpaca reference preprocessing
 * (tests/ref/dataset_ref.py), label masks, truncation, batches, epoch and probe orders.
 * Usage: test_dataset_batch DATA_DIR (tests/data/datasets). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "dataset.h"
#include "test_util.h"

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  TV_CHECK(f, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  rewind(f);
  char *s = tv_malloc((size_t)n + 1);
  TV_CHECK(fread(s, 1, (size_t)n, f) == (size_t)n, "cannot read %s", path);
  s[n] = '\0';
  fclose(f);
  return s;
}

/* ---- encoding: ids and labels equal the reference's, for several max_len ---------------- */

static void test_encode(const char *dir) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tok", dir);
  Tokenizer *tok = tokenizer_load(path);
  snprintf(path, sizeof path, "%s/alpaca.json", dir);
  ExampleSet set;
  dataset_load(path, DATASET_FORMAT_AUTO, &set);
  snprintf(path, sizeof path, "%s/encoded_expected.json", dir);
  char *text = read_text(path);
  cJSON *root = cJSON_Parse(text);
  TV_CHECK(root, "cannot parse %s", path);
  int eos = cJSON_GetObjectItem(root, "eos_id")->valueint;
  int pad = cJSON_GetObjectItem(root, "pad_id")->valueint;
  const cJSON *cases = cJSON_GetObjectItem(root, "cases");

  int last_max_len = -1, cases_checked = 0, eos_targets = 0, no_target_sets = 0;
  EncodedSet enc = {0};
  size_t want_truncated = 0, want_no_target = 0;
  const cJSON *c;
  cJSON_ArrayForEach(c, cases) {
    int max_len = cJSON_GetObjectItem(c, "max_len")->valueint;
    size_t i = (size_t)cJSON_GetObjectItem(c, "example")->valueint;
    const cJSON *ids = cJSON_GetObjectItem(c, "ids"), *labels = cJSON_GetObjectItem(c, "labels");
    if (max_len != last_max_len) {
      if (last_max_len > 0) {
        EXPECT(enc.n_truncated == want_truncated && enc.n_no_target == want_no_target,
               "max_len %d: %zu truncated, %zu without target; want %zu, %zu", last_max_len,
               enc.n_truncated, enc.n_no_target, want_truncated, want_no_target);
        encoded_set_free(&enc);
      }
      dataset_encode(tok, &set, max_len, &enc);
      /* The reference's cases decide whether the whole set keeps a target at this max_len. */
      int want_targets = 0;
      const cJSON *d;
      cJSON_ArrayForEach(d, cases) {
        if (cJSON_GetObjectItem(d, "max_len")->valueint != max_len) continue;
        const cJSON *lab;
        cJSON_ArrayForEach(lab, cJSON_GetObjectItem(d, "labels")) want_targets |= lab->valueint != -100;
      }
      char err[512] = "";
      int rc = dataset_check_targets(&enc, path, err, sizeof err);
      char want_msg[64];
      snprintf(want_msg, sizeof want_msg, "after truncation to max_len %d", max_len);
      EXPECT(want_targets ? rc == 0 : rc == -1 && strstr(err, path) && strstr(err, want_msg),
             "max_len %d: reference has targets %d, check %d '%s'", max_len, want_targets, rc, err);
      no_target_sets += !want_targets;
      EXPECT(enc.n == set.n && enc.pad_id == pad, "pad id %d, want %d (no pad token: EOS)", enc.pad_id, pad);
      last_max_len = max_len;
      want_truncated = want_no_target = 0;
    }
    int n = cJSON_GetArraySize(ids), len = encoded_len(&enc, i);
    EXPECT(len == n, "max_len %d example %zu: %d tokens, reference %d", max_len, i, len, n);
    int mismatch = -1, any_target = 0;
    for (int t = 0; t < n && t < len; t++) {
      int want_id = cJSON_GetArrayItem(ids, t)->valueint;
      int want_label = cJSON_GetArrayItem(labels, t)->valueint;
      int got_id = enc.ids[enc.offset[i] + (size_t)t];
      int got_label = t < enc.n_prompt[i] ? -100 : got_id;
      if (got_id != want_id || got_label != want_label) {
        if (mismatch < 0) mismatch = t;
      }
      any_target |= want_label != -100;
    }
    EXPECT(mismatch < 0, "max_len %d example %zu: first difference from the reference at token %d",
           max_len, i, mismatch);
    /* The reference is cut at max_len; a sample whose EOS is its last kept token was not cut. */
    if (n == max_len && cJSON_GetArrayItem(ids, n - 1)->valueint != eos) want_truncated++;
    if (!any_target) want_no_target++;
    if (n > 0 && cJSON_GetArrayItem(labels, n - 1)->valueint == eos) eos_targets++;
    cases_checked++;
  }
  EXPECT(enc.n_truncated == want_truncated && enc.n_no_target == want_no_target,
         "max_len %d: %zu truncated, %zu without target; want %zu, %zu", last_max_len, enc.n_truncated,
         enc.n_no_target, want_truncated, want_no_target);
  EXPECT(cases_checked == 18, "%d reference cases", cases_checked);
  EXPECT(no_target_sets > 0, "no max_len of the reference leaves the set without targets");
  EXPECT(eos_targets >= 3, "the EOS must be a labelled target (seen %d times)", eos_targets);
  encoded_set_free(&enc);

  /* In a batch, the position before the EOS predicts it; padding predicts nothing. */
  dataset_encode(tok, &set, 512, &enc);
  Batch b = batch_alloc(3, 512);
  size_t idx[3] = {2, 0, 1};
  size_t nt = dataset_fill_batch(&enc, idx, 3, &b);
  EXPECT(nt == enc.n_target_tokens, "batch of all samples: %zu targets, set has %zu", nt, enc.n_target_tokens);
  int len2 = encoded_len(&enc, 2);
  EXPECT(b.targets[len2 - 2] == eos && b.targets[len2 - 1] == -1, "EOS target at the last real position");
  EXPECT(b.tokens[len2] == pad && b.targets[len2] == -1, "padding is the pad id and ignored");
  batch_free(&b);
  char line[256];
  dataset_encode_summary(&enc, "alpaca.json", line, sizeof line);
  EXPECT(strstr(line, "3 samples") != NULL, "summary: %s", line);
  encoded_set_free(&enc);

  cJSON_Delete(root);
  free(text);
  example_set_free(&set);
  tokenizer_free(tok);
}

/* ---- batches from a hand-made encoded set ------------------------------------------------- */

static void test_batch_assembly(void) {
  /* s0 = [1 10 11 12 2] prompt 3; s1 = [1 20 2] prompt 1; s2 = [1 30 31 32 33 34] all prompt. */
  int32_t ids[] = {1, 10, 11, 12, 2, 1, 20, 2, 1, 30, 31, 32, 33, 34};
  size_t offset[] = {0, 5, 8, 14};
  int32_t n_prompt[] = {3, 1, 6};
  EncodedSet s = {.n = 3, .ids = ids, .offset = offset, .n_prompt = n_prompt, .max_len = 8,
                  .pad_id = 99, .n_no_target = 1, .n_target_tokens = 4};
  Batch b = batch_alloc(2, 8);

  size_t i01[2] = {0, 1};
  size_t nt = dataset_fill_batch(&s, i01, 2, &b);
  int32_t tok01[] = {1, 10, 11, 12, 2, 1, 20, 2, 99, 99};
  int32_t tgt01[] = {-1, -1, 12, 2, -1, 20, 2, -1, -1, -1};
  EXPECT(b.B == 2 && b.T == 5 && nt == 4 && b.n_targets == 4, "B %d T %d targets %zu", b.B, b.T, nt);
  EXPECT(memcmp(b.tokens, tok01, sizeof tok01) == 0, "tokens of batch {0, 1}");
  EXPECT(memcmp(b.targets, tgt01, sizeof tgt01) == 0, "targets of batch {0, 1}");

  size_t i20[2] = {2, 0};
  nt = dataset_fill_batch(&s, i20, 2, &b);
  int32_t tok20[] = {1, 30, 31, 32, 33, 34, 1, 10, 11, 12, 2, 99};
  int32_t tgt20[] = {-1, -1, -1, -1, -1, -1, -1, -1, 12, 2, -1, -1};
  EXPECT(b.B == 2 && b.T == 6 && nt == 2, "B %d T %d targets %zu", b.B, b.T, nt);
  EXPECT(memcmp(b.tokens, tok20, sizeof tok20) == 0, "tokens of batch {2, 0}");
  EXPECT(memcmp(b.targets, tgt20, sizeof tgt20) == 0, "targets of batch {2, 0}");

  size_t i2[1] = {2};
  nt = dataset_fill_batch(&s, i2, 1, &b);
  EXPECT(b.B == 1 && b.T == 6 && nt == 0, "a prompt-only sample has no targets (%zu)", nt);
  batch_free(&b);
}

/* ---- orders -------------------------------------------------------------------------------- */

static int is_permutation(const size_t *v, size_t n) {
  int seen[64] = {0};
  for (size_t i = 0; i < n; i++) {
    if (v[i] >= n || seen[v[i]]) return 0;
    seen[v[i]] = 1;
  }
  return 1;
}

/* Draws `batches` batches, concatenating indices into out (and sizes into sizes). */
static size_t draw(DataSampler *s, int batches, size_t *out, int *sizes) {
  size_t k = 0;
  for (int i = 0; i < batches; i++) {
    int n = data_sampler_next(s, out + k);
    if (sizes) sizes[i] = n;
    k += (size_t)n;
  }
  return k;
}

static void test_epoch_order(void) {
  DataSampler a, b;
  size_t ea[30], eb[30];
  int sizes[9];
  data_sampler_init_epochs(&a, 10, 4, 7, 1);
  EXPECT(data_sampler_batches_per_epoch(&a) == 3, "ceil(10 / 4)");
  size_t k = draw(&a, 9, ea, sizes);
  EXPECT(k == 30, "3 epochs of 10 samples, got %zu", k);
  for (int i = 0; i < 9; i++) EXPECT(sizes[i] == (i % 3 == 2 ? 2 : 4), "batch %d has %d samples", i, sizes[i]);
  for (int e = 0; e < 3; e++) EXPECT(is_permutation(ea + 10 * e, 10), "epoch %d is not a permutation", e);
  EXPECT(a.cur.epoch == 3 && a.cur.position == 0, "cursor (%llu, %llu) after 3 epochs",
         (unsigned long long)a.cur.epoch, (unsigned long long)a.cur.position);
  EXPECT(memcmp(ea, ea + 10, 10 * sizeof *ea) != 0 && memcmp(ea + 10, ea + 20, 10 * sizeof *ea) != 0,
         "epochs share one order");
  size_t perm[10];
  dataset_permutation(10, 7, DATA_STREAM_EPOCH, 1, perm);
  EXPECT(memcmp(perm, ea + 10, sizeof perm) == 0, "epoch 1 is permutation (seed, DATA, epoch 1)");

  data_sampler_init_epochs(&b, 10, 4, 7, 1);
  draw(&b, 9, eb, NULL);
  EXPECT(memcmp(ea, eb, sizeof ea) == 0, "same seed, different order");
  data_sampler_free(&b);
  data_sampler_init_epochs(&b, 10, 4, 8, 1);
  draw(&b, 3, eb, NULL);
  EXPECT(memcmp(ea, eb, 10 * sizeof *ea) != 0, "different seeds, same order");
  data_sampler_free(&b);
  /* The batch size only cuts the order; it does not change it. */
  data_sampler_init_epochs(&b, 10, 3, 7, 1);
  draw(&b, 4, eb, NULL);
  EXPECT(memcmp(ea, eb, 10 * sizeof *ea) == 0, "batch size changed the epoch order");
  data_sampler_free(&b);
  data_sampler_init_epochs(&b, 10, 4, 7, 0);
  draw(&b, 3, eb, NULL);
  for (size_t i = 0; i < 10; i++) EXPECT(eb[i] == i, "unshuffled order at %zu", i);
  data_sampler_free(&b);

  /* Cursor save/restore: mid-epoch and on an epoch boundary. */
  for (int skip = 1; skip <= 3; skip++) {
    data_sampler_free(&a);
    data_sampler_init_epochs(&a, 10, 4, 7, 1);
    draw(&a, skip, ea, NULL);
    DataCursor saved = a.cur;
    size_t na = draw(&a, 7, ea, NULL);
    char err[128];
    data_sampler_init_epochs(&b, 10, 4, 7, 1);
    EXPECT(data_sampler_seek(&b, saved, err, sizeof err) == 0, "seek: %s", err);
    size_t nb = draw(&b, 7, eb, NULL);
    EXPECT(na == nb && memcmp(ea, eb, na * sizeof *ea) == 0, "restored cursor after %d batches differs", skip);
    DataCursor bad = {.epoch = 0, .position = 11};
    EXPECT(data_sampler_seek(&b, bad, err, sizeof err) == -1 && strstr(err, "11"), "seek beyond data");
    data_sampler_free(&b);
  }
  data_sampler_free(&a);

  /* Each element lands in each position about equally often (no modulo bias or
   * off-by-one in the shuffle): 5 positions x 20000 epochs, 4000 expected per cell. */
  int count[5][5] = {{0}};
  for (uint64_t e = 0; e < 20000; e++) {
    dataset_permutation(5, 42, DATA_STREAM_EPOCH, e, perm);
    for (int p = 0; p < 5; p++) count[p][perm[p]]++;
  }
  int worst = 0;
  for (int p = 0; p < 5; p++)
    for (int v = 0; v < 5; v++) {
      int d = abs(count[p][v] - 4000);
      if (d > worst) worst = d;
    }
  EXPECT(worst < 300, "position counts deviate by %d from 4000 (sd ~57)", worst);
}

static void test_probe_order(void) {
  DataSampler p, q, e;
  size_t a[30], b[30], c[10];
  int sizes[10];
  data_sampler_init_probe(&p, 5, 3, 7);
  size_t k = draw(&p, 10, a, sizes);
  EXPECT(k == 30, "probe batches are always full");
  for (int i = 0; i < 6; i++) EXPECT(is_permutation(a + 5 * i, 5), "probe cycle %d is not a permutation", i);
  EXPECT(memcmp(a, a + 5, 5 * sizeof *a) != 0, "probe cycles share one order");
  /* Its own stream: not the training order under the same seed. */
  data_sampler_init_epochs(&e, 5, 5, 7, 1);
  draw(&e, 1, c, NULL);
  EXPECT(memcmp(a, c, 5 * sizeof *a) != 0, "probe order equals the training order");
  data_sampler_free(&e);
  /* Cursor restore inside a batch that spans two cycles. */
  data_sampler_free(&p);
  data_sampler_init_probe(&p, 5, 3, 7);
  draw(&p, 1, a, NULL);
  DataCursor saved = p.cur;
  draw(&p, 6, a, NULL);
  char err[128];
  data_sampler_init_probe(&q, 5, 3, 7);
  EXPECT(data_sampler_seek(&q, saved, err, sizeof err) == 0, "seek: %s", err);
  draw(&q, 6, b, NULL);
  EXPECT(memcmp(a, b, 18 * sizeof *a) == 0, "restored probe cursor differs");
  data_sampler_free(&p);
  data_sampler_free(&q);
}

/* A tokenizer_config.json with add_eos_token: true must give the same samples: the EOS its
 * special-token rule appends is the one the target ends with, not a second one, and the
 * prompt length does not count it. */
static void test_encode_add_eos_token(const char *dir) {
  char path[1024], tmp[] = "/tmp/tv_tok_eos_XXXXXX";
  TV_CHECK(mkdtemp(tmp), "mkdtemp failed");
  snprintf(path, sizeof path, "%s/tok/tokenizer.json", dir);
  char *json = read_text(path);
  snprintf(path, sizeof path, "%s/tokenizer.json", tmp);
  FILE *f = fopen(path, "w");
  TV_CHECK(f, "cannot write %s", path);
  fputs(json, f);
  fclose(f);
  snprintf(path, sizeof path, "%s/tokenizer_config.json", tmp);
  f = fopen(path, "w");
  TV_CHECK(f, "cannot write %s", path);
  fputs("{\"add_bos_token\": true, \"add_eos_token\": true, \"bos_token\": \"<s>\", "
        "\"eos_token\": \"</s>\", \"unk_token\": \"<unk>\", \"pad_token\": null}\n", f);
  fclose(f);
  snprintf(path, sizeof path, "%s/tok", dir);
  Tokenizer *plain = tokenizer_load(path), *with_eos = tokenizer_load(tmp);
  int32_t *ids = NULL;
  int n = tokenizer_encode(with_eos, "hi", 2, 1, &ids);
  EXPECT(n > 0 && ids[n - 1] == tokenizer_eos_id(with_eos), "the variant must append EOS itself");
  free(ids);
  snprintf(path, sizeof path, "%s/alpaca.json", dir);
  ExampleSet set;
  dataset_load(path, DATASET_FORMAT_AUTO, &set);
  EncodedSet a, b;
  dataset_encode(plain, &set, 256, &a);
  dataset_encode(with_eos, &set, 256, &b);
  EXPECT(a.offset[a.n] == b.offset[b.n] && !memcmp(a.ids, b.ids, a.offset[a.n] * sizeof *a.ids) &&
             !memcmp(a.n_prompt, b.n_prompt, a.n * sizeof *a.n_prompt),
         "add_eos_token: true changed the encoded samples");
  encoded_set_free(&a);
  encoded_set_free(&b);
  example_set_free(&set);
  tokenizer_free(plain);
  tokenizer_free(with_eos);
  free(json);
  snprintf(path, sizeof path, "rm -rf %s", tmp);
  TV_CHECK(system(path) == 0, "cannot remove %s", tmp);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DATA_DIR\n", argv[0]);
    return 2;
  }
  test_batch_assembly();
  test_epoch_order();
  test_probe_order();
  test_encode(argv[1]);
  test_encode_add_eos_token(argv[1]);
  return tv_test_report("test_dataset_batch");
}
