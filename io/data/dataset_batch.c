/* Batches from encoded samples (tokens + shifted, masked targets) and the seeded orders
 * that pick them: per-epoch training order and the cycling harmful probe order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dataset.h"

size_t dataset_fill_batch(const EncodedSet *s, const size_t *idx, int count, Batch *b) {
  TV_CHECK(count >= 1 && count <= b->max_B, "batch of %d samples, capacity %d", count, b->max_B);
  int T = 1;
  for (int r = 0; r < count; r++) {
    TV_CHECK(idx[r] < s->n, "sample index %zu of %zu", idx[r], s->n);
    int len = encoded_len(s, idx[r]);
    if (len > T) T = len;
  }
  TV_CHECK(T <= b->max_T, "batch length %d exceeds capacity %d", T, b->max_T);
  b->B = count;
  b->T = T;
  size_t n_targets = 0;
  for (int r = 0; r < count; r++) {
    const int32_t *ids = s->ids + s->offset[idx[r]];
    int len = encoded_len(s, idx[r]), np = s->n_prompt[idx[r]];
    int32_t *tok = b->tokens + (size_t)r * T, *tgt = b->targets + (size_t)r * T;
    for (int t = 0; t < T; t++) {
      tok[t] = t < len ? ids[t] : s->pad_id;
      /* Position t predicts token t + 1: a target only if t + 1 is a response token. */
      int next = t + 1;
      if (next < len && next >= np) {
        tgt[t] = ids[next];
        n_targets++;
      } else {
        tgt[t] = -1;
      }
    }
  }
  b->n_targets = n_targets;
  return n_targets;
}

static void sampler_init(DataSampler *s, size_t n, int batch_size, uint64_t seed, uint32_t purpose,
                         int shuffle, int wrap) {
  if (n == 0) tv_die("cannot draw batches from an empty dataset");
  if (batch_size < 1) tv_die("batch size must be at least 1, got %d", batch_size);
  memset(s, 0, sizeof *s);
  s->n = n;
  s->batch_size = batch_size;
  s->seed = seed;
  s->purpose = purpose;
  s->shuffle = shuffle;
  s->wrap = wrap;
  s->order = tv_malloc(n * sizeof *s->order);
  s->order_epoch = UINT64_MAX;
}

void data_sampler_init_epochs(DataSampler *s, size_t n, int batch_size, uint64_t seed, int shuffle) {
  sampler_init(s, n, batch_size, seed, DATA_STREAM_EPOCH, shuffle, 0);
}

void data_sampler_init_probe(DataSampler *s, size_t n, int batch_size, uint64_t seed) {
  sampler_init(s, n, batch_size, seed, DATA_STREAM_PROBE, 1, 1);
}

void data_sampler_free(DataSampler *s) {
  free(s->order);
  memset(s, 0, sizeof *s);
}

/* The order is a pure function of (seed, purpose, epoch), so it is redrawn rather than
 * stored: a restored cursor needs nothing else. */
static void ensure_order(DataSampler *s) {
  if (s->order_epoch == s->cur.epoch) return;
  if (s->shuffle) {
    dataset_permutation(s->n, s->seed, s->purpose, s->cur.epoch, s->order);
  } else {
    for (size_t i = 0; i < s->n; i++) s->order[i] = i;
  }
  s->order_epoch = s->cur.epoch;
}

/* An epoch that has been used up moves the cursor to the start of the next one, so a
 * stored cursor never points past the data. */
static void advance(DataSampler *s, size_t k) {
  s->cur.position += k;
  if (s->cur.position >= s->n) {
    s->cur.epoch++;
    s->cur.position = 0;
  }
}

int data_sampler_next(DataSampler *s, size_t *idx) {
  if (!s->wrap) {
    ensure_order(s);
    size_t left = s->n - (size_t)s->cur.position;
    int count = left < (size_t)s->batch_size ? (int)left : s->batch_size;
    memcpy(idx, s->order + s->cur.position, (size_t)count * sizeof *idx);
    advance(s, (size_t)count);
    return count;
  }
  for (int k = 0; k < s->batch_size; k++) {
    ensure_order(s);
    idx[k] = s->order[s->cur.position];
    advance(s, 1);
  }
  return s->batch_size;
}

size_t data_sampler_batches_per_epoch(const DataSampler *s) {
  return (s->n + (size_t)s->batch_size - 1) / (size_t)s->batch_size;
}

int data_sampler_seek(DataSampler *s, DataCursor c, char *err, size_t errlen) {
  if (c.position > s->n) {
    snprintf(err, errlen, "data cursor position %llu is beyond the %zu samples of the data set",
             (unsigned long long)c.position, s->n);
    return -1;
  }
  s->cur = c;
  advance(s, 0);
  return 0;
}
