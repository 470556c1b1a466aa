/* The BPE model on one pre-token: characters to ids (unk fusing, <0xNN> byte fallback),
 * then merges by rank, lowest first, leftmost on ties, exactly as tokenizers' Word does. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tokenizer_internal.h"

typedef struct {
  int32_t c;
  int prev, next;
  size_t len; /* bytes covered; 0 marks a symbol merged into its left neighbour */
} Sym;

typedef struct {
  int32_t rank, merged;
  int pos;
} Cand;

/* Min-heap on (rank, pos). */
static int cand_less(const Cand *x, const Cand *y) {
  return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static void heap_push(Cand *h, int *n, Cand c) {
  int i = (*n)++;
  h[i] = c;
  while (i > 0) {
    int p = (i - 1) / 2;
    if (!cand_less(&h[i], &h[p])) break;
    Cand tmp = h[i];
    h[i] = h[p];
    h[p] = tmp;
    i = p;
  }
}

static Cand heap_pop(Cand *h, int *n) {
  Cand top = h[0];
  h[0] = h[--(*n)];
  int i = 0;
  for (;;) {
    int l = 2 * i + 1, r = l + 1, m = i;
    if (l < *n && cand_less(&h[l], &h[m])) m = l;
    if (r < *n && cand_less(&h[r], &h[m])) m = r;
    if (m == i) break;
    Cand tmp = h[i];
    h[i] = h[m];
    h[m] = tmp;
    i = m;
  }
  return top;
}

typedef struct {
  Sym *v;
  int n, cap;
} Word;

static void word_add(Word *w, int32_t c, size_t len) {
  if (w->n == w->cap) {
    w->cap = w->cap ? w->cap * 2 : 16;
    Sym *v = realloc(w->v, (size_t)w->cap * sizeof(Sym));
    TV_CHECK(v, "out of memory growing a BPE word to %d symbols", w->cap);
    w->v = v;
  }
  if (w->n) w->v[w->n - 1].next = w->n;
  w->v[w->n] = (Sym){.c = c, .prev = w->n - 1, .next = -1, .len = len};
  w->n++;
}

/* The initial symbols: one per character, the continuing-subword prefix on all but the
 * first, the end-of-word suffix on the last. Unknown characters go to byte fallback, then
 * to unk (fused into one when fuse_unk), else they are dropped. */
static void word_chars(const Tokenizer *t, const char *s, size_t n, Word *w) {
  TkBuf key = {0};
  int32_t unk_id = -1;
  size_t unk_len = 0;
  for (size_t i = 0; i < n;) {
    size_t cl = tk_utf8_len((const unsigned char *)s + i, n - i);
    key.len = 0;
    tkbuf_reserve(&key, 0);
    if (i > 0 && t->cont_prefix) tkbuf_put(&key, t->cont_prefix, t->cont_prefix_len);
    tkbuf_put(&key, s + i, cl);
    if (i + cl == n && t->eow_suffix) tkbuf_put(&key, t->eow_suffix, t->eow_suffix_len);
    i += cl;
    int32_t id = tkmap_get(&t->vocab, key.p, key.len);
    if (id >= 0) {
      if (unk_id >= 0) word_add(w, unk_id, unk_len);
      unk_id = -1;
      word_add(w, id, cl);
      continue;
    }
    if (t->byte_fallback) {
      int all = 1;
      for (size_t k = 0; k < key.len && all; k++) all = t->byte_id[(unsigned char)key.p[k]] >= 0;
      if (all) {
        /* tokenizers leaves a pending unk pending here, so it lands after these bytes */
        for (size_t k = 0; k < key.len; k++) word_add(w, t->byte_id[(unsigned char)key.p[k]], 1);
        continue;
      }
    }
    if (t->unk_id < 0) continue;
    if (unk_id >= 0 && t->fuse_unk) {
      unk_len += cl;
    } else {
      if (unk_id >= 0) word_add(w, unk_id, unk_len);
      unk_id = t->unk_id;
      unk_len = cl;
    }
  }
  if (unk_id >= 0) word_add(w, unk_id, unk_len);
  tkbuf_free(&key);
}

static void word_merge(const Tokenizer *t, Word *w) {
  if (w->n < 2) return;
  /* each merge removes a symbol and pushes at most two candidates */
  Cand *heap = tv_malloc((size_t)3 * (size_t)w->n * sizeof(Cand));
  int nh = 0;
  Sym *sy = w->v;
  for (int i = 0; i + 1 < w->n; i++) {
    const struct TkPair *m = tkpair_get(&t->merges, sy[i].c, sy[i + 1].c);
    if (m) heap_push(heap, &nh, (Cand){.rank = m->rank, .merged = m->merged, .pos = i});
  }
  while (nh) {
    Cand top = heap_pop(heap, &nh);
    Sym *cur = &sy[top.pos];
    if (cur->len == 0 || cur->next < 0) continue;
    int nx = cur->next;
    const struct TkPair *m = tkpair_get(&t->merges, cur->c, sy[nx].c);
    if (!m || m->merged != top.merged) continue; /* a stale candidate */
    cur->c = top.merged;
    cur->len += sy[nx].len;
    cur->next = sy[nx].next;
    sy[nx].len = 0;
    if (cur->next >= 0) sy[cur->next].prev = top.pos;
    if (cur->prev >= 0) {
      const struct TkPair *pm = tkpair_get(&t->merges, sy[cur->prev].c, cur->c);
      if (pm) heap_push(heap, &nh, (Cand){.rank = pm->rank, .merged = pm->merged, .pos = cur->prev});
    }
    if (cur->next >= 0) {
      const struct TkPair *nm = tkpair_get(&t->merges, cur->c, sy[cur->next].c);
      if (nm) heap_push(heap, &nh, (Cand){.rank = nm->rank, .merged = nm->merged, .pos = top.pos});
    }
  }
  free(heap);
}

void tk_bpe_word(const Tokenizer *t, const char *s, size_t n, TkIds *out) {
  if (n == 0) return;
  if (t->ignore_merges) {
    int32_t id = tkmap_get(&t->vocab, s, n);
    if (id >= 0) {
      tkids_push(out, id);
      return;
    }
  }
  Word w = {0};
  word_chars(t, s, n, &w);
  word_merge(t, &w);
  for (int i = 0; i < w.n; i++)
    if (w.v[i].len) tkids_push(out, w.v[i].c);
  free(w.v);
}
