/* Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011):
 * the scalar block is in philox.h (shared with the GPU); the vectorised lanes and streams here. */
#include "rng.h"

#include <string.h>

#include "check.h"
#include "philox.h"

void philox4x32(uint64_t seed, uint64_t stream, uint64_t index, uint32_t out[4]) {
  philox4x32_block(seed, stream, index, out);
}

/* Eight counters per vector of 64-bit lanes, each lane holding a 32-bit word: the products
 * of two such words are exact in 64 bits, so the high and low halves come out as in the
 * scalar round. GCC / Clang vector extensions: SIMD where the target has it, scalar else. */
typedef uint64_t u64x8 __attribute__((vector_size(64)));

static void philox_x8(uint64_t seed, uint64_t stream, uint64_t first_index, int lane0,
                      uint32_t out[4 * RNG_LANES]) {
  u64x8 c0, c1, c2, c3;
  for (int i = 0; i < 8; i++) {
    uint64_t index = first_index + (uint64_t)(lane0 + i);
    c0[i] = (uint32_t)stream, c1[i] = (uint32_t)(stream >> 32);
    c2[i] = (uint32_t)index, c3[i] = (uint32_t)(index >> 32);
  }
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  const u64x8 low32 = (u64x8){0} + 0xFFFFFFFFu;
  for (int round = 0; round < 10; round++) {
    u64x8 p0 = c0 * (uint64_t)PHILOX_M0, p1 = c2 * (uint64_t)PHILOX_M1;
    u64x8 n0 = (p1 >> 32) ^ c1 ^ (uint64_t)k0;
    u64x8 n2 = (p0 >> 32) ^ c3 ^ (uint64_t)k1;
    c1 = p1 & low32;
    c3 = p0 & low32;
    c0 = n0;
    c2 = n2;
    k0 += PHILOX_W0;
    k1 += PHILOX_W1;
  }
  for (int i = 0; i < 8; i++) {
    uint32_t *o = out + 4 * (lane0 + i);
    o[0] = (uint32_t)c0[i], o[1] = (uint32_t)c1[i], o[2] = (uint32_t)c2[i], o[3] = (uint32_t)c3[i];
  }
}

void philox4x32_lanes(uint64_t seed, uint64_t stream, uint64_t first_index,
                      uint32_t out[4 * RNG_LANES]) {
  for (int lane0 = 0; lane0 < RNG_LANES; lane0 += 8)
    philox_x8(seed, stream, first_index, lane0, out);
}

float rng_uniform_at(uint64_t seed, uint64_t stream, uint64_t index) {
  uint32_t w[4];
  philox4x32(seed, stream, index, w);
  return (float)(w[0] >> 8) * (1.0f / 16777216.0f);
}

Rng rng_make(uint64_t seed, uint64_t stream) {
  return (Rng){.seed = seed, .stream = stream, .counter = 0};
}

uint64_t rng_next_u64(Rng *r) {
  uint32_t w[4];
  philox4x32(r->seed, r->stream, r->counter++, w);
  return ((uint64_t)w[1] << 32) | w[0];
}

double rng_next_double(Rng *r) { return (double)(rng_next_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

float rng_next_uniform(Rng *r) { return (float)(rng_next_u64(r) >> 40) * (1.0f / 16777216.0f); }

uint64_t rng_below(Rng *r, uint64_t n) {
  TV_CHECK(n >= 1, "rng_below(0)");
  uint64_t rejected = -n % n; /* 2^64 mod n: the words that would favour small values */
  for (;;) {
    uint64_t x = rng_next_u64(r);
    if (x >= rejected) return x % n;
  }
}

void rng_shuffle(Rng *r, void *items, size_t n, size_t item_size) {
  unsigned char tmp[16], *a = items;
  TV_CHECK(item_size <= sizeof tmp, "rng_shuffle of %zu-byte items", item_size);
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)rng_below(r, i);
    memcpy(tmp, a + (i - 1) * item_size, item_size);
    memcpy(a + (i - 1) * item_size, a + j * item_size, item_size);
    memcpy(a + j * item_size, tmp, item_size);
  }
}

/* splitmix64 finaliser: a bijective mix, so distinct inputs chain to well-spread ids. */
static uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t rng_stream_id(uint32_t tag, uint32_t a, uint32_t b, uint32_t c) {
  uint64_t h = mix64(tag);
  h = mix64(h ^ a);
  h = mix64(h ^ ((uint64_t)b << 32 | c));
  return h;
}

uint64_t rng_mix(uint64_t stream, uint64_t value) { return mix64(stream ^ mix64(value)); }
