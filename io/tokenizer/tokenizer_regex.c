/* Regular expressions of tokenizer.json run with PCRE2 the way tokenizers runs them with
 * Oniguruma: UTF + Unicode properties, ^/$ at line ends, onig's find_iter for empty matches. */
#include <stdlib.h>
#include <string.h>

#include <pcre2.h>

#include "check.h"
#include "tokenizer_internal.h"

struct TkRegex {
  pcre2_code *code;
  pcre2_match_context *mctx;
};

TkRegex *tkre_compile(const char *pat, size_t len, int literal, char *err, size_t errlen) {
  /* Oniguruma's default (Ruby) syntax has ^ and $ at every line; invalid UTF-8 in the text
   * never matches but never stops the search either (we walk such bytes one by one). */
  uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
  if (literal)
    opts |= PCRE2_LITERAL;
  else
    opts |= PCRE2_UCP | PCRE2_MULTILINE;
  int code;
  PCRE2_SIZE at;
  pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, opts, &code, &at, NULL);
  if (!re) {
    char msg[256];
    pcre2_get_error_message(code, (PCRE2_UCHAR *)msg, sizeof msg);
    tk_err(err, errlen, "%s at offset %zu", msg, (size_t)at);
    return NULL;
  }
  pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional: the interpreter works without */
  TkRegex *r = tv_calloc(1, sizeof(TkRegex));
  r->code = re;
  /* Bounds on backtracking, so that a hostile pattern cannot hang an encode. */
  r->mctx = pcre2_match_context_create(NULL);
  TV_CHECK(r->mctx, "out of memory creating a PCRE2 match context");
  pcre2_set_match_limit(r->mctx, 10000000);
  pcre2_set_depth_limit(r->mctx, 100000);
  return r;
}

void tkre_free(TkRegex *re) {
  if (!re) return;
  pcre2_match_context_free(re->mctx);
  pcre2_code_free(re->code);
  free(re);
}

void tkspans_push(TkSpans *sp, size_t a, size_t b, int match) {
  if (sp->n == sp->cap) {
    int cap = sp->cap ? sp->cap * 2 : 16;
    TkSpan *v = realloc(sp->v, (size_t)cap * sizeof(TkSpan));
    TV_CHECK(v, "out of memory growing a span list to %d", cap);
    sp->v = v;
    sp->cap = cap;
  }
  sp->v[sp->n++] = (TkSpan){.a = a, .b = b, .match = match};
}

/* One search from offset `from`: 1 with [*a, *b) on a match, 0 when there is none (a
 * resource limit reached counts as none: the rest of the text is then one gap). */
static int search_from(const TkRegex *re, pcre2_match_data *md, const char *s, size_t n,
                       size_t from, size_t *a, size_t *b) {
  int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, from, 0, md, re->mctx);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
    rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, from, PCRE2_NO_JIT, md, re->mctx);
  if (rc < 0) return 0;
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
  if (ov[0] > ov[1] || ov[1] > n) return 0; /* \K tricks can report a start after the end */
  *a = ov[0];
  *b = ov[1];
  return 1;
}

void tkre_find_matches(const TkRegex *re, const char *s, size_t n, TkSpans *out) {
  out->n = 0;
  if (n == 0) {
    tkspans_push(out, 0, 0, 0);
    return;
  }
  pcre2_match_data *md = pcre2_match_data_create_from_pattern(re->code, NULL);
  TV_CHECK(md, "out of memory creating PCRE2 match data");
  size_t prev = 0, last_end = 0, last_match_end = (size_t)-1;
  while (last_end <= n) {
    size_t a, b;
    if (!search_from(re, md, s, n, last_end, &a, &b)) break;
    if (a == b && last_match_end == b) {
      /* no empty match right after the previous one: step one character and retry */
      if (last_end >= n) break;
      last_end += tk_utf8_len((const unsigned char *)s + last_end, n - last_end);
      continue;
    }
    last_end = b;
    last_match_end = b;
    if (a < prev) continue; /* cannot happen with a sane engine; keep the spans ordered */
    if (prev != a) tkspans_push(out, prev, a, 0);
    tkspans_push(out, a, b, 1);
    prev = b;
  }
  if (prev != n) tkspans_push(out, prev, n, 0);
  pcre2_match_data_free(md);
}

int tkre_search(const TkRegex *re, const char *s, size_t n) {
  pcre2_match_data *md = pcre2_match_data_create_from_pattern(re->code, NULL);
  TV_CHECK(md, "out of memory creating PCRE2 match data");
  size_t a, b;
  int found = search_from(re, md, s, n, 0, &a, &b);
  pcre2_match_data_free(md);
  return found;
}
