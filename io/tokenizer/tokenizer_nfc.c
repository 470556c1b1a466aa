/* Unicode NFC for the NFC normaliser (Qwen2's tokenizer.json): full canonical decomposition,
 * canonical ordering, then canonical composition, with tables from tokenizer_nfc_data.c. */
#include <stdlib.h>

#include "check.h"
#include "tokenizer_internal.h"

#define INVALID_BYTE 0x80000000u /* | byte: a byte that is not UTF-8, kept as it is */

enum { S_BASE = 0xAC00, L_BASE = 0x1100, V_BASE = 0x1161, T_BASE = 0x11A7, L_COUNT = 19,
       V_COUNT = 21, T_COUNT = 28, N_COUNT = V_COUNT * T_COUNT, S_COUNT = L_COUNT * N_COUNT };

static int ccc(uint32_t cp) {
  int lo = 0, hi = tk_nfc_ccc_n - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (cp < tk_nfc_ccc[mid].first)
      hi = mid - 1;
    else if (cp > tk_nfc_ccc[mid].last)
      lo = mid + 1;
    else
      return tk_nfc_ccc[mid].ccc;
  }
  return 0;
}

static const TkDecomp *decomp(uint32_t cp) {
  int lo = 0, hi = tk_nfc_decomp_n - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (cp < tk_nfc_decomp[mid].cp)
      hi = mid - 1;
    else if (cp > tk_nfc_decomp[mid].cp)
      lo = mid + 1;
    else
      return &tk_nfc_decomp[mid];
  }
  return NULL;
}

/* The primary composite of a b, or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
    return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
  if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE &&
      b < T_BASE + T_COUNT)
    return a + (b - T_BASE);
  int lo = 0, hi = tk_nfc_comp_n - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    const TkComp *c = &tk_nfc_comp[mid];
    if (a < c->a || (a == c->a && b < c->b))
      hi = mid - 1;
    else if (a > c->a || b > c->b)
      lo = mid + 1;
    else
      return c->cp;
  }
  return 0;
}

typedef struct {
  uint32_t *v;
  size_t n, cap;
} Cps;

static void cps_push(Cps *c, uint32_t cp) {
  if (c->n == c->cap) {
    c->cap = c->cap ? c->cap * 2 : 64;
    uint32_t *v = realloc(c->v, c->cap * sizeof(uint32_t));
    TV_CHECK(v, "out of memory in NFC");
    c->v = v;
  }
  c->v[c->n++] = cp;
}

static void decompose(uint32_t cp, Cps *out, int depth) {
  if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
    uint32_t s = cp - S_BASE;
    cps_push(out, L_BASE + s / N_COUNT);
    cps_push(out, V_BASE + (s % N_COUNT) / T_COUNT);
    if (s % T_COUNT) cps_push(out, T_BASE + s % T_COUNT);
    return;
  }
  const TkDecomp *d = depth < 8 ? decomp(cp) : NULL;
  if (!d) {
    cps_push(out, cp);
    return;
  }
  decompose(d->a, out, depth + 1);
  if (d->b) decompose(d->b, out, depth + 1);
}

static void put_utf8(TkBuf *out, uint32_t cp) {
  char b[4];
  size_t n;
  if (cp & INVALID_BYTE) {
    b[0] = (char)(cp & 0xFF);
    n = 1;
  } else if (cp < 0x80) {
    b[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    b[0] = (char)(0xC0 | (cp >> 6));
    b[1] = (char)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    b[0] = (char)(0xE0 | (cp >> 12));
    b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    b[2] = (char)(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    b[0] = (char)(0xF0 | (cp >> 18));
    b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    b[3] = (char)(0x80 | (cp & 0x3F));
    n = 4;
  }
  tkbuf_put(out, b, n);
}

void tk_nfc(const char *s, size_t n, TkBuf *out) {
  /* below U+0300 nothing decomposes into or composes with anything that follows */
  size_t i = 0;
  while (i < n && (unsigned char)s[i] < 0xCC) i++;
  if (i == n) {
    tkbuf_put(out, s, n);
    return;
  }
  Cps c = {0};
  for (i = 0; i < n;) {
    size_t l;
    uint32_t cp = tk_utf8_decode((const unsigned char *)s + i, n - i, &l);
    if (cp == 0xFFFFFFFFu)
      cps_push(&c, INVALID_BYTE | (unsigned char)s[i]);
    else
      decompose(cp, &c, 0);
    i += l;
  }
  /* canonical ordering: a stable sort of each run of non-starters by class */
  for (size_t k = 1; k < c.n; k++) {
    int ck = (c.v[k] & INVALID_BYTE) ? 0 : ccc(c.v[k]);
    if (!ck) continue;
    for (size_t j = k; j > 0; j--) {
      int cj = (c.v[j - 1] & INVALID_BYTE) ? 0 : ccc(c.v[j - 1]);
      if (cj <= ck) break;
      uint32_t tmp = c.v[j];
      c.v[j] = c.v[j - 1];
      c.v[j - 1] = tmp;
    }
  }
  /* canonical composition (UAX #15): a character joins the last starter unless blocked */
  if (c.n) {
    size_t starter = 0, w = 1;
    int last = (c.v[0] & INVALID_BYTE) ? 0 : ccc(c.v[0]);
    if (last) last = 256; /* a leading non-starter blocks everything after it */
    for (size_t k = 1; k < c.n; k++) {
      uint32_t ch = c.v[k];
      int cc = (ch & INVALID_BYTE) ? 0 : ccc(ch);
      uint32_t comp = ((ch | c.v[starter]) & INVALID_BYTE) ? 0 : compose(c.v[starter], ch);
      if (comp && (last < cc || last == 0)) {
        c.v[starter] = comp;
        continue;
      }
      if (cc == 0) starter = w;
      last = cc;
      c.v[w++] = ch;
    }
    c.n = w;
  }
  for (size_t k = 0; k < c.n; k++) put_utf8(out, c.v[k]);
  free(c.v);
}
