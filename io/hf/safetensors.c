/* safetensors files (SPEC section 9): a reader that validates every rule before any byte of
 * data is used (a corrupt or hostile file ends in one message, never a crash), and a writer. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "json_util.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader copies it as host words"
#endif

/* The Rust reference rejects larger headers too; it keeps a hostile length from making
 * cJSON allocate gigabytes. */
#define ST_MAX_HEADER (100u * 1000u * 1000u)
/* Doubles hold integers exactly up to 2^53: larger shape or offset values cannot be trusted
 * after cJSON's conversion, and no real file comes near them. */
#define ST_MAX_INT 9007199254740992.0

struct SafeTensors {
  char *label;
  const uint8_t *data; /* the data section */
  uint64_t data_size;
  StTensor *tensors;   /* file (header) order */
  int count;
  const StTensor **by_name; /* sorted by name, for lookup */
  char **meta_keys, **meta_vals;
  int nmeta;
  void *map;           /* owned mapping when opened from a path */
  size_t map_len;
};

const char *st_dtype_name(StDtype d) {
  switch (d) {
    case ST_F32: return "F32";
    case ST_F16: return "F16";
    default: return "BF16";
  }
}

size_t st_dtype_size(StDtype d) { return d == ST_F32 ? 4 : 2; }

/* ---- float conversions (round to nearest even, NaN and inf kept) ---- */

uint16_t st_f32_to_f16(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) /* NaN: keep the top payload bits and force quiet so it stays NaN */
    return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 (tie above 65504 rounds up) or inf */
  if (a >= 0x38800000u) {                        /* normal half: >= 2^-14 */
    uint32_t h = (((a >> 23) - 112u) << 10) | ((a >> 13) & 0x3ffu), rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* carry may bump the exponent */
    return (uint16_t)(sign | h);
  }
  if (a <= 0x33000000u) return sign; /* <= 2^-25: rounds to zero (2^-25 is a tie to even 0) */
  /* Subnormal half: units of 2^-24. value = mant * 2^(e - 150), so units = mant >> (126 - e). */
  uint32_t e = a >> 23, mant = (a & 0x7fffffu) | 0x800000u, shift = 126u - e;
  uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
  if (rem > halfway || (rem == halfway && (h & 1u))) h++;
  return (uint16_t)(sign | h);
}

float st_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
  if (e == 0x1f) {
    u = sign | 0x7f800000u | (m << 13);
  } else if (e) {
    u = sign | ((e + 112u) << 23) | (m << 13);
  } else if (!m) {
    u = sign;
  } else { /* subnormal: normalise the mantissa */
    int shift = 0;
    while (!(m & 0x400u)) m <<= 1, shift++;
    u = sign | ((uint32_t)(113 - shift) << 23) | ((m & 0x3ffu) << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

uint16_t st_f32_to_bf16(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u); /* ties to even; overflow correctly carries to inf */
  return (uint16_t)(u >> 16);
}

float st_bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* ---- parsing ---- */

/* A non-negative integer that a double represents exactly. */
static int json_uint(const cJSON *j, uint64_t *out) {
  if (!cJSON_IsNumber(j)) return 0;
  double d = j->valuedouble;
  if (!(d >= 0 && d <= ST_MAX_INT) || d != (double)(uint64_t)d) return 0;
  *out = (uint64_t)d;
  return 1;
}

static int parse_dtype(const char *s, StDtype *d) {
  if (!strcmp(s, "F32")) *d = ST_F32;
  else if (!strcmp(s, "F16")) *d = ST_F16;
  else if (!strcmp(s, "BF16")) *d = ST_BF16;
  else return 0;
  return 1;
}

static int parse_tensor(JsonCtx *c, const cJSON *j, StTensor *t, uint64_t data_size) {
  const char *name = t->name;
  if (!cJSON_IsObject(j)) return json_fail(c, "tensor '%s': entry is not a JSON object", name);
  const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
  const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shape");
  const cJSON *off = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
  if (!cJSON_IsString(dt))
    return json_fail(c, "tensor '%s': \"dtype\" is missing or not a string", name);
  if (!parse_dtype(dt->valuestring, &t->dtype))
    return json_fail(c, "tensor '%s' has dtype %.32s; only F32, F16 and BF16 are supported", name,
                     dt->valuestring);
  if (!cJSON_IsArray(sh))
    return json_fail(c, "tensor '%s': \"shape\" is missing or not an array", name);
  int ndim = cJSON_GetArraySize(sh);
  if (ndim > ST_MAX_DIMS)
    return json_fail(c, "tensor '%s' has %d dimensions (at most %d are supported)", name, ndim,
                     ST_MAX_DIMS);
  t->ndim = ndim;
  uint64_t numel = 1;
  int k = 0;
  const cJSON *e;
  cJSON_ArrayForEach(e, sh) {
    uint64_t v;
    if (!json_uint(e, &v))
      return json_fail(c, "tensor '%s': shape[%d] is not a non-negative integer", name, k);
    if (__builtin_mul_overflow(numel, v, &numel))
      return json_fail(c, "tensor '%s': the product of its shape overflows 64 bits", name);
    t->shape[k++] = (int64_t)v;
  }
  t->numel = numel;
  uint64_t bytes;
  if (__builtin_mul_overflow(numel, (uint64_t)st_dtype_size(t->dtype), &bytes))
    return json_fail(c, "tensor '%s': its size in bytes overflows 64 bits", name);
  if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
      !json_uint(cJSON_GetArrayItem(off, 0), &t->begin) ||
      !json_uint(cJSON_GetArrayItem(off, 1), &t->end))
    return json_fail(c, "tensor '%s': \"data_offsets\" must be [begin, end] with non-negative "
                        "integers", name);
  if (t->begin > t->end)
    return json_fail(c, "tensor '%s': data_offsets [%llu, %llu) end before they begin", name,
                     (unsigned long long)t->begin, (unsigned long long)t->end);
  if (t->end > data_size)
    return json_fail(c, "tensor '%s': data_offsets [%llu, %llu) lie outside the data section of "
                        "%llu bytes", name, (unsigned long long)t->begin,
                     (unsigned long long)t->end, (unsigned long long)data_size);
  if (t->end - t->begin != bytes)
    return json_fail(c, "tensor '%s': data_offsets span %llu bytes but %llu elements of %s "
                        "need %llu", name, (unsigned long long)(t->end - t->begin),
                     (unsigned long long)numel, st_dtype_name(t->dtype), (unsigned long long)bytes);
  return 1;
}

static int parse_metadata(JsonCtx *c, const cJSON *j, SafeTensors *st) {
  if (cJSON_IsNull(j)) return 1;
  if (!cJSON_IsObject(j)) return json_fail(c, "__metadata__ is not a JSON object of strings");
  int n = cJSON_GetArraySize(j);
  st->meta_keys = tv_calloc((size_t)n + 1, sizeof(char *));
  st->meta_vals = tv_calloc((size_t)n + 1, sizeof(char *));
  const cJSON *e;
  cJSON_ArrayForEach(e, j) {
    if (!cJSON_IsString(e))
      return json_fail(c, "__metadata__ value of '%s' is not a string", e->string);
    st->meta_keys[st->nmeta] = strdup(e->string);
    st->meta_vals[st->nmeta] = strdup(e->valuestring);
    if (!st->meta_keys[st->nmeta] || !st->meta_vals[st->nmeta]) tv_fatal_at(__FILE__, __LINE__, "out of memory");
    st->nmeta++;
  }
  return 1;
}

static int cmp_name(const void *a, const void *b) {
  return strcmp((*(const StTensor *const *)a)->name, (*(const StTensor *const *)b)->name);
}
static int cmp_offset(const void *a, const void *b) {
  const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

/* Names unique, and the tensors tile [0, data_size) exactly in offset order. */
static int check_layout(JsonCtx *c, SafeTensors *st) {
  size_t n = (size_t)st->count;
  st->by_name = tv_malloc((n + 1) * sizeof(StTensor *));
  for (size_t i = 0; i < n; i++) st->by_name[i] = &st->tensors[i];
  qsort(st->by_name, n, sizeof(StTensor *), cmp_name);
  for (size_t i = 1; i < n; i++)
    if (!strcmp(st->by_name[i]->name, st->by_name[i - 1]->name))
      return json_fail(c, "duplicate tensor name '%s' in the header", st->by_name[i]->name);
  const StTensor **order = tv_malloc((n + 1) * sizeof(StTensor *));
  memcpy(order, st->by_name, n * sizeof(StTensor *));
  qsort(order, n, sizeof(StTensor *), cmp_offset);
  uint64_t expect = 0;
  int ok = 1;
  for (size_t i = 0; i < n && ok; i++) {
    const StTensor *t = order[i];
    if (t->begin < expect) {
      json_error(c, "tensors '%s' and '%s' overlap in the data section (bytes [%llu, %llu) and "
                    "[%llu, %llu))", order[i - 1]->name, t->name,
                 (unsigned long long)order[i - 1]->begin, (unsigned long long)expect,
                 (unsigned long long)t->begin, (unsigned long long)t->end);
      ok = 0;
    } else if (t->begin > expect) {
      json_error(c, "tensors are not contiguous: %llu unused bytes before tensor '%s' at data "
                    "offset %llu", (unsigned long long)(t->begin - expect), t->name,
                 (unsigned long long)t->begin);
      ok = 0;
    }
    expect = t->end;
  }
  free(order);
  if (ok && expect != st->data_size) {
    json_error(c, "tensors are not contiguous: the data section has %llu bytes but the tensors "
                  "cover %llu", (unsigned long long)st->data_size, (unsigned long long)expect);
    ok = 0;
  }
  return ok;
}

static int parse_header(JsonCtx *c, SafeTensors *st, const char *hdr, size_t n) {
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(hdr, n, &end, 0);
  if (!root) {
    size_t at = end && end >= hdr && end <= hdr + n ? (size_t)(end - hdr) : 0;
    return json_fail(c, "the header is not valid JSON (error near byte offset %zu)", 8 + at);
  }
  int ok = 1;
  for (const char *p = end; p < hdr + n && ok; p++)
    if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
      json_error(c, "unexpected bytes after the JSON header at byte offset %zu",
                 8 + (size_t)(p - hdr));
      ok = 0;
    }
  if (ok && !cJSON_IsObject(root)) {
    json_error(c, "the header is not a JSON object");
    ok = 0;
  }
  if (ok) {
    int total = cJSON_GetArraySize(root), seen_meta = 0;
    st->tensors = tv_calloc((size_t)total + 1, sizeof(StTensor));
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
      if (!strcmp(e->string, "__metadata__")) {
        if (seen_meta++) {
          json_error(c, "duplicate tensor name '__metadata__' in the header");
          ok = 0;
        } else {
          ok = parse_metadata(c, e, st);
        }
      } else {
        StTensor *t = &st->tensors[st->count++];
        t->name = strdup(e->string);
        if (!t->name) tv_fatal_at(__FILE__, __LINE__, "out of memory");
        ok = parse_tensor(c, e, t, st->data_size);
      }
      if (!ok) break;
    }
  }
  cJSON_Delete(root);
  return ok && check_layout(c, st);
}

SafeTensors *safetensors_parse(const uint8_t *bytes, size_t size, const char *label, char *err,
                               size_t errlen) {
  JsonCtx c = {.err = err, .errlen = errlen, .label = label ? label : "safetensors"};
  if (errlen) err[0] = 0;
  if (size < 8)
    return json_error(&c, "the file is %zu bytes, too short for the 8-byte header length",
                      size), NULL;
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | bytes[i];
  if (n > (uint64_t)(size - 8))
    return json_error(&c, "header length %llu (bytes 0-7) is larger than the %zu bytes after it",
                      (unsigned long long)n, size - 8), NULL;
  if (n > ST_MAX_HEADER)
    return json_error(&c, "header length %llu (bytes 0-7) exceeds the %u-byte limit",
                      (unsigned long long)n, ST_MAX_HEADER), NULL;
  SafeTensors *st = tv_calloc(1, sizeof(SafeTensors));
  st->label = strdup(c.label);
  if (!st->label) tv_fatal_at(__FILE__, __LINE__, "out of memory");
  st->data = bytes + 8 + n;
  st->data_size = (uint64_t)(size - 8 - n);
  if (!parse_header(&c, st, (const char *)bytes + 8, (size_t)n)) {
    safetensors_close(st);
    return NULL;
  }
  return st;
}

SafeTensors *safetensors_open(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) tv_die("cannot open %s: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0) tv_die("cannot stat %s: %s", path, strerror(errno));
  if (!S_ISREG(sb.st_mode)) tv_die("%s is not a regular file", path);
  size_t size = (size_t)sb.st_size;
  void *map = NULL;
  if (size > 0) {
    map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) tv_die("cannot map %s: %s", path, strerror(errno));
  }
  close(fd);
  char err[512];
  SafeTensors *st = safetensors_parse(map, size, path, err, sizeof err);
  if (!st) {
    if (map) munmap(map, size);
    tv_die("%s", err);
  }
  st->map = map;
  st->map_len = size;
  return st;
}

void safetensors_close(SafeTensors *st) {
  if (!st) return;
  for (int i = 0; i < st->count; i++) free(st->tensors[i].name);
  for (int i = 0; i < st->nmeta; i++) free(st->meta_keys[i]), free(st->meta_vals[i]);
  free(st->tensors);
  free(st->by_name);
  free(st->meta_keys);
  free(st->meta_vals);
  if (st->map) munmap(st->map, st->map_len);
  free(st->label);
  free(st);
}

int safetensors_count(const SafeTensors *st) { return st->count; }

const StTensor *safetensors_tensor(const SafeTensors *st, int i) {
  TV_CHECK(i >= 0 && i < st->count, "tensor index %d outside [0, %d)", i, st->count);
  return &st->tensors[i];
}

const StTensor *safetensors_find(const SafeTensors *st, const char *name) {
  int lo = 0, hi = st->count - 1;
  while (lo <= hi) {
    int mid = lo + (hi - lo) / 2;
    int c = strcmp(name, st->by_name[mid]->name);
    if (!c) return st->by_name[mid];
    if (c < 0) hi = mid - 1;
    else lo = mid + 1;
  }
  return NULL;
}

const char *safetensors_metadata(const SafeTensors *st, const char *key) {
  for (int i = 0; i < st->nmeta; i++)
    if (!strcmp(st->meta_keys[i], key)) return st->meta_vals[i];
  return NULL;
}

const char *safetensors_path(const SafeTensors *st) { return st->label; }

const void *safetensors_data(const SafeTensors *st, const StTensor *t) { return st->data + t->begin; }

/* The data section need not be aligned (header lengths are not always multiples of 8), so
 * every element is copied bytewise rather than read through a typed pointer. */
int64_t st_first_nonfinite(const float *x, size_t n) {
  /* A branch-free scan (the common case is all finite), then the exact position. */
  int any = 0;
  for (size_t i = 0; i < n; i++) any |= !isfinite(x[i]);
  if (!any) return -1;
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return (int64_t)i;
  return -1;
}

void safetensors_read_f32(const SafeTensors *st, const StTensor *t, float *dst) {
  const uint8_t *src = st->data + t->begin;
  size_t n = (size_t)t->numel;
  if (t->dtype == ST_F32) {
    memcpy(dst, src, n * sizeof(float));
    return;
  }
  for (size_t i = 0; i < n; i++) {
    uint16_t h;
    memcpy(&h, src + 2 * i, 2);
    dst[i] = t->dtype == ST_F16 ? st_f16_to_f32(h) : st_bf16_to_f32(h);
  }
}

/* ---- writer ---- */

typedef struct {
  char *name;
  StDtype dtype;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  uint8_t *bytes; /* converted copy, so the caller's buffer may be reused at once */
  size_t nbytes;
} WTensor;

struct StWriter {
  char *path;
  WTensor *t;
  int n, cap;
  char **mkeys, **mvals;
  int nmeta, mcap;
  int allow_nonfinite; /* st_writer_allow_nonfinite: the format tests' NaN/inf round trips */
};

/* A growing text buffer for the header. */
typedef struct {
  char *s;
  size_t len, cap;
} Buf;

static void buf_put(Buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    b->cap = (b->len + n + 1) * 2;
    b->s = realloc(b->s, b->cap);
    if (!b->s) tv_fatal_at(__FILE__, __LINE__, "out of memory (%zu bytes)", b->cap);
  }
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = 0;
}

static void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(Buf *b, const char *fmt, ...) {
  char tmp[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  TV_CHECK(n >= 0 && (size_t)n < sizeof tmp, "header fragment too long");
  buf_put(b, tmp, (size_t)n);
}

/* A JSON string literal; control characters as \u00XX, other bytes passed through. */
static void buf_json_string(Buf *b, const char *s) {
  buf_put(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') {
      char esc[2] = {'\\', (char)*p};
      buf_put(b, esc, 2);
    } else if (*p < 0x20) {
      buf_printf(b, "\\u%04x", *p);
    } else {
      buf_put(b, (const char *)p, 1);
    }
  }
  buf_put(b, "\"", 1);
}

static char *xstrdup(const char *s) {
  char *d = strdup(s);
  if (!d) tv_fatal_at(__FILE__, __LINE__, "out of memory");
  return d;
}

StWriter *st_writer_create(const char *path) {
  StWriter *w = tv_calloc(1, sizeof(StWriter));
  w->path = xstrdup(path);
  return w;
}

void st_writer_metadata(StWriter *w, const char *key, const char *value) {
  for (int i = 0; i < w->nmeta; i++)
    if (!strcmp(w->mkeys[i], key)) {
      free(w->mvals[i]);
      w->mvals[i] = xstrdup(value);
      return;
    }
  if (w->nmeta == w->mcap) {
    w->mcap = w->mcap ? 2 * w->mcap : 4;
    w->mkeys = realloc(w->mkeys, (size_t)w->mcap * sizeof(char *));
    w->mvals = realloc(w->mvals, (size_t)w->mcap * sizeof(char *));
    TV_CHECK(w->mkeys && w->mvals, "out of memory");
  }
  w->mkeys[w->nmeta] = xstrdup(key);
  w->mvals[w->nmeta++] = xstrdup(value);
}

void st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                   const float *data) {
  TV_CHECK(ndim >= 0 && ndim <= ST_MAX_DIMS, "tensor '%s': %d dimensions", name, ndim);
  TV_CHECK(strcmp(name, "__metadata__") != 0, "'__metadata__' is not a tensor name");
  for (int i = 0; i < w->n; i++)
    TV_CHECK(strcmp(w->t[i].name, name) != 0, "tensor '%s' added twice to %s", name, w->path);
  if (w->n == w->cap) {
    w->cap = w->cap ? 2 * w->cap : 16;
    w->t = realloc(w->t, (size_t)w->cap * sizeof(WTensor));
    TV_CHECK(w->t, "out of memory");
  }
  WTensor *t = &w->t[w->n++];
  memset(t, 0, sizeof *t);
  t->name = xstrdup(name);
  t->dtype = dtype;
  t->ndim = ndim;
  size_t numel = 1;
  for (int i = 0; i < ndim; i++) {
    TV_CHECK(shape[i] >= 0, "tensor '%s': negative dimension", name);
    t->shape[i] = shape[i];
    numel *= (size_t)shape[i];
  }
  int64_t bad = numel && !w->allow_nonfinite ? st_first_nonfinite(data, numel) : -1;
  if (bad >= 0)
    tv_die("refusing to write %s: tensor %s holds a non-finite value (%g) at element %lld",
           w->path, name, (double)data[bad], (long long)bad);
  t->nbytes = numel * st_dtype_size(dtype);
  t->bytes = tv_malloc(t->nbytes ? t->nbytes : 1);
  if (numel == 0) {
    /* nothing to copy (data may be NULL) */
  } else if (dtype == ST_F32) {
    memcpy(t->bytes, data, t->nbytes);
  } else {
    for (size_t i = 0; i < numel; i++) {
      uint16_t h = dtype == ST_F16 ? st_f32_to_f16(data[i]) : st_f32_to_bf16(data[i]);
      float back = dtype == ST_F16 ? st_f16_to_f32(h) : st_bf16_to_f32(h);
      if (!isfinite(back) && !w->allow_nonfinite)
        tv_die("refusing to write %s: tensor %s: element %zu = %g does not fit %s", w->path,
               name, i, (double)data[i], st_dtype_name(dtype));
      memcpy(t->bytes + 2 * i, &h, 2);
    }
  }
}

void st_writer_allow_nonfinite(StWriter *w) { w->allow_nonfinite = 1; }

static void writer_free(StWriter *w) {
  for (int i = 0; i < w->n; i++) free(w->t[i].name), free(w->t[i].bytes);
  for (int i = 0; i < w->nmeta; i++) free(w->mkeys[i]), free(w->mvals[i]);
  free(w->t);
  free(w->mkeys);
  free(w->mvals);
  free(w->path);
  free(w);
}

/* Header JSON in add order, offsets consecutive, padded with spaces to a multiple of 8 so
 * the data section starts aligned. */
static void build_header(const StWriter *w, Buf *b) {
  buf_put(b, "{", 1);
  int first = 1;
  if (w->nmeta) {
    buf_put(b, "\"__metadata__\":{", 16);
    for (int i = 0; i < w->nmeta; i++) {
      if (i) buf_put(b, ",", 1);
      buf_json_string(b, w->mkeys[i]);
      buf_put(b, ":", 1);
      buf_json_string(b, w->mvals[i]);
    }
    buf_put(b, "}", 1);
    first = 0;
  }
  uint64_t off = 0;
  for (int i = 0; i < w->n; i++) {
    const WTensor *t = &w->t[i];
    if (!first) buf_put(b, ",", 1);
    first = 0;
    buf_json_string(b, t->name);
    buf_printf(b, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(t->dtype));
    for (int d = 0; d < t->ndim; d++) buf_printf(b, d ? ",%lld" : "%lld", (long long)t->shape[d]);
    buf_printf(b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
               (unsigned long long)(off + t->nbytes));
    off += t->nbytes;
  }
  buf_put(b, "}", 1);
  while (b->len % 8) buf_put(b, " ", 1);
}

void st_writer_finish(StWriter *w) {
  Buf hdr = {0};
  build_header(w, &hdr);
  size_t plen = strlen(w->path);
  char *tmp = tv_malloc(plen + 5);
  memcpy(tmp, w->path, plen);
  memcpy(tmp + plen, ".tmp", 5);
  FILE *f = fopen(tmp, "wb");
  if (!f) tv_die("cannot write %s: %s", tmp, strerror(errno));
  uint8_t len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hdr.len >> (8 * i));
  int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(hdr.s, 1, hdr.len, f) == hdr.len;
  for (int i = 0; ok && i < w->n; i++)
    ok = fwrite(w->t[i].bytes, 1, w->t[i].nbytes, f) == w->t[i].nbytes;
  ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
  int saved = errno;
  if (fclose(f) != 0 && ok) ok = 0, saved = errno;
  if (ok && rename(tmp, w->path) != 0) ok = 0, saved = errno;
  if (!ok) {
    unlink(tmp);
    tv_die("cannot write %s: %s", w->path, strerror(saved));
  }
  free(tmp);
  free(hdr.s);
  writer_free(w);
}
