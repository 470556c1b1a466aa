/* KV-cache decoding: appended rows go through the stage's decoder layers one position per
 * row, keys and values are stored per (layer, sequence slot, position) and attention reads
 * them back. Same math as stage_forward without LoRA terms (adapters merged) or dropout.
 * Shapes: n rows, D width, HD = H*Dh, KD = Hkv*Dh, F MLP width, V vocab, Tc = max_len. */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "decode.h"

struct Decoder {
  Stage *s;
  Backend *be;
  int max_seqs, max_len, max_rows;
  int *length;            /* [max_seqs] host: cached positions per slot */
  float *kcache, *vcache; /* [layers, max_seqs, Tc, KD] */
  int32_t *seq_dev, *pos_dev, *tok_dev; /* [max_rows] */
  int32_t *pos_host;      /* [max_rows] */
  float *x, *y;           /* [max_rows, D] layer input / output, swapped per layer */
  float *xn, *h;          /* [max_rows, D] */
  float *inv;             /* [max_rows] */
  float *q, *att;         /* [max_rows, HD] */
  float *k, *v;           /* [max_rows, KD] */
  float *gate, *up;       /* [max_rows, F] */
  float *gathered, *normed; /* [max_seqs, D] last stage */
  float *logits;          /* [max_seqs, V] last stage */
  float *rope_cos, *rope_sin; /* [Tc, Dh/2] angles of every position the cache holds */
  float *row_cos, *row_sin;   /* [max_rows, Dh/2] the angles of this call's rows */
  int last_n;             /* rows of the last decoder_forward */
};

/* Decoding uses the base weights alone, so an unmerged adapter would be silently ignored. */
static void require_merged_lora(Stage *s) {
  LoraSet *set = stage_lora(s);
  Backend *be = stage_backend(s);
  for (int l = set->l0; l < set->l1; l++)
    for (int t = 0; t < LORA_NUM_TARGETS; t++) {
      LoraAdapter *a = &set->layers[l - set->l0][t];
      if (a->in && be->sum_squares(be, (size_t)a->out * set->cfg.r, a->B) != 0.0)
        tv_die("decoding reads base weights only: layer %d %s has an unmerged LoRA adapter "
               "(merge it with stage_merge_lora first)", l, lora_target_name((LoraTarget)t));
    }
}

Decoder *decoder_create(Stage *s, int max_seqs, int max_len, int max_rows) {
  const LlamaConfig *c = stage_config(s);
  TV_CHECK(max_seqs >= 1 && max_len >= 1 && max_rows >= 1, "decoder sizes must be positive");
  require_merged_lora(s);
  Decoder *d = tv_calloc(1, sizeof(Decoder));
  Backend *be = stage_backend(s);
  d->s = s;
  d->be = be;
  d->max_seqs = max_seqs;
  d->max_len = max_len;
  d->max_rows = max_rows;
  d->length = tv_calloc((size_t)max_seqs, sizeof(int));
  d->pos_host = tv_calloc((size_t)max_rows, sizeof(int32_t));
  size_t L = (size_t)(stage_end_layer(s) - stage_first_layer(s));
  size_t R = (size_t)max_rows, D = c->hidden_size, F = c->intermediate_size;
  size_t HD = (size_t)c->num_heads * c->head_dim, KD = (size_t)c->num_kv_heads * c->head_dim;
  size_t cache = L * (size_t)max_seqs * (size_t)max_len * KD;
  d->kcache = be->alloc(be, cache * sizeof(float));
  d->vcache = be->alloc(be, cache * sizeof(float));
  d->seq_dev = be->alloc(be, R * sizeof(int32_t));
  d->pos_dev = be->alloc(be, R * sizeof(int32_t));
  d->tok_dev = be->alloc(be, R * sizeof(int32_t));
  d->x = be->alloc(be, R * D * sizeof(float));
  d->y = be->alloc(be, R * D * sizeof(float));
  d->xn = be->alloc(be, R * D * sizeof(float));
  d->h = be->alloc(be, R * D * sizeof(float));
  d->inv = be->alloc(be, R * sizeof(float));
  d->q = be->alloc(be, R * HD * sizeof(float));
  d->att = be->alloc(be, R * HD * sizeof(float));
  d->k = be->alloc(be, R * KD * sizeof(float));
  d->v = be->alloc(be, R * KD * sizeof(float));
  d->gate = be->alloc(be, R * F * sizeof(float));
  d->up = be->alloc(be, R * F * sizeof(float));
  /* Own rotary tables: the stage's cover only its training length (it may be built for one
   * token, so that it keeps no activation arena worth the name). Same formula, same floats. */
  size_t half = (size_t)c->head_dim / 2;
  stage_rope_tables(be, c, max_len, &d->rope_cos, &d->rope_sin);
  d->row_cos = be->alloc(be, R * half * sizeof(float));
  d->row_sin = be->alloc(be, R * half * sizeof(float));
  if (stage_is_last(s)) { /* the head reads at most one row per sequence */
    size_t S = (size_t)max_seqs;
    d->gathered = be->alloc(be, S * D * sizeof(float));
    d->normed = be->alloc(be, S * D * sizeof(float));
    d->logits = be->alloc(be, S * (size_t)c->vocab_size * sizeof(float));
  }
  return d;
}

void decoder_destroy(Decoder *d) {
  if (!d) return;
  Backend *be = d->be;
  void *bufs[] = {d->kcache, d->vcache, d->seq_dev, d->pos_dev, d->tok_dev, d->x, d->y, d->xn,
                  d->h, d->inv, d->q, d->att, d->k, d->v, d->gate, d->up, d->gathered,
                  d->normed, d->logits, d->rope_cos, d->rope_sin, d->row_cos, d->row_sin};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
    if (bufs[i]) be->free(be, bufs[i]);
  free(d->length);
  free(d->pos_host);
  free(d);
}

void decoder_clear(Decoder *d) {
  for (int i = 0; i < d->max_seqs; i++) d->length[i] = 0;
}

int decoder_length(const Decoder *d, int seq) {
  TV_CHECK(seq >= 0 && seq < d->max_seqs, "sequence slot %d outside [0, %d)", seq, d->max_seqs);
  return d->length[seq];
}

/* Gathers the rotary angles of this call's rows (row i at position pos_host[i]) into
 * row_cos / row_sin [n, Dh/2], once per call: every layer then rotates all rows with one
 * kernel call (the kernel reads row t's angles from table row t), instead of one call per
 * run of positions. Copies only: no threads are started for them. */
static void gather_row_angles(Decoder *d, int n) {
  size_t half = (size_t)stage_config(d->s)->head_dim / 2;
  for (int i = 0; i < n; i++) {
    size_t from = (size_t)d->pos_host[i] * half, to = (size_t)i * half;
    d->be->copy(d->be, d->row_cos + to, d->rope_cos + from, half * sizeof(float));
    d->be->copy(d->be, d->row_sin + to, d->rope_sin + from, half * sizeof(float));
  }
}

/* Rotates the n rows of x in place, each at its own position. */
static void rope_rows(Decoder *d, float *x, int n, int nh) {
  d->be->rope_forward(d->be, x, d->row_cos, d->row_sin, 1, n, nh, stage_config(d->s)->head_dim);
}

/* One decoder layer over the n rows in d->x, result in d->y. */
static void layer_decode(Decoder *d, int l, int n, const int32_t *seq) {
  Backend *be = d->be;
  const LlamaConfig *c = stage_config(d->s);
  int l0 = stage_first_layer(d->s);
  const StageWeights *sw = stage_weights(d->s);
  const LayerWeights *w = &sw->layers[l - l0];
  int D = c->hidden_size, F = c->intermediate_size;
  int HD = c->num_heads * c->head_dim, KD = c->num_kv_heads * c->head_dim;
  be->rmsnorm_forward(be, d->xn, d->inv, d->x, w->attn_norm, n, D, c->rms_norm_eps);
  be->gemm_weight(be, 0, 1, n, HD, D, 1.0f, d->xn, D, stage_weight_ref(sw, w->wq), D, 0.0f, d->q, HD);
  be->gemm_weight(be, 0, 1, n, KD, D, 1.0f, d->xn, D, stage_weight_ref(sw, w->wk), D, 0.0f, d->k, KD);
  be->gemm_weight(be, 0, 1, n, KD, D, 1.0f, d->xn, D, stage_weight_ref(sw, w->wv), D, 0.0f, d->v, KD);
  if (w->bq) {
    be->add_bias(be, d->q, w->bq, n, HD);
    be->add_bias(be, d->k, w->bk, n, KD);
    be->add_bias(be, d->v, w->bv, n, KD);
  }
  rope_rows(d, d->q, n, c->num_heads);
  rope_rows(d, d->k, n, c->num_kv_heads);
  size_t layer_off = (size_t)(l - l0) * d->max_seqs * d->max_len * KD;
  for (int i = 0; i < n; i++) {
    size_t at = layer_off + ((size_t)seq[i] * d->max_len + (size_t)d->pos_host[i]) * KD;
    be->copy(be, d->kcache + at, d->k + (size_t)i * KD, (size_t)KD * sizeof(float));
    be->copy(be, d->vcache + at, d->v + (size_t)i * KD, (size_t)KD * sizeof(float));
  }
  AttnShape cached = {.B = n, .T = d->max_len, .H = c->num_heads, .Hkv = c->num_kv_heads,
                      .Dh = c->head_dim};
  be->attention_cached(be, &cached, d->q, d->kcache + layer_off, d->vcache + layer_off,
                       d->seq_dev, d->pos_dev, d->att);
  be->gemm_weight(be, 0, 1, n, D, HD, 1.0f, d->att, HD, stage_weight_ref(sw, w->wo), HD, 0.0f, d->h, D);
  be->axpy(be, (size_t)n * D, 1.0f, d->x, d->h);
  be->rmsnorm_forward(be, d->xn, d->inv, d->h, w->mlp_norm, n, D, c->rms_norm_eps);
  be->gemm_weight(be, 0, 1, n, F, D, 1.0f, d->xn, D, stage_weight_ref(sw, w->w_gate), D, 0.0f, d->gate, F);
  be->gemm_weight(be, 0, 1, n, F, D, 1.0f, d->xn, D, stage_weight_ref(sw, w->w_up), D, 0.0f, d->up, F);
  be->swiglu_forward(be, d->gate, d->gate, d->up, (size_t)n * F);
  be->gemm_weight(be, 0, 1, n, D, F, 1.0f, d->gate, F, stage_weight_ref(sw, w->w_down), F, 0.0f, d->y, D);
  be->axpy(be, (size_t)n * D, 1.0f, d->h, d->y);
}

const float *decoder_forward(Decoder *d, int n, const int32_t *seq, const int32_t *tokens,
                             const float *x_in) {
  Backend *be = d->be;
  const LlamaConfig *c = stage_config(d->s);
  int D = c->hidden_size;
  TV_CHECK(n >= 1 && n <= d->max_rows, "decoder call of %d rows (at most %d)", n, d->max_rows);
  /* Positions first, so a full slot fails before any state changes. */
  for (int i = 0; i < n; i++) {
    TV_CHECK(seq[i] >= 0 && seq[i] < d->max_seqs, "sequence slot %d outside [0, %d)", seq[i],
             d->max_seqs);
    if (d->length[seq[i]] >= d->max_len)
      tv_die("sequence slot %d is full: the decoder holds %d positions", seq[i], d->max_len);
    d->pos_host[i] = d->length[seq[i]]++;
  }
  be->from_host(be, d->seq_dev, seq, (size_t)n * sizeof(int32_t));
  be->from_host(be, d->pos_dev, d->pos_host, (size_t)n * sizeof(int32_t));
  gather_row_angles(d, n);
  if (stage_is_first(d->s)) {
    for (int i = 0; i < n; i++)
      if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
        tv_die("token id %d is outside the vocabulary [0, %d)", tokens[i], c->vocab_size);
    be->from_host(be, d->tok_dev, tokens, (size_t)n * sizeof(int32_t));
    const StageWeights *sw = stage_weights(d->s);
    be->embedding_forward(be, d->x, stage_weight_ref(sw, sw->embed), d->tok_dev, n, D);
  } else {
    TV_CHECK(x_in, "a decoder after the first stage needs its input hidden states");
    be->copy(be, d->x, x_in, (size_t)n * D * sizeof(float));
  }
  for (int l = stage_first_layer(d->s); l < stage_end_layer(d->s); l++) {
    layer_decode(d, l, n, seq);
    float *t = d->x;
    d->x = d->y, d->y = t;
  }
  d->last_n = n;
  return d->x;
}

const float *decoder_final_hidden(Decoder *d, const int *rows, int count) {
  Backend *be = d->be;
  const LlamaConfig *c = stage_config(d->s);
  size_t D = (size_t)c->hidden_size;
  TV_CHECK(stage_is_last(d->s), "final hidden states exist on the last stage only");
  TV_CHECK(count >= 0 && count <= d->last_n && count <= d->max_seqs,
           "asked for %d rows of %d (at most one per sequence slot, %d)", count, d->last_n,
           d->max_seqs);
  for (int i = 0; i < count; i++) {
    TV_CHECK(rows[i] >= 0 && rows[i] < d->last_n, "row %d outside the last call's %d", rows[i],
             d->last_n);
    be->copy(be, d->gathered + (size_t)i * D, d->x + (size_t)rows[i] * D, D * sizeof(float));
  }
  if (count)
    be->rmsnorm_forward(be, d->normed, d->inv, d->gathered, stage_weights(d->s)->final_norm,
                        count, (int)D, c->rms_norm_eps);
  return d->normed;
}

const float *decoder_logits(Decoder *d, const int *rows, int count) {
  Backend *be = d->be;
  const LlamaConfig *c = stage_config(d->s);
  const float *normed = decoder_final_hidden(d, rows, count);
  const StageWeights *sw = stage_weights(d->s);
  if (count)
    be->gemm_weight(be, 0, 1, count, c->vocab_size, c->hidden_size, 1.0f, normed,
                    c->hidden_size, stage_weight_ref(sw, sw->lm_head), c->hidden_size, 0.0f,
                    d->logits, c->vocab_size);
  return d->logits;
}

int decode_argmax(const float *x, int n) {
  int best = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[best]) best = i;
  return best;
}
