/* libFuzzer target for io/tokenizer: the first byte picks a mode. Mode 0 parses the rest as a
 * tokenizer.json and, when that succeeds, encodes and decodes a few strings; modes 1-3 encode
 * the rest as text with a fixed small tokenizer and check the round trips that must hold.
 *
 * Not part of the normal build. Build and run (Debian: apt-get install -y clang libclang-rt-14-dev):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_DEFAULT_SOURCE -DPCRE2_CODE_UNIT_WIDTH=8 \
 *     -Iio/tokenizer -Icore tests/fuzz/fuzz_tokenizer.c io/tokenizer/tokenizer_*.c core/check.c \
 *     -lcjson -lpcre2-8 -o /tmp/fuzz_tokenizer
 *   mkdir -p /tmp/fuzz_tok_corpus && /tmp/fuzz_tokenizer -write_seeds=/tmp/fuzz_tok_corpus
 *   /tmp/fuzz_tokenizer /tmp/fuzz_tok_corpus -max_total_time=600 -timeout=10 -max_len=8192
 * (-write_seeds=DIR is this target's own flag: it writes seed inputs into DIR and exits.) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

/* Llama-2 style: Prepend/Replace normaliser, byte fallback, added tokens with every flag. */
static const char sp_json[] =
    "{\"added_tokens\":["
    "{\"id\":0,\"content\":\"<unk>\",\"special\":true,\"normalized\":false},"
    "{\"id\":1,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
    "{\"id\":2,\"content\":\"</s>\",\"special\":true,\"normalized\":false},"
    "{\"id\":272,\"content\":\"<m>\",\"special\":true,\"normalized\":false,\"lstrip\":true,\"rstrip\":true},"
    "{\"id\":273,\"content\":\"abc\",\"single_word\":true,\"normalized\":true},"
    "{\"id\":274,\"content\":\" x\",\"normalized\":false,\"lstrip\":true}],"
    "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]},"
    "\"pre_tokenizer\":null,"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\"}},"
    "{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1]}}},"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":"
    "\"\\u2581\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\","
    "\"content\":\" \",\"start\":1,\"stop\":0}]},"
    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,"
    "\"vocab\":{%s},\"merges\":[%s]}}";

/* Llama-3 style with Qwen2's NFC: split regex, byte-level, specials after the vocab. */
static const char bl_json[] =
    "{\"added_tokens\":[{\"id\":261,\"content\":\"<|bot|>\",\"special\":true,\"normalized\":false},"
    "{\"id\":262,\"content\":\"<|eot|>\",\"special\":true,\"normalized\":false}],"
    "\"normalizer\":{\"type\":\"NFC\"},"
    "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
    "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+"
    "[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false},"
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]},"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<|bot|>\"}},"
    "{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{\"<|bot|>\":{\"id\":\"<|bot|>\",\"ids\":[261]}}},"
    "\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{%s},\"merges\":[%s]}}";

/* Metaspace that splits, GPT-2 ByteLevel after it: odd, but every piece must still work. */
static const char meta_json[] =
    "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true,\"normalized\":false}],"
    "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Metaspace\","
    "\"replacement\":\"\\u2581\",\"prepend_scheme\":\"first\",\"split\":true},"
    "{\"type\":\"Split\",\"pattern\":{\"String\":\"a\"},\"behavior\":\"MergedWithPrevious\",\"invert\":true}]},"
    "\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"first\"},"
    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"vocab\":{%s},\"merges\":[%s]}}";

static char *sprintf_alloc(const char *fmt, const char *a, const char *b) {
  size_t n = strlen(fmt) + strlen(a) + strlen(b) + 1;
  char *p = malloc(n);
  snprintf(p, n, fmt, a, b);
  return p;
}

/* A small vocab: byte tokens or byte-level characters, a few merges of common pairs. */
static char *vocab_sp(void) {
  static char v[16384];
  size_t n = 0;
  n += (size_t)snprintf(v + n, sizeof v - n, "\"<unk>\":0,\"<s>\":1,\"</s>\":2");
  for (int b = 0; b < 256; b++) n += (size_t)snprintf(v + n, sizeof v - n, ",\"<0x%02X>\":%d", b, 3 + b);
  const char *extra[] = {"\\u2581", "a", "b", "e", "t", "h", "\\u2581t", "th", "\\u2581th", "he",
                         "\\u2581the", "ab", "\\u2581a"};
  for (size_t i = 0; i < sizeof extra / sizeof *extra; i++)
    n += (size_t)snprintf(v + n, sizeof v - n, ",\"%s\":%d", extra[i], 259 + (int)i);
  return v;
}

static const char sp_merges[] =
    "\"\\u2581 t\",\"t h\",\"\\u2581 th\",\"h e\",\"\\u2581th e\",\"a b\",[\"\\u2581\",\"a\"]";

static char *vocab_bl(void) {
  static char v[16384];
  size_t n = 0;
  for (int b = 0; b < 256; b++) {
    /* GPT-2's map, written as \\u escapes */
    unsigned cp = ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) ? (unsigned)b : 0;
    if (!cp) cp = b <= 0x20 ? 256u + (unsigned)b : b <= 0xA0 ? 256u + 33u + (unsigned)(b - 0x7F) : 323u;
    n += (size_t)snprintf(v + n, sizeof v - n, "%s\"\\u%04x\":%d", b ? "," : "", cp, b);
  }
  const char *extra[] = {"\\u0120t", "he", "\\u0120the", "in", "er"};
  for (size_t i = 0; i < sizeof extra / sizeof *extra; i++)
    n += (size_t)snprintf(v + n, sizeof v - n, ",\"%s\":%d", extra[i], 256 + (int)i);
  return v;
}

static const char bl_merges[] = "\"\\u0120 t\",\"h e\",\"\\u0120t he\",\"i n\",\"e r\"";

static Tokenizer *fixed[3];

static void init_fixed(void) {
  if (fixed[0]) return;
  char err[256];
  const char *fmts[3] = {sp_json, bl_json, meta_json};
  for (int i = 0; i < 3; i++) {
    char *j = sprintf_alloc(fmts[i], i == 1 ? vocab_bl() : vocab_sp(), i == 1 ? bl_merges : sp_merges);
    fixed[i] = tokenizer_parse(j, strlen(j), NULL, 0, err, sizeof err);
    if (!fixed[i]) {
      fprintf(stderr, "fixed tokenizer %d does not parse: %s\n", i, err);
      abort();
    }
    free(j);
  }
}

static int valid_utf8(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned char c = s[i];
    size_t len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
                 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (!len || i + len > n) return 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
    if (len > 1 && (s[i + 1] < lo || s[i + 1] > hi)) return 0;
    for (size_t k = 2; k < len; k++)
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
    i += len;
  }
  return 1;
}

/* Encodes and decodes text; ids must be in range and decoded text valid UTF-8. Returns the
 * decoded text of the plain encoding (caller frees). */
static char *exercise(const Tokenizer *t, const char *text, size_t n, size_t *dlen) {
  int32_t *ids, *sids;
  int k = tokenizer_encode(t, text, n, 0, &ids);
  int ks = tokenizer_encode(t, text, n, 1, &sids);
  int vs = tokenizer_vocab_size(t);
  if (k < 0 || ks < k) abort();
  for (int i = 0; i < k; i++)
    if (ids[i] < 0 || ids[i] >= vs) abort();
  char *d = tokenizer_decode_len(t, ids, k, 0, dlen);
  size_t l2;
  char *d2 = tokenizer_decode_len(t, sids, ks, 1, &l2);
  if (!valid_utf8((unsigned char *)d2, l2)) abort();
  free(d2);
  free(ids);
  free(sids);
  return d;
}

static int write_seeds(const char *dir) {
  static const char *texts[] = {"hello the world", "  ab ab xab <m>  x </s><s>", "I'm HERE's 123456 \n\n\t ",
                                "e\xcc\x81 caf\xc3\xa9 \xe2\x96\x81", "\xff\xfe bad \xc3", "<|bot|>the<|eot|>"};
  char path[4096];
  int k = 0;
  for (int mode = 1; mode <= 3; mode++)
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
      snprintf(path, sizeof path, "%s/seed_text_%d", dir, k++);
      FILE *f = fopen(path, "wb");
      if (!f) return 1;
      fputc(mode, f);
      fputs(texts[i], f);
      fclose(f);
    }
  const char *fmts[3] = {sp_json, bl_json, meta_json};
  for (int i = 0; i < 3; i++) {
    char *j = sprintf_alloc(fmts[i], i == 1 ? vocab_bl() : vocab_sp(), i == 1 ? bl_merges : sp_merges);
    snprintf(path, sizeof path, "%s/seed_json_%d", dir, i);
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    fputc(0, f);
    fputs(j, f);
    fclose(f);
    free(j);
  }
  return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  for (int i = 1; i < *argc; i++)
    if (!strncmp((*argv)[i], "-write_seeds=", 13)) exit(write_seeds((*argv)[i] + 13));
  init_fixed();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int mode = data[0] % 4;
  const char *rest = (const char *)data + 1;
  size_t n = size - 1;
  if (mode == 0) {
    char err[256];
    Tokenizer *t = tokenizer_parse(rest, n, NULL, 0, err, sizeof err);
    if (!t) {
      if (!memchr(err, 0, sizeof err) || !err[0]) abort(); /* a message, always */
      return 0;
    }
    static const char *probe[] = {"", "a", "hello world", " \t\n", "\xe2\x96\x81x", "\xff\x80",
                                  "<s>x</s>", "I'm 12345 caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof probe / sizeof *probe; i++) {
      size_t dl;
      free(exercise(t, probe[i], strlen(probe[i]), &dl));
    }
    size_t dl;
    free(exercise(t, rest, n > 512 ? 512 : n, &dl));
    tokenizer_free(t);
    return 0;
  }
  const Tokenizer *t = fixed[mode - 1];
  size_t dl;
  char *d = exercise(t, rest, n, &dl);
  if (valid_utf8((const unsigned char *)rest, n)) {
    if (mode == 2) {
      /* byte-level keeps every byte: decode(encode(x)) is NFC(x); for text that NFC leaves
       * alone (ASCII) it is x itself */
      int ascii = 1;
      for (size_t i = 0; i < n; i++) ascii &= (unsigned char)rest[i] < 0x80;
      if (ascii && (dl != n || memcmp(d, rest, n))) abort();
    }
    /* added tokens break the round trip (lstrip/rstrip swallow spaces, and Prepend runs on
     * each piece between them) */
    int plain = !memchr(rest, '<', n);
    for (size_t i = 0; i + 1 < n && plain; i++) plain = !(rest[i] == ' ' && rest[i + 1] == 'x');
    if (mode == 1 && plain) {
      /* byte fallback keeps every character; the decoder turns each U+2581 into a space */
      size_t j = 0, i = 0;
      int same = 1;
      while (i < n && same) {
        if (n - i >= 3 && !memcmp(rest + i, "\xe2\x96\x81", 3)) {
          same = j < dl && d[j] == ' ';
          i += 3;
        } else {
          same = j < dl && d[j] == rest[i];
          i++;
        }
        j++;
      }
      if (!same || j != dl) abort();
    }
  }
  free(d);
  return 0;
}
