/* Open-addressing hash maps of the tokenizer: token bytes -> id (vocab, added tokens) and
 * (left id, right id) -> merge, sized for Llama-3's 128k tokens and 280k merges. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tokenizer_internal.h"

static uint32_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
  return (uint32_t)(h ^ (h >> 32));
}

static void strmap_rehash(TkStrMap *m, size_t nslots) {
  free(m->slots);
  m->slots = tv_calloc(nslots, sizeof(uint32_t));
  m->nslots = nslots;
  for (size_t e = 0; e < m->n; e++) {
    size_t i = m->ent[e].hash & (nslots - 1);
    while (m->slots[i]) i = (i + 1) & (nslots - 1);
    m->slots[i] = (uint32_t)(e + 1);
  }
}

static struct TkStrEntry *strmap_find(const TkStrMap *m, const char *key, size_t len, uint32_t h,
                                      size_t *slot) {
  if (!m->nslots) return NULL;
  size_t i = h & (m->nslots - 1);
  while (m->slots[i]) {
    struct TkStrEntry *e = &m->ent[m->slots[i] - 1];
    if (e->hash == h && e->len == len && memcmp(m->keys.p + e->off, key, len) == 0) return e;
    i = (i + 1) & (m->nslots - 1);
  }
  if (slot) *slot = i;
  return NULL;
}

int tkmap_put(TkStrMap *m, const char *key, size_t len, int32_t val) {
  TV_CHECK(len < UINT32_MAX, "token of %zu bytes", len);
  uint32_t h = hash_bytes(key, len);
  struct TkStrEntry *e = strmap_find(m, key, len, h, NULL);
  if (e) {
    e->val = val;
    return 0;
  }
  if ((m->n + 1) * 2 > m->nslots) strmap_rehash(m, m->nslots ? m->nslots * 2 : 64);
  if (m->n == m->cap) {
    m->cap = m->cap ? m->cap * 2 : 64;
    struct TkStrEntry *ne = realloc(m->ent, m->cap * sizeof(*ne));
    TV_CHECK(ne, "out of memory growing a token map to %zu entries", m->cap);
    m->ent = ne;
  }
  size_t slot = 0;
  strmap_find(m, key, len, h, &slot);
  m->ent[m->n] = (struct TkStrEntry){.off = m->keys.len, .len = (uint32_t)len, .hash = h, .val = val};
  tkbuf_put(&m->keys, key, len);
  m->slots[slot] = (uint32_t)(++m->n);
  return 1;
}

int32_t tkmap_get(const TkStrMap *m, const char *key, size_t len) {
  const struct TkStrEntry *e = strmap_find(m, key, len, hash_bytes(key, len), NULL);
  return e ? e->val : -1;
}

void tkmap_free(TkStrMap *m) {
  free(m->slots);
  free(m->ent);
  tkbuf_free(&m->keys);
  memset(m, 0, sizeof(*m));
}

static uint64_t pair_key(int32_t a, int32_t b) {
  return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
}

static size_t pair_slot(uint64_t key, size_t nslots) {
  uint64_t h = key * 0x9E3779B97F4A7C15ull;
  return (size_t)(h >> 17) & (nslots - 1);
}

void tkpair_put(TkPairMap *m, int32_t a, int32_t b, int32_t rank, int32_t merged) {
  if ((m->n + 1) * 2 > m->nslots) {
    size_t ns = m->nslots ? m->nslots * 2 : 64;
    struct TkPair *old = m->slots;
    size_t on = m->nslots;
    m->slots = tv_calloc(ns, sizeof(struct TkPair));
    m->nslots = ns;
    for (size_t i = 0; i < on; i++) {
      if (!old[i].key) continue;
      size_t j = pair_slot(old[i].key, ns);
      while (m->slots[j].key) j = (j + 1) & (ns - 1);
      m->slots[j] = old[i];
    }
    free(old);
  }
  uint64_t key = pair_key(a, b);
  size_t j = pair_slot(key, m->nslots);
  while (m->slots[j].key && m->slots[j].key != key) j = (j + 1) & (m->nslots - 1);
  if (!m->slots[j].key) m->n++;
  /* a repeated pair keeps its last rank, as tokenizers' HashMap collect does */
  m->slots[j] = (struct TkPair){.key = key, .rank = rank, .merged = merged};
}

const struct TkPair *tkpair_get(const TkPairMap *m, int32_t a, int32_t b) {
  if (!m->nslots) return NULL;
  uint64_t key = pair_key(a, b);
  size_t j = pair_slot(key, m->nslots);
  while (m->slots[j].key) {
    if (m->slots[j].key == key) return &m->slots[j];
    j = (j + 1) & (m->nslots - 1);
  }
  return NULL;
}

void tkpair_free(TkPairMap *m) {
  free(m->slots);
  memset(m, 0, sizeof(*m));
}
