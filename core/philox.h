/* One Philox4x32-10 block, written once for the host (core/rng.c) and the GPU (core/cuda):
 * dropout masks and random draws are the same bits on every backend.
 * Mapping: key = (seed lo, seed hi); counter = (stream lo, stream hi, index lo, index hi). */
#ifndef TV_PHILOX_H
#define TV_PHILOX_H

#include <stdint.h>

#ifndef TV_HOST_DEVICE
#ifdef __CUDACC__
#define TV_HOST_DEVICE __host__ __device__
#else
#define TV_HOST_DEVICE
#endif
#endif

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

TV_HOST_DEVICE static inline void philox4x32_block(uint64_t seed, uint64_t stream,
                                                   uint64_t index, uint32_t out[4]) {
  uint32_t c0 = (uint32_t)stream, c1 = (uint32_t)(stream >> 32);
  uint32_t c2 = (uint32_t)index, c3 = (uint32_t)(index >> 32);
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int round = 0; round < 10; round++) {
    uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
    uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
    uint32_t n1 = (uint32_t)p1;
    uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    uint32_t n3 = (uint32_t)p0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += PHILOX_W0;
    k1 += PHILOX_W1;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/* The dropout uniform of element e of a mask: word e % 4 of block e / 4, top 24 bits. */
TV_HOST_DEVICE static inline float philox_dropout_uniform(uint32_t word) {
  return (float)(word >> 8) * (1.0f / 16777216.0f);
}

#endif
