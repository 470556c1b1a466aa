/* Small helpers of the tokenizer: growable buffers, UTF-8 walking that never rejects
 * input, Unicode White_Space, and Rust's from_utf8_lossy rule for decoded bytes. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tokenizer_internal.h"

void tkbuf_reserve(TkBuf *b, size_t extra) {
  if (b->len + extra + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < b->len + extra + 1) cap *= 2;
  char *p = realloc(b->p, cap);
  TV_CHECK(p, "out of memory growing a tokenizer buffer to %zu bytes", cap);
  b->p = p;
  b->cap = cap;
}

void tkbuf_put(TkBuf *b, const void *src, size_t n) {
  tkbuf_reserve(b, n);
  if (n) memcpy(b->p + b->len, src, n);
  b->len += n;
  b->p[b->len] = 0;
}

void tkbuf_putc(TkBuf *b, char c) { tkbuf_put(b, &c, 1); }

void tkbuf_free(TkBuf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

void tkids_push(TkIds *a, int32_t id) {
  if (a->n == a->cap) {
    int cap = a->cap ? a->cap * 2 : 32;
    int32_t *v = realloc(a->v, (size_t)cap * sizeof(int32_t));
    TV_CHECK(v, "out of memory growing a token id list to %d", cap);
    a->v = v;
    a->cap = cap;
  }
  a->v[a->n++] = id;
}

void tk_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Length of the valid prefix of the sequence starting at s (Unicode's table of well-formed
 * byte sequences); *need is the full length the lead byte asks for (0: not a lead byte). */
static size_t utf8_valid_prefix(const unsigned char *s, size_t n, size_t *need) {
  unsigned char c = s[0];
  unsigned char lo = 0x80, hi = 0xBF;
  size_t len;
  if (c < 0x80) {
    *need = 1;
    return 1;
  } else if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    *need = 0;
    return 0;
  }
  *need = len;
  size_t i = 1;
  if (i < n && s[i] >= lo && s[i] <= hi) {
    i++;
    while (i < len && i < n && s[i] >= 0x80 && s[i] <= 0xBF) i++;
  }
  return i;
}

size_t tk_utf8_len(const unsigned char *s, size_t n) {
  if (!n) return 0;
  size_t need, got = utf8_valid_prefix(s, n, &need);
  return need && got == need ? need : 1;
}

uint32_t tk_utf8_decode(const unsigned char *s, size_t n, size_t *len) {
  size_t l = tk_utf8_len(s, n);
  *len = l;
  if (l == 1) return s[0] < 0x80 ? s[0] : 0xFFFFFFFFu;
  uint32_t cp = s[0] & (0x7F >> l);
  for (size_t i = 1; i < l; i++) cp = (cp << 6) | (s[i] & 0x3F);
  return cp;
}

int tk_is_valid_utf8(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    size_t need, got = utf8_valid_prefix(s + i, n - i, &need);
    if (!need || got != need) return 0;
    i += need;
  }
  return 1;
}

int tk_is_whitespace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

void tk_append_lossy(TkBuf *out, const unsigned char *s, size_t n) {
  static const char repl[] = "\xEF\xBF\xBD";
  size_t i = 0;
  while (i < n) {
    size_t need, got = utf8_valid_prefix(s + i, n - i, &need);
    if (need && got == need) {
      tkbuf_put(out, s + i, need);
      i += need;
    } else {
      /* one U+FFFD for the maximal subpart: the lead byte and its valid continuations */
      tkbuf_put(out, repl, 3);
      i += got ? got : 1;
    }
  }
}
