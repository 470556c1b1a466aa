/* Small helpers of the synthetic benchmark: growable strings, a string -> int map, seeded
 * draws and shuffles, and atomic file writes. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "synth_internal.h"

void sbuf_putn(SBuf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = tv_malloc(cap);
    if (b->s) memcpy(p, b->s, b->len);
    free(b->s);
    b->s = p;
    b->cap = cap;
  }
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

void sbuf_put(SBuf *b, const char *s) { sbuf_putn(b, s, strlen(s)); }

void sbuf_fill(SBuf *b, const char *tmpl, const char *const *vals) {
  for (const char *p = tmpl; *p;) {
    if (p[0] == '{' && p[1] >= '0' && p[1] <= '9' && p[2] == '}') {
      sbuf_put(b, vals[p[1] - '0']);
      p += 3;
    } else {
      sbuf_putn(b, p, 1);
      p++;
    }
  }
}

void sbuf_clear(SBuf *b) {
  b->len = 0;
  if (b->s) b->s[0] = '\0';
}

char *sbuf_take(SBuf *b) {
  char *s = b->s ? b->s : synth_strdup("");
  b->s = NULL;
  b->len = b->cap = 0;
  return s;
}

char *synth_strdup(const char *s) {
  size_t n = strlen(s);
  char *p = tv_malloc(n + 1);
  memcpy(p, s, n + 1);
  return p;
}

/* FNV-1a: the map only needs a fast, deterministic spread. */
static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

void strmap_init(StrMap *m) { memset(m, 0, sizeof *m); }

void strmap_free(StrMap *m) {
  for (size_t i = 0; i < m->cap; i++) free(m->slot_key[i]);
  free(m->slot_key);
  free(m->slot_val);
  free(m->keys);
  memset(m, 0, sizeof *m);
}

static size_t find_slot(const StrMap *m, const char *key, size_t len) {
  size_t i = hash_bytes(key, len) & (m->cap - 1);
  while (m->slot_key[i] && !(strlen(m->slot_key[i]) == len && memcmp(m->slot_key[i], key, len) == 0))
    i = (i + 1) & (m->cap - 1);
  return i;
}

int strmap_get(const StrMap *m, const char *key, size_t len) {
  if (!m->cap) return -1;
  size_t i = find_slot(m, key, len);
  return m->slot_key[i] ? m->slot_val[i] : -1;
}

static void grow(StrMap *m) {
  StrMap big;
  memset(&big, 0, sizeof big);
  big.cap = m->cap ? m->cap * 2 : 256;
  big.slot_key = tv_calloc(big.cap, sizeof(char *));
  big.slot_val = tv_calloc(big.cap, sizeof(int));
  for (size_t i = 0; i < m->cap; i++) {
    if (!m->slot_key[i]) continue;
    size_t j = find_slot(&big, m->slot_key[i], strlen(m->slot_key[i]));
    big.slot_key[j] = m->slot_key[i];
    big.slot_val[j] = m->slot_val[i];
  }
  free(m->slot_key);
  free(m->slot_val);
  m->slot_key = big.slot_key;
  m->slot_val = big.slot_val;
  m->cap = big.cap;
}

int strmap_add(StrMap *m, const char *key, size_t len, int val) {
  if ((m->n + 1) * 2 > m->cap) grow(m);
  size_t i = find_slot(m, key, len);
  if (m->slot_key[i]) return 0;
  char *copy = tv_malloc(len + 1);
  memcpy(copy, key, len);
  copy[len] = '\0';
  m->slot_key[i] = copy;
  m->slot_val[i] = val;
  if (m->n == m->keys_cap) {
    m->keys_cap = m->keys_cap ? m->keys_cap * 2 : 256;
    char **k = tv_malloc(m->keys_cap * sizeof(char *));
    if (m->keys) memcpy(k, m->keys, m->n * sizeof(char *));
    free(m->keys);
    m->keys = k;
  }
  m->keys[m->n++] = copy;
  return 1;
}

void synth_write_file(const char *dir, const char *name, const char *text, size_t len) {
  size_t n = strlen(dir) + strlen(name) + 8;
  char *path = tv_malloc(n), *tmp = tv_malloc(n + 4);
  snprintf(path, n, "%s/%s", dir, name);
  snprintf(tmp, n + 4, "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  if (!f) tv_die("cannot write %s: %s", tmp, strerror(errno));
  size_t wrote = fwrite(text, 1, len, f);
  int bad = wrote != len || ferror(f);
  if (fclose(f) != 0) bad = 1;
  if (bad) {
    remove(tmp);
    tv_die("cannot write %s: %s", tmp, strerror(errno ? errno : EIO));
  }
  if (rename(tmp, path) != 0) tv_die("cannot rename %s to %s: %s", tmp, path, strerror(errno));
  free(path);
  free(tmp);
}
