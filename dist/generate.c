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

/* One generate_greedy call: where this rank stands, the outputs, and scratch sized once. */
typedef struct {
  Comm *comm;
  P2p *p2p; /* the hidden states between stages (several ranks only) */
  Stage *s;
  Backend *be;
  int rank, size;
  const GenerateOptions *o;
  const PromptSet *p;
  int32_t *out_ids;   /* [n, max_new_tokens] */
  int *out_len;       /* [n] */
  Decoder *d;         /* KV-cache path; NULL on the reference path */
  float *recv_buf;    /* [rows_max, D] backend memory, input of a later stage */
  float *host_logits; /* [batch_size, V] (reference path: [1, V]) */
  int32_t *seq, *tok; /* [rows_max] sequence slot and token of each row of a call; the
                         reference path keeps its padded [nb, T] tokens in tok */
  int *rows;          /* [rows_max] rows whose logits are read */
  int32_t *next;      /* [rows_max] the tokens picked for them */
  int *active;        /* [batch_size] unfinished sequences of the batch */
  LayerPlan *layer_plans; /* [stage layers], all off: the reference path's forward-only plan */
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

static int prompt_len(const Gen *g, size_t i) {
  return (int)(g->p->offset[i + 1] - g->p->offset[i]);
}

/* Moves `rows` hidden states from the stage below into g->recv_buf (first stage: nothing). */
static const float *receive_rows(Gen *g, size_t rows) {
  if (stage_is_first(g->s)) return NULL;
  int D = stage_config(g->s)->hidden_size;
  p2p_recv(g->p2p, g->recv_buf, rows * D, g->rank - 1, P2P_TAG_ACTIVATION);
  return g->recv_buf;
}

static void send_rows(Gen *g, const float *x, size_t rows) {
  if (stage_is_last(g->s)) return;
  int D = stage_config(g->s)->hidden_size;
  p2p_send(g->p2p, x, rows * D, g->rank + 1, P2P_TAG_ACTIVATION);
}

/* The last stage's picks next[0 .. count) reach every rank. */
static void share_picks(Gen *g, int count) {
  if (g->size > 1) comm_broadcast(g->comm, g->next, (size_t)count * sizeof(int32_t), g->size - 1);
}

/* Appends tok to sequence i (global index); it stays active unless it emitted EOS or hit the
 * token limit. slot is its place in the batch. */
static void append_token(Gen *g, size_t i, int slot, int32_t tok) {
  int *len = &g->out_len[i];
  g->out_ids[i * (size_t)g->o->max_new_tokens + (size_t)(*len)++] = tok;
  g->active[slot] = !(is_eos(g->o, tok) || *len >= g->o->max_new_tokens);
}

/* KV-cache path: the decoder's logits of `count` rows -> argmax on the last stage -> shared. */
static void pick_cached(Gen *g, int count) {
  if (stage_is_last(g->s)) {
    int V = stage_config(g->s)->vocab_size;
    const float *logits = decoder_logits(g->d, g->rows, count);
    g->be->to_host(g->be, g->host_logits, logits, (size_t)count * V * sizeof(float));
    for (int i = 0; i < count; i++)
      g->next[i] = decode_argmax(g->host_logits + (size_t)i * V, V);
  }
  share_picks(g, count);
}

/* KV-cache path for sequences [b0, b0 + nb) in decoder slots 0 .. nb-1. */
static void batch_cached(Gen *g, size_t b0, int nb) {
  decoder_clear(g->d);
  /* Prefill: all prompt rows in order, in chunks; the logits of a prompt's last row give
   * the sequence's first new token. */
  int n = 0, count = 0; /* rows in the chunk; prompts ending in it */
  for (int i = 0; i < nb; i++) {
    size_t a = g->p->offset[b0 + i], z = g->p->offset[b0 + i + 1];
    for (size_t t = a; t < z; t++) {
      g->seq[n] = i;
      g->tok[n] = g->p->ids[t];
      n++;
      int prompt_end = t + 1 == z;
      if (prompt_end) g->rows[count++] = n - 1;
      if (n < PREFILL_ROWS && !(prompt_end && i + 1 == nb)) continue;
      const float *y = decoder_forward(g->d, n, g->seq, g->tok, receive_rows(g, (size_t)n));
      send_rows(g, y, (size_t)n);
      if (count) {
        pick_cached(g, count);
        for (int k = 0; k < count; k++) {
          int slot = g->seq[g->rows[k]];
          append_token(g, b0 + (size_t)slot, slot, g->next[k]);
        }
      }
      n = 0, count = 0;
    }
  }
  /* Decode: one row per unfinished sequence, its last token, until none is left. */
  for (;;) {
    int m = 0;
    for (int i = 0; i < nb; i++)
      if (g->active[i]) {
        size_t sq = b0 + (size_t)i;
        g->seq[m] = i;
        g->tok[m] = g->out_ids[sq * (size_t)g->o->max_new_tokens + (size_t)g->out_len[sq] - 1];
        g->rows[m] = m;
        m++;
      }
    if (!m) break;
    const float *y = decoder_forward(g->d, m, g->seq, g->tok, receive_rows(g, (size_t)m));
    send_rows(g, y, (size_t)m);
    pick_cached(g, m);
    for (int k = 0; k < m; k++) append_token(g, b0 + (size_t)g->seq[k], g->seq[k], g->next[k]);
  }
}

/* Reference path: every step runs stage_forward over the whole right-padded sequences so
 * far; causal attention keeps padding out of every row that is read. */
static void batch_full(Gen *g, size_t b0, int nb) {
  Stage *s = g->s;
  int V = stage_config(s)->vocab_size, max_new = g->o->max_new_tokens;
  PassPlan plan = {.layers = g->layer_plans, .backward_stop = 1 << 30, .pass_seed = 0,
                   .train_base = 0};
  stage_keep_logits(s, 1); /* every row's logits are read below */
  for (;;) {
    int T = 0, m = 0;
    for (int i = 0; i < nb; i++) {
      int len = prompt_len(g, b0 + i) + g->out_len[b0 + i];
      if (len > T) T = len;
    }
    for (int i = 0; i < nb; i++) {
      size_t sq = b0 + (size_t)i;
      int np = prompt_len(g, sq), len = np + g->out_len[sq];
      int32_t *row = g->tok + (size_t)i * T;
      memcpy(row, g->p->ids + g->p->offset[sq], (size_t)np * sizeof(int32_t));
      memcpy(row + np, g->out_ids + sq * (size_t)max_new, (size_t)g->out_len[sq] * sizeof(int32_t));
      for (int t = len; t < T; t++) row[t] = 0;
      if (g->active[i]) g->rows[m++] = i;
    }
    if (!m) break;
    const float *x_in = receive_rows(g, (size_t)nb * T);
    float *x_out = NULL;
    MicroBatch mb = {.tokens = g->tok, .x_in = x_in, .targets = NULL, .B = nb, .T = T,
                     .row_offset = 0, .loss_scale = 1.0f};
    stage_forward(s, &plan, &mb, &x_out);
    send_rows(g, x_out, (size_t)nb * T);
    if (stage_is_last(s))
      for (int k = 0; k < m; k++) {
        size_t sq = b0 + (size_t)g->rows[k];
        int last = prompt_len(g, sq) + g->out_len[sq] - 1;
        g->be->to_host(g->be, g->host_logits,
                       stage_logits(s) + ((size_t)g->rows[k] * T + (size_t)last) * V,
                       (size_t)V * sizeof(float));
        g->next[k] = decode_argmax(g->host_logits, V);
      }
    share_picks(g, m);
    for (int k = 0; k < m; k++) append_token(g, b0 + (size_t)g->rows[k], g->rows[k], g->next[k]);
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
  Gen g = {.comm = comm, .s = s, .be = stage_backend(s), .o = o, .p = p, .out_ids = out_ids,
           .out_len = out_len, .rank = comm ? comm_rank(comm) : 0,
           .size = comm ? comm_size(comm) : 1};
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
  g.seq = tv_malloc(rows_max * sizeof(int32_t));
  g.tok = tv_malloc(rows_max * sizeof(int32_t));
  g.rows = tv_malloc(rows_max * sizeof(int));
  g.next = tv_malloc(rows_max * sizeof(int32_t));
  g.active = tv_malloc((size_t)nb_max * sizeof(int));
  g.layer_plans = tv_calloc((size_t)(stage_end_layer(s) - stage_first_layer(s)), sizeof(LayerPlan));
  g.d = o->use_cache ? decoder_create(s, nb_max, ctx, (int)rows_max) : NULL;
  g.p2p = g.size > 1 ? p2p_create(comm, g.be, 1) : NULL;

  for (size_t b0 = 0; b0 < p->n; b0 += (size_t)nb_max) {
    int nb = p->n - b0 < (size_t)nb_max ? (int)(p->n - b0) : nb_max;
    for (int i = 0; i < nb; i++) out_len[b0 + i] = 0, g.active[i] = 1;
    if (g.d)
      batch_cached(&g, b0, nb);
    else
      batch_full(&g, b0, nb);
    if (o->on_batch && g.rank == 0) o->on_batch(o->ctx, b0 + (size_t)nb, p->n);
  }
  decoder_destroy(g.d);
  p2p_destroy(g.p2p);
  free(g.layer_plans);
  free(g.active);
  free(g.next);
  free(g.rows);
  free(g.tok);
  free(g.seq);
  free(g.host_logits);
  if (g.recv_buf) g.be->free(g.be, g.recv_buf);
}
