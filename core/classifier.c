/* Sequence classification by the KV-cache decoder's prefill: sequences are packed into
 * decoder calls, and each one's pooled row goes through the final norm and the score head.
 * Letters: m sequences of a call, D width, K labels. */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "classifier.h"
#include "decode.h"

struct Classifier {
  Stage *s;
  Backend *be;
  Decoder *d;
  float *score;     /* [K, D] backend memory */
  float *logits;    /* [max_seqs, K] backend memory */
  float *host;      /* [max_seqs, K] */
  int K, pad_id, max_seqs, max_len, max_rows;
  int32_t *seq;     /* [max_rows] slot of each row */
  int *pool_rows;   /* [max_seqs] */
};

Classifier *classifier_create(Stage *s, const float *score, int num_labels, int pad_id,
                              int max_seqs, int max_len) {
  TV_CHECK(stage_is_first(s) && stage_is_last(s), "a classifier needs every layer in one stage");
  TV_CHECK(num_labels >= 1 && max_seqs >= 1 && max_len >= 1, "classifier sizes must be positive");
  Classifier *c = tv_calloc(1, sizeof(Classifier));
  Backend *be = stage_backend(s);
  size_t D = (size_t)stage_config(s)->hidden_size, K = (size_t)num_labels;
  c->s = s;
  c->be = be;
  c->K = num_labels;
  c->pad_id = pad_id;
  c->max_seqs = max_seqs;
  c->max_len = max_len;
  /* A call holds whole sequences: room for max_seqs of the longest. */
  c->max_rows = max_seqs * max_len;
  c->d = decoder_create(s, max_seqs, max_len, c->max_rows);
  c->score = be->alloc(be, K * D * sizeof(float));
  be->from_host(be, c->score, score, K * D * sizeof(float));
  c->logits = be->alloc(be, (size_t)max_seqs * K * sizeof(float));
  c->host = tv_malloc((size_t)max_seqs * K * sizeof(float));
  c->seq = tv_malloc((size_t)c->max_rows * sizeof(int32_t));
  c->pool_rows = tv_malloc((size_t)max_seqs * sizeof(int));
  return c;
}

void classifier_destroy(Classifier *c) {
  if (!c) return;
  decoder_destroy(c->d);
  c->be->free(c->be, c->score);
  c->be->free(c->be, c->logits);
  free(c->host);
  free(c->seq);
  free(c->pool_rows);
  free(c);
}

int classifier_pool_index(const int32_t *ids, int n, int pad_id) {
  for (int t = n - 1; t >= 0; t--)
    if (ids[t] != pad_id) return t;
  return 0;
}

/* Sequences [i0, i0 + m) in one decoder call, probabilities into probs. */
static void classify_group(Classifier *c, size_t i0, int m, const int32_t *ids,
                           const size_t *offset, float *probs) {
  Backend *be = c->be;
  int D = stage_config(c->s)->hidden_size, K = c->K, rows = 0;
  size_t a = offset[i0];
  for (int j = 0; j < m; j++) {
    size_t b = offset[i0 + j], e = offset[i0 + j + 1];
    c->pool_rows[j] = rows + classifier_pool_index(ids + b, (int)(e - b), c->pad_id);
    for (size_t t = b; t < e; t++) c->seq[rows++] = j;
  }
  decoder_clear(c->d);
  decoder_forward(c->d, rows, c->seq, ids + a, NULL);
  const float *h = decoder_final_hidden(c->d, c->pool_rows, m);
  /* logits[m, K] = h[m, D] score[K, D]^T */
  be->gemm(be, 0, 1, m, K, D, 1.0f, h, D, c->score, D, 0.0f, c->logits, K);
  be->to_host(be, c->host, c->logits, (size_t)m * K * sizeof(float));
  for (size_t k = 0; k < (size_t)m * K; k++)
    probs[i0 * K + k] = (float)(1.0 / (1.0 + exp(-(double)c->host[k])));
}

void classifier_probs(Classifier *c, size_t n, const int32_t *ids, const size_t *offset,
                      float *probs) {
  for (size_t i = 0; i < n; i++) {
    size_t len = offset[i + 1] - offset[i];
    if (len < 1 || len > (size_t)c->max_len)
      tv_die("classifier input %zu has %zu tokens (1 .. %d allowed)", i, len, c->max_len);
  }
  for (size_t i0 = 0; i0 < n;) {
    int m = n - i0 < (size_t)c->max_seqs ? (int)(n - i0) : c->max_seqs;
    classify_group(c, i0, m, ids, offset, probs);
    i0 += (size_t)m;
  }
}
