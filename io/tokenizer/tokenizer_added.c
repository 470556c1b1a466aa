/* Added tokens, matched before anything else: leftmost-longest over the raw text (tokens with
 * normalized: false) or over normalised pieces, honouring single_word, lstrip and rstrip. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tokenizer_internal.h"

/* What Rust's regex \w accepts (Alphabetic, marks, decimal digits, connector punctuation,
 * joiners); the circled letters are the symbols that Unicode calls Alphabetic. */
static const char word_class[] =
    "[\\p{L}\\p{Nl}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}\\x{24B6}-\\x{24E9}\\x{1F130}-\\x{1F149}"
    "\\x{1F150}-\\x{1F169}\\x{1F170}-\\x{1F189}]";

/* Pattern bytes of added token i in a set (raw content or normalised content). */
static const char *pattern(const Tokenizer *t, const TkAddedSet *set, int i, size_t *len) {
  const TkAdded *a = &t->added[i];
  if (set == &t->norm_set) {
    *len = a->norm_len;
    return a->norm;
  }
  *len = a->len;
  return a->content;
}

static void build_set(Tokenizer *t, TkAddedSet *set, int normalized) {
  set->idx = tv_malloc((size_t)(t->n_added + 1) * sizeof(int));
  /* bucket by first byte (counting sort); inside a bucket longest first, then file order */
  int count[257] = {0};
  for (int i = 0; i < t->n_added; i++) {
    size_t len;
    const char *p = t->added[i].normalized == normalized ? pattern(t, set, i, &len) : NULL;
    if (p && len) count[(unsigned char)p[0] + 1]++;
  }
  for (int b = 0; b < 256; b++) count[b + 1] += count[b];
  memcpy(set->start, count, sizeof(count));
  int fill[256];
  memcpy(fill, count, sizeof(fill));
  for (int i = 0; i < t->n_added; i++) {
    size_t len;
    const char *p = t->added[i].normalized == normalized ? pattern(t, set, i, &len) : NULL;
    if (!p || !len) continue;
    int b = (unsigned char)p[0], k = fill[b]++;
    while (k > set->start[b]) { /* insertion: shift shorter patterns right */
      size_t ol;
      pattern(t, set, set->idx[k - 1], &ol);
      if (ol >= len) break;
      set->idx[k] = set->idx[k - 1];
      k--;
    }
    set->idx[k] = i;
  }
}

int tk_added_prepare(Tokenizer *t, char *err, size_t errlen) {
  int single = 0;
  for (int i = 0; i < t->n_added; i++) {
    TkAdded *a = &t->added[i];
    single |= a->single_word;
    if (a->normalized) {
      TkBuf nb = {0};
      /* as tokenizers does: the content alone, as if it began the input */
      tk_normalize(t, a->content, a->len, tk_utf8_len((const unsigned char *)a->content, a->len),
                   &nb);
      tkbuf_reserve(&nb, 0);
      a->norm = nb.p;
      a->norm_len = nb.len;
    }
  }
  build_set(t, &t->raw_set, 0);
  build_set(t, &t->norm_set, 1);
  if (single) {
    t->word_start = tkre_compile(word_class, strlen(word_class), 0, err, errlen);
    TV_CHECK(t->word_start, "the word class pattern does not compile");
  }
  return 0;
}

/* Start of the character that ends at pos (an invalid byte counts as a character). */
static size_t prev_char(const char *s, size_t pos) {
  for (size_t back = 1; back <= 4 && back <= pos; back++) {
    unsigned char c = (unsigned char)s[pos - back];
    if ((c & 0xC0) != 0x80) {
      size_t l = tk_utf8_len((const unsigned char *)s + pos - back, back);
      return l == back ? pos - back : pos - 1;
    }
  }
  return pos - 1;
}

static int is_word_char(const Tokenizer *t, const char *s, size_t n) {
  if (!tk_is_valid_utf8((const unsigned char *)s, n)) return 0;
  return tkre_search(t->word_start, s, n);
}

static int is_space_at(const char *s, size_t a, size_t b) {
  size_t l;
  uint32_t cp = tk_utf8_decode((const unsigned char *)s + a, b - a, &l);
  return l == b - a && tk_is_whitespace(cp);
}

void tk_added_split(const Tokenizer *t, const TkAddedSet *set, const char *s, size_t n,
                    TkSpans *out, TkIds *ids) {
  out->n = 0;
  ids->n = 0;
  size_t start_offset = 0, pos = 0;
  int any = set->start[256] > 0;
  while (any && pos < n) {
    /* leftmost: the first position where some token matches; longest there */
    int b = (unsigned char)s[pos], hit = -1;
    for (int k = set->start[b]; k < set->start[b + 1]; k++) {
      size_t len;
      const char *p = pattern(t, set, set->idx[k], &len);
      if (len <= n - pos && memcmp(s + pos, p, len) == 0) {
        hit = set->idx[k];
        break;
      }
    }
    if (hit < 0) {
      pos++;
      continue;
    }
    size_t mlen;
    pattern(t, set, hit, &mlen);
    size_t start = pos, stop = pos + mlen;
    pos = stop; /* the scan goes on after the match, whatever is done with it */
    const TkAdded *a = &t->added[t->added_of_id[t->added[hit].id]];
    if (a->single_word) {
      size_t before = start ? prev_char(s, start) : 0;
      size_t after = stop < n ? tk_utf8_len((const unsigned char *)s + stop, n - stop) : 0;
      int left_ok = start == 0 || !is_word_char(t, s + before, start - before);
      int right_ok = stop == n || !is_word_char(t, s + stop, after);
      if (!left_ok || !right_ok) continue;
    }
    if (a->lstrip) {
      size_t ns = start;
      while (ns > 0 && is_space_at(s, prev_char(s, ns), ns)) ns = prev_char(s, ns);
      start = ns > start_offset ? ns : start_offset;
    }
    if (a->rstrip) {
      while (stop < n) {
        size_t l = tk_utf8_len((const unsigned char *)s + stop, n - stop);
        if (!is_space_at(s, stop, stop + l)) break;
        stop += l;
      }
    }
    /* tokenizers would emit overlapping pieces here (a token starting inside the spaces the
     * previous one swallowed); keeping pieces disjoint, that match is dropped */
    if (start < start_offset) continue;
    if (start_offset < start) {
      tkspans_push(out, start_offset, start, 0);
      tkids_push(ids, -1);
    }
    tkspans_push(out, start, stop, 1);
    tkids_push(ids, a->id);
    start_offset = stop;
    if (pos < stop) pos = stop;
  }
  if (start_offset != n) {
    tkspans_push(out, start_offset, n, 0);
    tkids_push(ids, -1);
  }
}
