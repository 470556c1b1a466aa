/* Encoding: added tokens on the raw text, normaliser (tokenizer_normalize.c), added tokens on
 * the normalised text, pre-tokenisers (Split, ByteLevel, Metaspace), BPE per piece, then the
 * BOS/EOS rule. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tokenizer_internal.h"

/* Pieces of the pre-tokenisation stage, all pointing into one growing buffer. */
typedef struct {
  TkPiece *v;
  int n, cap;
} Pieces;

static void piece_push(Pieces *p, size_t off, size_t len, size_t zero) {
  if (!len) return; /* tokenizers drops empty pieces at every split */
  if (p->n == p->cap) {
    p->cap = p->cap ? p->cap * 2 : 16;
    TkPiece *v = realloc(p->v, (size_t)p->cap * sizeof(TkPiece));
    TV_CHECK(v, "out of memory growing the piece list to %d", p->cap);
    p->v = v;
  }
  p->v[p->n++] = (TkPiece){.off = off, .len = len, .zero = zero > len ? len : zero};
}

/* Sub-piece [a, b) of piece pc. */
static void piece_sub(Pieces *out, const TkPiece *pc, size_t a, size_t b) {
  piece_push(out, pc->off + a, b - a, a < pc->zero ? pc->zero - a : 0);
}

/* The SplitDelimiterBehavior rules applied to the spans of one piece. */
static void split_spans(Pieces *out, const TkPiece *pc, const TkSpans *sp, int behavior) {
  size_t cur_a = 0, cur_b = 0;
  int have = 0, prev_match = 0;
  for (int k = 0; k < sp->n; k++) {
    const TkSpan *x = &sp->v[k];
    int extend = 0;
    switch (behavior) {
      case TK_SPLIT_REMOVED:
        if (!x->match) piece_sub(out, pc, x->a, x->b);
        continue;
      case TK_SPLIT_ISOLATED:
        piece_sub(out, pc, x->a, x->b);
        continue;
      case TK_SPLIT_PREV: extend = have && x->match && !prev_match; break;
      case TK_SPLIT_NEXT: extend = have && prev_match && !x->match; break;
      default: extend = have && x->match == prev_match; break; /* Contiguous */
    }
    if (extend) {
      cur_b = x->b;
    } else {
      if (have) piece_sub(out, pc, cur_a, cur_b);
      cur_a = x->a;
      cur_b = x->b;
      have = 1;
    }
    prev_match = x->match;
  }
  if (have) piece_sub(out, pc, cur_a, cur_b);
}

typedef struct {
  TkBuf buf;
  Pieces cur, next;
  TkSpans spans;
} Stage;

static void pre_split(const TkPreStep *st, Stage *g) {
  for (int i = 0; i < g->cur.n; i++) {
    const TkPiece *pc = &g->cur.v[i];
    tkre_find_matches(st->re, g->buf.p + pc->off, pc->len, &g->spans);
    if (st->invert)
      for (int k = 0; k < g->spans.n; k++) g->spans.v[k].match = !g->spans.v[k].match;
    split_spans(&g->next, pc, &g->spans, st->behavior);
  }
}

static void pre_bytelevel(const TkPreStep *st, Stage *g) {
  Pieces mid = {0};
  for (int i = 0; i < g->cur.n; i++) {
    TkPiece pc = g->cur.v[i];
    if (st->add_prefix_space && g->buf.p[pc.off] != ' ') {
      size_t off = g->buf.len;
      tkbuf_reserve(&g->buf, pc.len + 1); /* the copy reads from the same buffer */
      tkbuf_putc(&g->buf, ' ');
      tkbuf_put(&g->buf, g->buf.p + pc.off, pc.len);
      pc = (TkPiece){.off = off, .len = pc.len + 1, .zero = pc.zero ? pc.zero + 1 : 0};
    }
    if (st->re) {
      tkre_find_matches(st->re, g->buf.p + pc.off, pc.len, &g->spans);
      split_spans(&mid, &pc, &g->spans, TK_SPLIT_ISOLATED);
    } else {
      piece_push(&mid, pc.off, pc.len, pc.zero);
    }
  }
  /* every byte becomes the character that stands for it */
  for (int i = 0; i < mid.n; i++) {
    const TkPiece pc = mid.v[i];
    size_t off = g->buf.len, zero = 0;
    for (size_t k = 0; k < pc.len; k++) {
      char ch[2];
      size_t l = tk_byte_char((unsigned char)g->buf.p[pc.off + k], ch);
      tkbuf_put(&g->buf, ch, l);
      if (k < pc.zero) zero += l;
    }
    piece_push(&g->next, off, g->buf.len - off, zero);
  }
  free(mid.v);
}

static void pre_metaspace(const TkPreStep *st, Stage *g) {
  for (int i = 0; i < g->cur.n; i++) {
    const TkPiece pc = g->cur.v[i];
    size_t off = g->buf.len, zero = pc.zero;
    const char *s = g->buf.p + pc.off; /* valid until the buffer grows: copy first */
    char *tmp = tv_malloc(pc.len + 1);
    memcpy(tmp, s, pc.len);
    int starts = pc.len >= st->repl_len && !memcmp(tmp, st->repl, st->repl_len);
    if (tmp[0] == ' ') starts = 1;
    int prepend = !starts && (st->prepend_scheme == TK_PREPEND_ALWAYS ||
                              (st->prepend_scheme == TK_PREPEND_FIRST && pc.zero > 0));
    if (prepend) {
      tkbuf_put(&g->buf, st->repl, st->repl_len);
      if (zero) zero += st->repl_len;
    }
    for (size_t k = 0; k < pc.len; k++) {
      if (tmp[k] == ' ') {
        tkbuf_put(&g->buf, st->repl, st->repl_len);
        if (k < pc.zero) zero += st->repl_len - 1;
      } else {
        tkbuf_putc(&g->buf, tmp[k]);
      }
    }
    free(tmp);
    TkPiece np = {.off = off, .len = g->buf.len - off, .zero = zero};
    if (!st->split) {
      piece_push(&g->next, np.off, np.len, np.zero);
      continue;
    }
    /* each replacement character starts a new piece (MergedWithNext) */
    g->spans.n = 0;
    const char *p = g->buf.p + np.off;
    size_t last = 0;
    for (size_t k = 0; k < np.len;) {
      if (np.len - k >= st->repl_len && !memcmp(p + k, st->repl, st->repl_len)) {
        if (last < k) tkspans_push(&g->spans, last, k, 0);
        tkspans_push(&g->spans, k, k + st->repl_len, 1);
        k += st->repl_len;
        last = k;
      } else {
        k += tk_utf8_len((const unsigned char *)p + k, np.len - k);
      }
    }
    if (last < np.len) tkspans_push(&g->spans, last, np.len, 0);
    split_spans(&g->next, &np, &g->spans, TK_SPLIT_NEXT);
  }
}

/* Pre-tokenises one normalised piece (already in g->buf) and runs BPE on the results. */
static void encode_piece(const Tokenizer *t, Stage *g, size_t off, size_t len, size_t zero,
                         TkIds *out) {
  g->cur.n = 0;
  piece_push(&g->cur, off, len, zero);
  for (int i = 0; i < t->n_pre; i++) {
    const TkPreStep *st = &t->pre[i];
    g->next.n = 0;
    if (st->kind == TK_PRE_SPLIT)
      pre_split(st, g);
    else if (st->kind == TK_PRE_BYTELEVEL)
      pre_bytelevel(st, g);
    else
      pre_metaspace(st, g);
    Pieces tmp = g->cur;
    g->cur = g->next;
    g->next = tmp;
  }
  for (int i = 0; i < g->cur.n; i++) tk_bpe_word(t, g->buf.p + g->cur.v[i].off, g->cur.v[i].len, out);
}

int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int add_special,
                     int32_t **ids) {
  TkIds out = {0};
  if (add_special)
    for (int i = 0; i < t->prefix.n; i++) tkids_push(&out, t->prefix.v[i]);
  Stage g = {0};
  TkSpans raw = {0}, norm = {0};
  TkIds raw_ids = {0}, norm_ids = {0};
  if (!text) len = 0;
  tk_added_split(t, &t->raw_set, text ? text : "", len, &raw, &raw_ids);
  for (int r = 0; r < raw.n; r++) {
    const TkSpan *x = &raw.v[r];
    if (raw_ids.v[r] >= 0) {
      tkids_push(&out, raw_ids.v[r]);
      continue;
    }
    if (x->b == x->a) continue;
    g.buf.len = 0;
    size_t zero = x->a == 0 ? tk_utf8_len((const unsigned char *)text, len) : 0;
    zero = tk_normalize(t, text + x->a, x->b - x->a, zero, &g.buf);
    size_t nlen = g.buf.len;
    tk_added_split(t, &t->norm_set, g.buf.p ? g.buf.p : "", nlen, &norm, &norm_ids);
    for (int k = 0; k < norm.n; k++) {
      const TkSpan *y = &norm.v[k];
      if (norm_ids.v[k] >= 0)
        tkids_push(&out, norm_ids.v[k]);
      else if (y->b > y->a)
        encode_piece(t, &g, y->a, y->b - y->a, y->a < zero ? zero - y->a : 0, &out);
    }
  }
  if (add_special)
    for (int i = 0; i < t->suffix.n; i++) tkids_push(&out, t->suffix.v[i]);
  tkbuf_free(&g.buf);
  free(g.cur.v);
  free(g.next.v);
  free(g.spans.v);
  free(raw.v);
  free(norm.v);
  free(raw_ids.v);
  free(norm_ids.v);
  if (!out.v) out.v = tv_malloc(sizeof(int32_t));
  *ids = out.v;
  return out.n;
}
