/* Element types of backend memory and the typed view of a frozen base weight that the
 * weight GEMM takes: base weights may be bf16, LoRA, gradients and AdamW state stay f32. */
#ifndef TV_TENSOR_H
#define TV_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum { TV_F32 = 0, TV_BF16 = 1 } TvDtype;

static inline size_t tv_dtype_size(TvDtype t) { return t == TV_BF16 ? 2 : 4; }
static inline const char *tv_dtype_name(TvDtype t) { return t == TV_BF16 ? "bf16" : "f32"; }

/* A frozen base weight as a GEMM operand: `data` points at dtype elements in backend memory,
 * laid out as the GEMM's leading dimension says. */
typedef struct {
  TvDtype dtype;
  const void *data;
} WeightRef;

/* Field by field rather than a compound literal: nvcc compiles this header as C++. */
static inline WeightRef weight_f32(const float *w) {
  WeightRef r;
  r.dtype = TV_F32;
  r.data = w;
  return r;
}

/* bf16 is the top half of an IEEE float. Narrowing rounds to nearest, ties to even, as
 * PyTorch's .to(torch.bfloat16) does; NaN stays a (quiet) NaN. */
static inline uint16_t tv_bf16_from_f32(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static inline float tv_f32_from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

#endif
