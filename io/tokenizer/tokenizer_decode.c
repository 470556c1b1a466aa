/* Decoding: ids to token strings, then the decoder chain of tokenizer.json (Replace,
 * ByteFallback, Fuse, Strip, ByteLevel, Metaspace), as tokenizers' decode_chain runs it. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tokenizer_internal.h"

const char *tk_id_text(const Tokenizer *t, int32_t id, size_t *len) {
  if (id < 0 || id >= t->n_ids || t->id_off[id] == SIZE_MAX) return NULL;
  *len = t->id_len[id];
  return t->id_text.p + t->id_off[id];
}

/* A list of strings, each a span of one buffer. */
typedef struct {
  TkBuf buf;
  size_t *off, *len;
  int n, cap;
} Toks;

static void toks_begin(Toks *k) {
  if (k->n == k->cap) {
    k->cap = k->cap ? k->cap * 2 : 64;
    k->off = realloc(k->off, (size_t)k->cap * sizeof(size_t));
    k->len = realloc(k->len, (size_t)k->cap * sizeof(size_t));
    TV_CHECK(k->off && k->len, "out of memory growing a token list to %d", k->cap);
  }
  tkbuf_reserve(&k->buf, 0); /* never a NULL base, even for empty strings */
  k->off[k->n] = k->buf.len;
  k->len[k->n] = 0;
  k->n++;
}

static void toks_add(Toks *k, const void *s, size_t n) { /* to the last string */
  tkbuf_put(&k->buf, s, n);
  k->len[k->n - 1] += n;
}

static void toks_free(Toks *k) {
  tkbuf_free(&k->buf);
  free(k->off);
  free(k->len);
}

/* <0xNN> as tokenizers reads it: six bytes, and u8::from_str_radix(NN, 16) succeeds (which
 * also takes a '+' sign before a single digit). */
static int byte_token(const char *s, size_t n) {
  if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; i++) {
    char c = s[i];
    int d = c >= '0' && c <= '9' ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
            : (c == '+' && i == 3) ? -2
                                   : -1;
    if (d == -1) return -1;
    if (d == -2) continue;
    v = v * 16 + d;
  }
  return v;
}

static void flush_bytes(Toks *out, TkBuf *pend) {
  if (!pend->len) return;
  if (tk_is_valid_utf8((const unsigned char *)pend->p, pend->len)) {
    toks_begin(out);
    toks_add(out, pend->p, pend->len);
  } else {
    for (size_t i = 0; i < pend->len; i++) {
      toks_begin(out);
      toks_add(out, "\xEF\xBF\xBD", 3);
    }
  }
  pend->len = 0;
}

/* One decoder step: in -> out (out is empty on entry). */
static void step(const TkDecStep *st, const Toks *in, Toks *out) {
  TkSpans sp = {0};
  TkBuf pend = {0};
  if (st->kind == TK_DEC_FUSE || st->kind == TK_DEC_BYTELEVEL) toks_begin(out);
  for (int i = 0; i < in->n; i++) {
    const char *s = in->buf.p + in->off[i];
    size_t n = in->len[i];
    switch (st->kind) {
      case TK_DEC_FUSE:
        toks_add(out, s, n);
        break;
      case TK_DEC_REPLACE:
        toks_begin(out);
        tkre_find_matches(st->re, s, n, &sp);
        for (int k = 0; k < sp.n; k++) {
          if (sp.v[k].match)
            toks_add(out, st->content, st->content_len);
          else
            toks_add(out, s + sp.v[k].a, sp.v[k].b - sp.v[k].a);
        }
        break;
      case TK_DEC_BYTEFALLBACK: {
        int b = byte_token(s, n);
        if (b >= 0) {
          char c = (char)b;
          tkbuf_put(&pend, &c, 1);
        } else {
          flush_bytes(out, &pend);
          toks_begin(out);
          toks_add(out, s, n);
        }
        break;
      }
      case TK_DEC_STRIP: {
        /* up to `start` leading and `stop` trailing copies of the character */
        size_t a = 0, b = n;
        for (int c = 0; c < st->start && a < b; c++) {
          size_t l;
          if (tk_utf8_decode((const unsigned char *)s + a, b - a, &l) != st->strip_cp) break;
          a += l;
        }
        for (int c = 0; c < st->stop && b > a; c++) {
          size_t p = b - 1;
          while (p > a && ((unsigned char)s[p] & 0xC0) == 0x80 && b - p < 4) p--;
          size_t l;
          if (tk_utf8_decode((const unsigned char *)s + p, b - p, &l) != st->strip_cp || l != b - p)
            break;
          b = p;
        }
        toks_begin(out);
        toks_add(out, s + a, b - a);
        break;
      }
      case TK_DEC_BYTELEVEL: {
        /* a token whose characters all stand for bytes gives those bytes, else its text */
        size_t start = out->buf.len, k = 0;
        int ok = 1;
        while (k < n) {
          size_t l;
          uint32_t cp = tk_utf8_decode((const unsigned char *)s + k, n - k, &l);
          int byte = cp == 0xFFFFFFFFu ? -1 : tk_char_byte(cp);
          if (byte < 0) {
            ok = 0;
            break;
          }
          char c = (char)byte;
          toks_add(out, &c, 1);
          k += l;
        }
        if (!ok) {
          out->buf.len = start;
          out->len[out->n - 1] = start - out->off[out->n - 1];
          toks_add(out, s, n);
        }
        break;
      }
      case TK_DEC_METASPACE:
        toks_begin(out);
        for (size_t k = 0; k < n;) {
          size_t l;
          uint32_t cp = tk_utf8_decode((const unsigned char *)s + k, n - k, &l);
          if (cp == st->strip_cp) {
            /* the first token loses every replacement character, not just one */
            if (!(i == 0 && st->prepend_scheme != TK_PREPEND_NEVER)) toks_add(out, " ", 1);
          } else {
            toks_add(out, s + k, l);
          }
          k += l;
        }
        break;
    }
  }
  if (st->kind == TK_DEC_BYTEFALLBACK) flush_bytes(out, &pend);
  if (st->kind == TK_DEC_BYTELEVEL) {
    /* from_utf8_lossy over everything */
    TkBuf lossy = {0};
    tk_append_lossy(&lossy, (const unsigned char *)out->buf.p, out->buf.len);
    out->buf.len = 0;
    out->n = 0;
    toks_begin(out);
    toks_add(out, lossy.p ? lossy.p : "", lossy.len);
    tkbuf_free(&lossy);
  }
  free(sp.v);
  tkbuf_free(&pend);
}

char *tokenizer_decode_len(const Tokenizer *t, const int32_t *ids, int n, int skip_special,
                           size_t *len) {
  Toks a = {0}, b = {0};
  for (int i = 0; i < n; i++) {
    size_t len;
    const char *s = tk_id_text(t, ids[i], &len);
    if (!s) continue; /* unknown ids are dropped, as tokenizers does */
    if (skip_special && tkmap_get(&t->special, s, len) >= 0) continue;
    toks_begin(&a);
    toks_add(&a, s, len);
  }
  for (int i = 0; i < t->n_dec; i++) {
    b.n = 0;
    b.buf.len = 0;
    step(&t->dec[i], &a, &b);
    Toks tmp = a;
    a = b;
    b = tmp;
  }
  TkBuf res = {0};
  for (int i = 0; i < a.n; i++) {
    if (i && !t->has_decoder) tkbuf_putc(&res, ' '); /* no decoder: tokens joined by spaces */
    tkbuf_put(&res, a.buf.p + a.off[i], a.len[i]);
  }
  tkbuf_reserve(&res, 0);
  res.p[res.len] = 0;
  toks_free(&a);
  toks_free(&b);
  if (len) *len = res.len;
  return res.p;
}

char *tokenizer_decode(const Tokenizer *t, const int32_t *ids, int n, int skip_special) {
  return tokenizer_decode_len(t, ids, n, skip_special, NULL);
}
