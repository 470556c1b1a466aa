/* Counter-based random numbers (Philox4x32-10): the value at (seed, stream, index) is a
 * pure function, so streams do not depend on thread count, rank count or backend. */
#ifndef TV_RNG_H
#define TV_RNG_H

#include <stddef.h>
#include <stdint.h>

/* Four 32-bit words at counter (stream, index) under key seed. */
void philox4x32(uint64_t seed, uint64_t stream, uint64_t index, uint32_t out[4]);

/* The same for RNG_LANES consecutive counters at once: out[4 * i + j] is word j of index
 * first_index + i (so the words of consecutive indices are consecutive). Written
 * lane-parallel so the compiler vectorises the multiplies; bit-identical to RNG_LANES calls
 * of philox4x32. */
#define RNG_LANES 16
void philox4x32_lanes(uint64_t seed, uint64_t stream, uint64_t first_index,
                      uint32_t out[4 * RNG_LANES]);

/* Uniform in [0, 1) with 24 random bits: element `index` of stream `stream`. */
float rng_uniform_at(uint64_t seed, uint64_t stream, uint64_t index);

/* A sequential generator over one stream; its whole state is (seed, stream, counter),
 * which is what a checkpoint saves. */
typedef struct {
  uint64_t seed;
  uint64_t stream;
  uint64_t counter; /* next index to draw */
} Rng;

Rng rng_make(uint64_t seed, uint64_t stream);
uint64_t rng_next_u64(Rng *r);
double rng_next_double(Rng *r); /* uniform [0, 1), 53 bits */
float rng_next_uniform(Rng *r); /* uniform [0, 1), 24 bits */
/* Uniform in [0, n), n >= 1, without modulo bias: draws below 2^64 mod n are rejected, so
 * each of the n values takes the same number of the accepted words. */
uint64_t rng_below(Rng *r, uint64_t n);
/* Fisher-Yates: permutes n items of item_size bytes (<= 16) so that every order is equally
 * likely; draws rng_below(i) for i = n, n - 1, ..., 2. */
void rng_shuffle(Rng *r, void *items, size_t n, size_t item_size);

/* Stream ids are built from a purpose tag and up to three small integers so that every
 * consumer (LoRA init of layer l target j, dropout of step s layer l target j, ...)
 * draws from its own stream. */
uint64_t rng_stream_id(uint32_t tag, uint32_t a, uint32_t b, uint32_t c);

/* Combines a stream id with a 64-bit value (e.g. a pass seed) into a new stream id. */
uint64_t rng_mix(uint64_t stream, uint64_t value);

enum {
  RNG_TAG_LORA_INIT = 1,
  RNG_TAG_DROPOUT = 2,
  RNG_TAG_SAMPLING = 3,
  RNG_TAG_DATA = 4,
  RNG_TAG_WEIGHTS = 5,
};

#endif
