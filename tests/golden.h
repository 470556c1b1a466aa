/* Reader of golden files (.tvg): named tensors written by an independent reference program
 * (tests/ref/golden_core.py) that the C code must reproduce.
 *
 * Format, all little-endian:
 *   magic    8 bytes "TVGOLD1\n"
 *   u32      record count
 *   records: u32 name_len, name bytes (no NUL), u32 dtype (0 = float32, 1 = int32),
 *            u32 ndim, ndim x i64 dims, then numel elements (numel = product of dims,
 *            1 for ndim 0).
 * Names are unique. A truncated or corrupt file ends in tv_die naming the file and the
 * byte offset of the bad field. */
#ifndef TV_GOLDEN_H
#define TV_GOLDEN_H

#include <stddef.h>
#include <stdint.h>

enum { GOLDEN_F32 = 0, GOLDEN_I32 = 1 };
#define GOLDEN_MAX_DIMS 8

typedef struct {
  char *name;  /* NUL-terminated copy */
  int dtype;   /* GOLDEN_F32 or GOLDEN_I32 */
  int ndim;    /* 0 for a scalar */
  int64_t dims[GOLDEN_MAX_DIMS];
  size_t numel;
  float *f32;   /* [numel] when dtype == GOLDEN_F32, else NULL */
  int32_t *i32; /* [numel] when dtype == GOLDEN_I32, else NULL */
} GoldenTensor;

typedef struct {
  char *path;
  int count;
  GoldenTensor *tensors; /* [count], in file order */
} Golden;

Golden *golden_load(const char *path);
void golden_free(Golden *g);

/* NULL when absent. */
const GoldenTensor *golden_find(const Golden *g, const char *name);
/* Aborts (tv_die) naming the tensor and file when absent. */
const GoldenTensor *golden_get(const Golden *g, const char *name);
/* Like golden_get, and also checks the dtype and the shape dims[0..ndim); aborts with the
 * expected and actual shapes on a mismatch. */
const GoldenTensor *golden_get_shaped(const Golden *g, const char *name, int dtype, int ndim,
                                      const int64_t *dims);

/* 0-d scalars (aborts when the tensor is not a scalar of that dtype). */
int32_t golden_i32(const Golden *g, const char *name);
float golden_f32(const Golden *g, const char *name);

#endif
