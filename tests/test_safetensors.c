/* safetensors: float16/bfloat16 conversions checked against the round-to-nearest-even rule
 * (not against the same algorithm), writer -> reader round trips, and every reject rule. */
#include "hf_test_util.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

#include "check.h"
#include "rng.h"
#include "safetensors.h"

static float bits_f(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Value of a half computed from the definition (not by the code under test). */
static double half_value(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
  return s ? -v : v;
}

static double bf16_value(uint16_t h) {
  int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
  double v = e == 0 ? ldexp(m, -133) : e == 255 ? (m ? NAN : INFINITY) : ldexp(128 + m, e - 134);
  return s ? -v : v;
}

/* Checks that code (of the magnitude ladder of a format) is the nearest to x, ties to even.
 * Infinity counts as the next step above the largest finite value (2^16 for half, 2^128 for
 * bfloat16), which is exactly IEEE's overflow rule under round-to-nearest-even. */
static int is_rne(double x, uint16_t code, double (*value)(uint16_t), uint16_t inf_code,
                  double inf_as) {
  uint16_t mag = code & 0x7fff;
  double ax = fabs(x);
  if (!!signbit(x) != ((code >> 15) != 0)) return 0;
  if (mag > inf_code) return 0;
  double v = mag == inf_code ? inf_as : fabs(value(mag));
  double lo = mag > 0 ? fabs(value((uint16_t)(mag - 1))) : -1;
  double hi = mag < inf_code ? (mag + 1 == inf_code ? inf_as : fabs(value((uint16_t)(mag + 1)))) : -1;
  double d = fabs(ax - v);
  if (lo >= 0 && (fabs(ax - lo) < d || (fabs(ax - lo) == d && (mag & 1)))) return 0;
  if (hi >= 0 && (fabs(ax - hi) < d || (fabs(ax - hi) == d && (mag & 1)))) return 0;
  return 1;
}

static void test_conversions(void) {
  /* Every half decodes to its defined value and encodes back to itself. */
  int bad_dec = 0, bad_rt = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = st_f16_to_f32((uint16_t)h);
    double want = half_value((uint16_t)h);
    if (isnan(want) ? !isnan(f) : (double)f != want || !!signbit(f) != !!signbit(want)) bad_dec++;
    if (!isnan(want) && st_f32_to_f16(f) != h) bad_rt++;
    if (isnan(want) && !isnan(st_f16_to_f32(st_f32_to_f16(f)))) bad_rt++;
  }
  EXPECT(bad_dec == 0, "%d halves decode wrongly", bad_dec);
  EXPECT(bad_rt == 0, "%d halves do not survive a round trip", bad_rt);
  bad_dec = bad_rt = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = st_bf16_to_f32((uint16_t)h);
    double want = bf16_value((uint16_t)h);
    if (isnan(want) ? !isnan(f) : (double)f != want) bad_dec++;
    if (!isnan(want) && st_f32_to_bf16(f) != h) bad_rt++;
  }
  EXPECT(bad_dec == 0 && bad_rt == 0, "bfloat16: %d decode, %d round-trip failures", bad_dec, bad_rt);

  /* Random floats over every exponent, plus exact midpoints (the tie cases). */
  Rng r = rng_make(7, 1);
  int bad16 = 0, badbf = 0;
  for (int i = 0; i < 400000; i++) {
    uint32_t u = (uint32_t)rng_next_u64(&r);
    if (i % 4 == 1) u = (u & 0x80000000u) | (0x33000000u + u % (0x47800000u - 0x33000000u));
    if (i % 4 == 2) u &= 0xffffe000u | 0x1000u; /* half-way between two halves (normal range) */
    if (i % 4 == 3) u = (u & 0xffff0000u) | 0x8000u; /* half-way between two bfloat16 */
    float x = bits_f(u);
    if (isnan(x)) continue;
    if (!is_rne(x, st_f32_to_f16(x), half_value, 0x7c00, 65536.0)) bad16++;
    if (!is_rne(x, st_f32_to_bf16(x), bf16_value, 0x7f80, ldexp(1, 128))) badbf++;
  }
  EXPECT(bad16 == 0, "%d floats not rounded to the nearest half (ties to even)", bad16);
  EXPECT(badbf == 0, "%d floats not rounded to the nearest bfloat16 (ties to even)", badbf);

  /* Named cases, so a failure says what broke. */
  EXPECT(st_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3c00, "1 + 2^-11 ties to even 1.0");
  EXPECT(st_f32_to_f16(1.0f + 3 * ldexpf(1, -11)) == 0x3c02, "1 + 3*2^-11 ties up to even");
  EXPECT(st_f32_to_f16(65504.0f) == 0x7bff, "max half");
  EXPECT(st_f32_to_f16(65519.0f) == 0x7bff, "65519 rounds down to 65504");
  EXPECT(st_f32_to_f16(65520.0f) == 0x7c00, "65520 overflows to inf");
  EXPECT(st_f32_to_f16(ldexpf(1, -24)) == 0x0001, "smallest subnormal half");
  EXPECT(st_f32_to_f16(ldexpf(1, -25)) == 0x0000, "2^-25 ties to zero");
  EXPECT(st_f32_to_f16(3 * ldexpf(1, -25)) == 0x0002, "3*2^-25 ties to even 2*2^-24");
  EXPECT(st_f32_to_f16(-0.0f) == 0x8000, "negative zero keeps its sign");
  EXPECT(st_f32_to_f16(INFINITY) == 0x7c00 && st_f32_to_f16(-INFINITY) == 0xfc00, "inf");
  EXPECT(isnan(st_f16_to_f32(st_f32_to_f16(NAN))), "NaN stays NaN in half");
  EXPECT(isnan(st_f16_to_f32(st_f32_to_f16(bits_f(0x7f800001u)))), "low-payload NaN stays NaN");
  EXPECT(st_f32_to_bf16(1.0f + ldexpf(1, -8)) == 0x3f80, "bf16 tie to even down");
  EXPECT(st_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)) == 0x3f82, "bf16 tie to even up");
  EXPECT(st_f32_to_bf16(FLT_MAX) == 0x7f80, "FLT_MAX rounds to bf16 inf");
  EXPECT(st_f32_to_bf16(-INFINITY) == 0xff80, "bf16 -inf");
  EXPECT(isnan(st_bf16_to_f32(st_f32_to_bf16(bits_f(0x7f800001u)))), "bf16 low-payload NaN");
  EXPECT(st_f32_to_bf16(bits_f(0x00000001u)) == 0x0000, "bf16 tiny subnormal to zero");
}

/* ---- round trips ---- */

static void test_round_trip(StDtype dt) {
  char *dir = scratch_dir("st");
  char *path = path_in(dir, "x.safetensors");
  float a[6] = {1.5f, -2.25f, 3.1415927f, 1e-6f, 70000.0f, -0.0f};
  float b[3] = {NAN, INFINITY, -INFINITY};
  float sc[1] = {42.0f};
  int64_t sa[2] = {2, 3}, sb[1] = {3}, sz[2] = {0, 5};
  StWriter *w = st_writer_create(path);
  st_writer_allow_nonfinite(w); /* NaN and inf must survive the format itself */
  st_writer_metadata(w, "format", "pt");
  st_writer_metadata(w, "note", "quote \" and \\ backslash");
  st_writer_add(w, "layer.a", dt, 2, sa, a);
  st_writer_add(w, "b", dt, 1, sb, b);
  st_writer_add(w, "empty", dt, 2, sz, NULL);
  st_writer_add(w, "scalar", dt, 0, NULL, sc);
  st_writer_finish(w);
  char *tmp = path_in(dir, "x.safetensors.tmp");
  EXPECT(!file_exists(tmp), "temporary file left behind");

  size_t len;
  char *raw = read_all(path, &len);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | (uint8_t)raw[i];
  EXPECT(n % 8 == 0, "header length %llu is not a multiple of 8", (unsigned long long)n);
  EXPECT(raw[8 + n - 1] == '}' || raw[8 + n - 1] == ' ', "header padded with spaces");
  free(raw);

  SafeTensors *st = safetensors_open(path);
  EXPECT(safetensors_count(st) == 4, "count %d", safetensors_count(st));
  EXPECT(!strcmp(safetensors_tensor(st, 0)->name, "layer.a"), "file order kept");
  EXPECT(safetensors_metadata(st, "format") && !strcmp(safetensors_metadata(st, "format"), "pt"),
         "metadata format");
  EXPECT(safetensors_metadata(st, "note") &&
             !strcmp(safetensors_metadata(st, "note"), "quote \" and \\ backslash"),
         "metadata escaping");
  EXPECT(safetensors_metadata(st, "nope") == NULL, "absent metadata");
  EXPECT(safetensors_find(st, "nope") == NULL, "absent tensor");
  const StTensor *ta = safetensors_find(st, "layer.a");
  EXPECT(ta && ta->dtype == dt && ta->ndim == 2 && ta->shape[0] == 2 && ta->shape[1] == 3 &&
             ta->numel == 6, "shape of layer.a");
  float got[6];
  safetensors_read_f32(st, ta, got);
  for (int i = 0; i < 6; i++) {
    float want = dt == ST_F32 ? a[i] : dt == ST_F16 ? st_f16_to_f32(st_f32_to_f16(a[i]))
                                                    : st_bf16_to_f32(st_f32_to_bf16(a[i]));
    EXPECT(memcmp(&got[i], &want, 4) == 0, "%s a[%d]: %g vs %g", st_dtype_name(dt), i, got[i], want);
  }
  if (dt == ST_F16) EXPECT(isinf(got[4]), "70000 is inf in half");
  const StTensor *tb = safetensors_find(st, "b");
  safetensors_read_f32(st, tb, got);
  EXPECT(isnan(got[0]) && got[1] == INFINITY && got[2] == -INFINITY, "NaN/inf survive in %s",
         st_dtype_name(dt));
  const StTensor *te = safetensors_find(st, "empty"), *ts = safetensors_find(st, "scalar");
  EXPECT(te && te->numel == 0 && te->begin == te->end, "empty tensor");
  EXPECT(ts && ts->ndim == 0 && ts->numel == 1, "scalar tensor");
  safetensors_read_f32(st, ts, got);
  EXPECT(got[0] == 42.0f, "scalar value");
  safetensors_close(st);
  free(tmp);
  free(path);
  scratch_free(dir);
}

/* ---- rejects: hand-made files ---- */

static uint8_t *make_file(const char *header, size_t data_len, size_t *size) {
  size_t n = strlen(header);
  *size = 8 + n + data_len;
  uint8_t *b = calloc(1, *size + 1);
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)n >> (8 * i));
  memcpy(b + 8, header, n);
  return b;
}

static void expect_reject(const char *header, size_t data_len, const char *need1,
                          const char *need2) {
  size_t size;
  uint8_t *b = make_file(header, data_len, &size);
  char err[512];
  SafeTensors *st = safetensors_parse(b, size, "bad.safetensors", err, sizeof err);
  EXPECT(st == NULL, "accepted: %s", header);
  if (st) safetensors_close(st);
  else {
    EXPECT(strstr(err, "bad.safetensors: ") == err, "message names the file: %s", err);
    EXPECT(strstr(err, need1), "'%s' not in: %s", need1, err);
    if (need2) EXPECT(strstr(err, need2), "'%s' not in: %s", need2, err);
  }
  free(b);
}

static void expect_accept(const char *header, size_t data_len) {
  size_t size;
  uint8_t *b = make_file(header, data_len, &size);
  char err[512];
  SafeTensors *st = safetensors_parse(b, size, "ok.safetensors", err, sizeof err);
  EXPECT(st != NULL, "rejected %s: %s", header, err);
  safetensors_close(st);
  free(b);
}

#define T(name, rest) "\"" name "\":{" rest "}"

static void test_rejects(void) {
  char err[256];
  uint8_t tiny[5] = {0};
  EXPECT(!safetensors_parse(tiny, 5, "t", err, sizeof err) && strstr(err, "too short"), "%s", err);

  /* N larger than the file */
  uint8_t big[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
  EXPECT(!safetensors_parse(big, 16, "t", err, sizeof err) && strstr(err, "header length 65535") &&
             strstr(err, "larger than"), "%s", err);
  uint8_t huge[16] = {0, 0, 0, 0, 0, 0, 0, 0x80};
  EXPECT(!safetensors_parse(huge, 16, "t", err, sizeof err) && strstr(err, "larger than"), "%s", err);

  expect_reject("{\"a\": {", 0, "not valid JSON", "byte offset");
  expect_reject("[1, 2]   ", 0, "not a JSON object", NULL);
  expect_reject("\"str\"", 0, "not a JSON object", NULL);
  expect_reject("{} xyz", 0, "unexpected bytes after the JSON header", "byte offset 11");
  expect_reject("{" T("w", "\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]") "}", 8,
                "tensor 'w' has dtype I64", "F32, F16 and BF16");
  expect_reject("{" T("w", "\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]") "}", 8,
                "dtype F64", NULL);
  expect_reject("{" T("w", "\"shape\":[1],\"data_offsets\":[0,4]") "}", 4, "'w'", "dtype");
  expect_reject("{" T("w", "\"dtype\":\"F32\",\"data_offsets\":[0,4]") "}", 4, "'w'", "shape");
  expect_reject("{" T("w", "\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]") "}", 4,
                "'w'", "shape[0]");
  expect_reject("{" T("w", "\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]") "}", 4,
                "'w'", "shape[0]");
  expect_reject("{" T("w", "\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]") "}",
                4, "'w'", "9 dimensions");
  expect_reject("{" T("w", "\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]") "}",
                4, "'w'", "overflows");
  expect_reject("{" T("w", "\"dtype\":\"F32\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,4]") "}",
                4, "'w'", "overflows");
  expect_reject("{" T("w", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]") "}", 4, "'w'",
                "data_offsets");
  expect_reject("{" T("w", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]") "}", 4, "'w'",
                "end before they begin");
  expect_reject("{" T("w", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]") "}", 4, "'w'",
                "outside the data section");
  expect_reject("{" T("w", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]") "}", 4, "'w'",
                "span 4 bytes");
  expect_reject("{" T("w", "\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,4]") "}", 4, "'w'",
                "need 6");
  expect_reject("{\"w\": 5}", 0, "'w'", "not a JSON object");
  /* overlap, gap, uncovered tail, duplicate */
  expect_reject("{" T("a", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]") ","
                T("b", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]") "}", 12,
                "overlap", "'b'");
  expect_reject("{" T("a", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]") ","
                T("b", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]") "}", 12,
                "not contiguous", "before tensor 'b'");
  expect_reject("{" T("a", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]") "}", 8,
                "not contiguous", "'a'");
  expect_reject("{" T("a", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]") "}", 9,
                "not contiguous", "9 bytes");
  expect_reject("{" T("a", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]") ","
                T("a", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]") "}", 8,
                "duplicate tensor name 'a'", NULL);
  expect_reject("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__", "'k'");
  expect_reject("{\"__metadata__\":[\"k\"]}", 0, "__metadata__", "not a JSON object");
  expect_reject("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate", "__metadata__");

  /* Valid edge cases: empty header, null metadata, unaligned header, out-of-order offsets. */
  expect_accept("{}", 0);
  expect_accept("{\"__metadata__\":null}", 0);
  expect_accept("{" T("b", "\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[4,8]") ","
                T("a", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]") "}  ", 8);
  expect_accept("{" T("z", "\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]") ","
                T("a", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]") "}", 4);

  /* Unaligned data (odd header length) still reads correctly. */
  const char *h = "{" T("a", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]") "}";
  size_t size;
  uint8_t *b = make_file(h, 8, &size);
  EXPECT(strlen(h) % 4 != 0, "test header should misalign the data");
  float v[2] = {1.25f, -3.5f}, got[2] = {0};
  memcpy(b + 8 + strlen(h), v, 8);
  SafeTensors *st = safetensors_parse(b, size, "u", err, sizeof err);
  EXPECT(st != NULL, "unaligned: %s", err);
  if (st) {
    safetensors_read_f32(st, safetensors_find(st, "a"), got);
    EXPECT(got[0] == 1.25f && got[1] == -3.5f, "unaligned values %g %g", got[0], got[1]);
    safetensors_close(st);
  }
  free(b);
}

static const char *open_path;
static void do_open(void *arg) {
  (void)arg;
  safetensors_close(safetensors_open(open_path));
}

static void test_open_errors(void) {
  char *dir = scratch_dir("st");
  char *p = path_in(dir, "missing.safetensors");
  open_path = p;
  EXPECT_DIES(do_open, NULL, "cannot open", "missing.safetensors");
  char *q = path_in(dir, "corrupt.safetensors");
  write_bytes(q, "\x10\0\0\0\0\0\0\0{\"a\":1}", 15);
  open_path = q;
  EXPECT_DIES(do_open, NULL, "corrupt.safetensors", "larger than");
  char *e = path_in(dir, "empty.safetensors");
  write_bytes(e, "", 0);
  open_path = e;
  EXPECT_DIES(do_open, NULL, "empty.safetensors", "too short");
  open_path = dir;
  EXPECT_DIES(do_open, NULL, "not a regular file");
  free(p);
  free(q);
  free(e);
  scratch_free(dir);
}

int main(void) {
  test_conversions();
  test_round_trip(ST_F32);
  test_round_trip(ST_F16);
  test_round_trip(ST_BF16);
  test_rejects();
  test_open_errors();
  return tv_test_report("safetensors");
}
