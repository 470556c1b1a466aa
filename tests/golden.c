/* Reader of golden files (.tvg), see golden.h for the format. The whole file is read into
 * memory and parsed with a bounds check before every field, so a bad file is one clear line. */
#include "golden.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static const char kMagic[8] = {'T', 'V', 'G', 'O', 'L', 'D', '1', '\n'};
#define GOLDEN_MAX_NAME 4096

typedef struct {
  const char *path;
  const unsigned char *buf;
  size_t size, pos;
} Reader;

/* Makes sure n more bytes are there; `what` names the field for the error. */
static void need(const Reader *r, size_t n, const char *what) {
  if (n > r->size - r->pos)
    tv_die("golden file %s: truncated at byte offset %zu: %s needs %zu bytes, %zu left",
           r->path, r->pos, what, n, r->size - r->pos);
}

static uint32_t read_u32(Reader *r, const char *what) {
  need(r, 4, what);
  const unsigned char *p = r->buf + r->pos;
  r->pos += 4;
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int64_t read_i64(Reader *r, const char *what) {
  need(r, 8, what);
  const unsigned char *p = r->buf + r->pos;
  r->pos += 8;
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return (int64_t)v;
}

static unsigned char *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) tv_die("golden file %s: cannot open: %s", path, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  unsigned char *buf = tv_malloc(cap);
  for (;;) {
    if (n == cap) {
      cap *= 2;
      unsigned char *nb = realloc(buf, cap);
      if (!nb) tv_die("golden file %s: out of memory reading %zu bytes", path, cap);
      buf = nb;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  if (ferror(f)) tv_die("golden file %s: read error after %zu bytes", path, n);
  fclose(f);
  *size = n;
  return buf;
}

Golden *golden_load(const char *path) {
  Reader r = {.path = path, .buf = NULL, .size = 0, .pos = 0};
  unsigned char *buf = read_file(path, &r.size);
  r.buf = buf;

  need(&r, sizeof kMagic, "magic \"TVGOLD1\\n\"");
  if (memcmp(buf, kMagic, sizeof kMagic) != 0)
    tv_die("golden file %s: bad magic at byte offset 0 (expected \"TVGOLD1\\n\")", path);
  r.pos = sizeof kMagic;

  size_t count_at = r.pos;
  uint32_t count = read_u32(&r, "record count");
  /* Every record takes at least 12 bytes (name_len, dtype, ndim) plus one element. */
  if (count > (r.size - r.pos) / 12)
    tv_die("golden file %s: record count %u at byte offset %zu is impossible for a file of "
           "%zu bytes",
           path, count, count_at, r.size);

  Golden *g = tv_calloc(1, sizeof *g);
  g->path = tv_malloc(strlen(path) + 1);
  strcpy(g->path, path);
  g->count = (int)count;
  g->tensors = tv_calloc(count ? count : 1, sizeof *g->tensors);

  for (uint32_t i = 0; i < count; i++) {
    GoldenTensor *t = &g->tensors[i];
    size_t at = r.pos;
    uint32_t name_len = read_u32(&r, "name length");
    if (name_len == 0 || name_len > GOLDEN_MAX_NAME)
      tv_die("golden file %s: record %u at byte offset %zu: name length %u not in [1, %d]",
             path, i, at, name_len, GOLDEN_MAX_NAME);
    need(&r, name_len, "tensor name");
    t->name = tv_malloc(name_len + 1);
    memcpy(t->name, buf + r.pos, name_len);
    t->name[name_len] = '\0';
    if (strlen(t->name) != name_len)
      tv_die("golden file %s: record %u at byte offset %zu: name contains a NUL byte", path,
             i, r.pos);
    r.pos += name_len;
    for (uint32_t j = 0; j < i; j++)
      if (strcmp(g->tensors[j].name, t->name) == 0)
        tv_die("golden file %s: record %u at byte offset %zu: duplicate name '%s'", path, i,
               at, t->name);

    at = r.pos;
    uint32_t dtype = read_u32(&r, "dtype");
    if (dtype != GOLDEN_F32 && dtype != GOLDEN_I32)
      tv_die("golden file %s: tensor '%s': dtype %u at byte offset %zu (expected 0 = float32 "
             "or 1 = int32)",
             path, t->name, dtype, at);
    t->dtype = (int)dtype;
    at = r.pos;
    uint32_t ndim = read_u32(&r, "ndim");
    if (ndim > GOLDEN_MAX_DIMS)
      tv_die("golden file %s: tensor '%s': ndim %u at byte offset %zu exceeds %d", path,
             t->name, ndim, at, GOLDEN_MAX_DIMS);
    t->ndim = (int)ndim;
    size_t numel = 1;
    for (uint32_t d = 0; d < ndim; d++) {
      at = r.pos;
      int64_t dim = read_i64(&r, "dimension");
      /* Elements are 4 bytes: a dimension beyond the file size is corrupt. */
      if (dim < 0 || (uint64_t)dim > r.size / 4)
        tv_die("golden file %s: tensor '%s': dimension %u = %lld at byte offset %zu is "
               "negative or larger than the file",
               path, t->name, d, (long long)dim, at);
      if (dim != 0 && numel > (SIZE_MAX / 4) / (size_t)dim)
        tv_die("golden file %s: tensor '%s': element count overflows at dimension %u "
               "(byte offset %zu)",
               path, t->name, d, at);
      numel *= (size_t)dim;
      t->dims[d] = dim;
    }
    t->numel = numel;
    char what[GOLDEN_MAX_NAME + 32];
    snprintf(what, sizeof what, "data of tensor '%s'", t->name);
    need(&r, numel * 4, what);
    const unsigned char *p = buf + r.pos;
    /* Elements are decoded as little-endian u32, then reinterpreted with memcpy. */
    if (t->dtype == GOLDEN_F32)
      t->f32 = tv_malloc(numel ? numel * sizeof(float) : sizeof(float));
    else
      t->i32 = tv_malloc(numel ? numel * sizeof(int32_t) : sizeof(int32_t));
    for (size_t k = 0; k < numel; k++, p += 4) {
      uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                   (uint32_t)p[3] << 24;
      if (t->f32)
        memcpy(&t->f32[k], &u, 4);
      else
        memcpy(&t->i32[k], &u, 4);
    }
    r.pos += numel * 4;
  }
  if (r.pos != r.size)
    tv_die("golden file %s: %zu unexpected trailing bytes at byte offset %zu", path,
           r.size - r.pos, r.pos);
  free(buf);
  return g;
}

void golden_free(Golden *g) {
  if (!g) return;
  for (int i = 0; i < g->count; i++) {
    free(g->tensors[i].name);
    free(g->tensors[i].f32 ? (void *)g->tensors[i].f32 : (void *)g->tensors[i].i32);
  }
  free(g->tensors);
  free(g->path);
  free(g);
}

const GoldenTensor *golden_find(const Golden *g, const char *name) {
  for (int i = 0; i < g->count; i++)
    if (strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
  return NULL;
}

const GoldenTensor *golden_get(const Golden *g, const char *name) {
  const GoldenTensor *t = golden_find(g, name);
  if (!t) tv_die("golden file %s: no tensor named '%s'", g->path, name);
  return t;
}

static void format_shape(char *buf, size_t len, int ndim, const int64_t *dims) {
  size_t n = (size_t)snprintf(buf, len, "[");
  for (int d = 0; d < ndim && n < len; d++)
    n += (size_t)snprintf(buf + n, len - n, d ? ", %lld" : "%lld", (long long)dims[d]);
  if (n < len) snprintf(buf + n, len - n, "]");
}

const GoldenTensor *golden_get_shaped(const Golden *g, const char *name, int dtype, int ndim,
                                      const int64_t *dims) {
  const GoldenTensor *t = golden_get(g, name);
  int ok = t->dtype == dtype && t->ndim == ndim;
  for (int d = 0; ok && d < ndim; d++) ok = t->dims[d] == dims[d];
  if (!ok) {
    char want[160], got[160];
    format_shape(want, sizeof want, ndim, dims);
    format_shape(got, sizeof got, t->ndim, t->dims);
    tv_die("golden file %s: tensor '%s' is %s %s, expected %s %s", g->path, name,
           t->dtype == GOLDEN_F32 ? "float32" : "int32", got,
           dtype == GOLDEN_F32 ? "float32" : "int32", want);
  }
  return t;
}

int32_t golden_i32(const Golden *g, const char *name) {
  return golden_get_shaped(g, name, GOLDEN_I32, 0, NULL)->i32[0];
}

float golden_f32(const Golden *g, const char *name) {
  return golden_get_shaped(g, name, GOLDEN_F32, 0, NULL)->f32[0];
}
