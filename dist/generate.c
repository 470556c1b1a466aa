/* Greedy generation over the pipeline. Per batch of sequences: the prompts' rows are
 * prefilled (KV cache) or the whole sequences re-run (reference path); each step the last
 * rank turns the last row of every unfinished sequence into its argmax token and broadcasts
 * the step's tokens, so every rank knows which sequences are still running.
 * Letters: nb sequences in the batch, D width, V vocab. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "decode.h"
#include "generate.h"
#include "p2p.h"

/* Rows handed to the decoder per call: prompts are prefilled in chunks of this many rows. */
enum { PREFILL_ROWS = 256 };

typedef struct {
  Comm *comm;
  Stage *s;
  Backend *be;
  int rank, size;
  const GenerateOptions *o;
  float *recv_buf;   /* [rows, D] backend memory, input of a later stage */
  float *host_logits; /* [rows, V] */
} Gen;

static int is_eos(const GenerateOptions *o, int32_t tok) {
  for (int i = 0; i < o->n_eos; i++)
    if (o->eos_ids[i] == tok) return 1;
  return 0;
}

int generate_context_length(const PromptSet *p, const GenerateOptions *o) {
  size_t longest = 0;
  for (size_t i = 0; i < p->n; i++) {
    size_t len = p->offset[i + 1] - p->offset[i];
    if (len > longest) longest = len;
  }
  TV_CHECK(longest + (size_t)o->max_new_tokens < (1u << 24), "prompt of %zu tokens is too long",
           longest);
  return (int)longest + o->max_new_tokens;
}

/* Moves `rows` hidden states from the stage below into g->recv_buf (first stage: nothing). */
static const float *receive_rows(Gen *g, size_t rows) {
  if (stage_is_first(g->s)) return NULL;
  int D = stage_config(g->s)->hidden_size;
  p2p_recv(g->comm, g->recv_buf, rows * D, g->rank - 1, P2P_TAG_ACTIVATION);
  return g->recv_buf;
}

static void send_rows(Gen *g, const float *x, size_t rows) {
  if (stage_is_last(g->s)) return;
  int D = stage_config(g->s)->hidden_size;
  p2p_send(g->comm, x, rows * D, g->rank + 1, P2P_TAG_ACTIVATION);
}

/* Argmax of `count` logit rows [count, V] (backend memory) on the last stage into next[];
 * then every rank gets next[0 .. count). */
static void pick_and_share(Gen *g, const float *logits, int count, int32_t *next) {
  if (stage_is_last(g->s)) {
    int V = stage_config(g->s)->vocab_size;
    g->be->to_host(g->be, g->host_logits, logits, (size_t)count * V * sizeof(float));
    for (int i = 0; i < count; i++) next[i] = decode_argmax(g->host_logits + (size_t)i * V, V);
  }
  if (g->size > 1) comm_broadcast(g->comm, next, (size_t)count * sizeof(int32_t), g->size - 1);
}

/* Appends tok to sequence i of the batch; returns 1 when that sequence is now finished. */
static int append_token(const GenerateOptions *o, int32_t *out, int *len, int32_t tok) {
  out[(*len)++] = tok;
  return is_eos(o, tok) || *len >= o->max_new_tokens;
}

/* KV-cache path for sequences [b0, b0 + nb). */
static void batch_cached(Gen *g, Decoder *d, const PromptSet *p, size_t b0, int nb,
                         int32_t *out_ids, int *out_len, int32_t *seq, int32_t *tok, int *rows,
                         int32_t *next, int *active) {
  const GenerateOptions *o = g->o;
  decoder_clear(d);
  /* Prefill: all prompt rows in order, chunked; the logits of a prompt's last row give the
   * sequence's first new token. */
  int count = 0; /* sequences whose last prompt row fell in the current chunk */
  int n = 0;
  for (int i = 0; i < nb; i++) {
    size_t a = p->offset[b0 + i], z = p->offset[b0 + i + 1];
    for (size_t t = a; t < z; t++) {
      seq[n] = i;
      tok[n] = p->ids[t];
      n++;
      int chunk_full = n == PREFILL_ROWS, prompt_end = t + 1 == z;
      if (prompt_end) rows[count++] = n - 1;
      if (!chunk_full && !(prompt_end && i + 1 == nb)) continue;
      const float *y = decoder_forward(d, n, seq, tok, receive_rows(g, (size_t)n));
      send_rows(g, y, (size_t)n);
      if (count) {
        const float *logits = stage_is_last(g->s) ? decoder_logits(d, rows, count) : NULL;
        pick_and_share(g, logits, count, next);
        /* The count sequences ending in this chunk are its last `count` to end so far. */
        for (int k = 0; k < count; k++) {
          int sq = seq[rows[k]];
          active[sq] = !append_token(o, out_ids + (b0 + sq) * (size_t)o->max_new_tokens,
                                     &out_len[b0 + sq], next[k]);
        }
      }
      n = 0, count = 0;
    }
  }
  /* Decode: one row per unfinished sequence until none is left. */
  for (;;) {
    int m = 0;
    for (int i = 0; i < nb; i++)
      if (active[i]) {
        seq[m] = i;
        tok[m] = out_ids[(b0 + i) * (size_t)o->max_new_tokens + out_len[b0 + i] - 1];
        rows[m] = m;
        m++;
      }
    if (!m) break;
    const float *y = decoder_forward(d, m, seq, tok, receive_rows(g, (size_t)m));
    send_rows(g, y, (size_t)m);
    const float *logits = stage_is_last(g->s) ? decoder_logits(d, rows, m) : NULL;
    pick_and_share(g, logits, m, next);
    for (int k = 0; k < m; k++)
      active[seq[k]] = !append_token(o, out_ids + (b0 + seq[k]) * (size_t)o->max_new_tokens,
                                     &out_len[b0 + seq[k]], next[k]);
  }
}

/* Reference path: every step runs stage_forward over the whole right-padded sequences so
 * far; causal attention keeps padding out of every row that is read. */
static void batch_full(Gen *g, const PromptSet *p, size_t b0, int nb, int32_t *out_ids,
                       int *out_len, int32_t *tokens, int *rows, int32_t *next, int *active,
                       LayerPlan *layer_plans) {
  const GenerateOptions *o = g->o;
  Stage *s = g->s;
  int V = stage_config(s)->vocab_size;
  PassPlan plan = {.layers = layer_plans, .backward_stop = 1 << 30, .pass_seed = 0,
                   .train_base = 0};
  for (;;) {
    int T = 0, m = 0;
    for (int i = 0; i < nb; i++) {
      int len = (int)(p->offset[b0 + i + 1] - p->offset[b0 + i]) + out_len[b0 + i];
      if (len > T) T = len;
    }
    for (int i = 0; i < nb; i++) {
      size_t a = p->offset[b0 + i];
      int np = (int)(p->offset[b0 + i + 1] - a), len = np + out_len[b0 + i];
      int32_t *row = tokens + (size_t)i * T;
      memcpy(row, p->ids + a, (size_t)np * sizeof(int32_t));
      memcpy(row + np, out_ids + (b0 + i) * (size_t)o->max_new_tokens,
             (size_t)out_len[b0 + i] * sizeof(int32_t));
      for (int t = len; t < T; t++) row[t] = 0;
      if (active[i]) rows[m++] = i;
    }
    if (!m) break;
    const float *x_in = receive_rows(g, (size_t)nb * T);
    float *x_out = NULL;
    stage_forward(s, &plan, tokens, x_in, NULL, nb, T, 0, 1.0f, &x_out);
    send_rows(g, x_out, (size_t)nb * T);
    if (stage_is_last(s)) {
      const float *logits = stage_logits(s);
      for (int k = 0; k < m; k++) {
        int i = rows[k];
        int len = (int)(p->offset[b0 + i + 1] - p->offset[b0 + i]) + out_len[b0 + i];
        g->be->to_host(g->be, g->host_logits, logits + ((size_t)i * T + len - 1) * V,
                       (size_t)V * sizeof(float));
        next[k] = decode_argmax(g->host_logits, V);
      }
    }
    if (g->size > 1) comm_broadcast(g->comm, next, (size_t)m * sizeof(int32_t), g->size - 1);
    for (int k = 0; k < m; k++)
      active[rows[k]] = !append_token(o, out_ids + (b0 + rows[k]) * (size_t)o->max_new_tokens,
                                      &out_len[b0 + rows[k]], next[k]);
  }
}

void generate_greedy(Comm *comm, Stage *s, const GenerateOptions *o, const PromptSet *p,
                     int32_t *out_ids, int *out_len) {
  TV_CHECK(o->max_new_tokens >= 1 && o->batch_size >= 1, "generation needs max_new_tokens and "
           "batch_size >= 1");
  if (stage_lora(s)->cfg.dropout > 0)
    tv_die("generation needs a stage without LoRA dropout (got %g)", stage_lora(s)->cfg.dropout);
  for (size_t i = 0; i < p->n; i++)
    if (p->offset[i + 1] <= p->offset[i]) tv_die("prompt %zu has no token", i);
  Gen g = {.comm = comm, .s = s, .be = stage_backend(s), .o = o,
           .rank = comm ? comm_rank(comm) : 0, .size = comm ? comm_size(comm) : 1};
  TV_CHECK(g.size == 1 || comm, "several stages need a communicator");
  TV_CHECK(stage_is_first(s) == (g.rank == 0) && stage_is_last(s) == (g.rank == g.size - 1),
           "rank %d of %d does not hold pipeline stage %d", g.rank, g.size, g.rank);
  const LlamaConfig *c = stage_config(s);
  int ctx = generate_context_length(p, o), nb_max = o->batch_size;
  int max_B, max_T;
  stage_max_shape(s, &max_B, &max_T);
  if (!o->use_cache && (ctx > max_T || nb_max > max_B))
    tv_die("the full-forward path for %d sequences x %d tokens needs a stage built for that "
           "(it has %d x %d)", nb_max, ctx, max_B, max_T);
  /* Buffers for the largest call: prefill chunks, or whole padded batches (reference). */
  size_t rows_max = o->use_cache ? (size_t)(PREFILL_ROWS > nb_max ? PREFILL_ROWS : nb_max)
                                 : (size_t)nb_max * ctx;
  g.recv_buf = stage_is_first(s) ? NULL
                                 : g.be->alloc(g.be, rows_max * c->hidden_size * sizeof(float));
  /* Logits come back for at most one row per sequence at a time (one row when reading the
   * reference path's full logits row by row). */
  g.host_logits = stage_is_last(s)
                      ? tv_malloc((o->use_cache ? (size_t)nb_max : 1) * c->vocab_size * sizeof(float))
                      : NULL;
  int32_t *seq = tv_malloc(rows_max * sizeof(int32_t));
  int32_t *tok = tv_malloc(rows_max * sizeof(int32_t));
  int *rows = tv_malloc(rows_max * sizeof(int));
  int32_t *next = tv_malloc(rows_max * sizeof(int32_t));
  int *active = tv_malloc((size_t)nb_max * sizeof(int));
  int nl = stage_end_layer(s) - stage_first_layer(s);
  LayerPlan *layer_plans = tv_calloc((size_t)nl, sizeof(LayerPlan)); /* all off: forward only */
  Decoder *d = o->use_cache ? decoder_create(s, nb_max, ctx, (int)rows_max) : NULL;

  for (size_t b0 = 0; b0 < p->n; b0 += (size_t)nb_max) {
    int nb = p->n - b0 < (size_t)nb_max ? (int)(p->n - b0) : nb_max;
    for (int i = 0; i < nb; i++) out_len[b0 + i] = 0, active[i] = 1;
    if (d)
      batch_cached(&g, d, p, b0, nb, out_ids, out_len, seq, tok, rows, next, active);
    else
      batch_full(&g, p, b0, nb, out_ids, out_len, tok, rows, next, active, layer_plans);
    if (o->on_batch && g.rank == 0) o->on_batch(o->ctx, b0 + (size_t)nb, p->n);
  }
  decoder_destroy(d);
  free(layer_plans);
  free(active);
  free(next);
  free(rows);
  free(tok);
  free(seq);
  free(g.host_logits);
  if (g.recv_buf) g.be->free(g.be, g.recv_buf);
}
