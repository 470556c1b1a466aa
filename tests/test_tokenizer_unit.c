/* Unit tests of io/tokenizer: every reject path ends in one message naming the field; merge
 * order, unk / byte fallback, invalid UTF-8, added-token ids, BOS/EOS rules, loading. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"
#include "tokenizer.h"

/* A model object with vocab a b c ab bc abc aa <unk> and the bytes 0xC3 0xA9 0xFF. */
#define VOCAB                                                                              \
  "\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"ab\":3,\"bc\":4,\"abc\":5,\"aa\":6,\"<unk>\":7,"   \
  "\"<0xC3>\":8,\"<0xA9>\":9,\"<0xFF>\":10,\"<s>\":11,\"</s>\":12}"

static char *fmt(const char *f, const char *a) {
  size_t n = strlen(f) + strlen(a) + 1;
  char *p = malloc(n);
  snprintf(p, n, f, a);
  return p;
}

/* A tokenizer.json with the given model options and extra top-level members. */
static char *json_with(const char *model_extra, const char *top_extra) {
  static char buf[8192];
  snprintf(buf, sizeof buf, "{%s%s\"model\":{\"type\":\"BPE\"," VOCAB ",%s}}", top_extra,
           top_extra[0] ? "," : "", model_extra);
  return buf;
}

static Tokenizer *parse(const char *json, const char *cfg, char *err) {
  return tokenizer_parse(json, strlen(json), cfg, cfg ? strlen(cfg) : 0, err, 300);
}

static void expect_reject(const char *json, const char *cfg, const char *want) {
  char err[300] = "";
  Tokenizer *t = parse(json, cfg, err);
  EXPECT(!t, "accepted, expected an error with \"%s\"", want);
  EXPECT(strstr(err, want) != NULL, "error \"%s\" lacks \"%s\"", err, want);
  EXPECT(!strchr(err, '\n'), "error \"%s\" is not one line", err);
  tokenizer_free(t);
}

static void test_rejects(void) {
  const char *m = "\"merges\":[]";
  expect_reject("{", NULL, "not valid JSON");
  expect_reject("[1, 2]", NULL, "top level is not a JSON object");
  expect_reject("{\"model\": \"\xff\"}", NULL, "not UTF-8");
  expect_reject("{}", NULL, "model: missing");
  expect_reject("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", NULL, "model.type");
  expect_reject("{\"model\":{\"type\":\"BPE\",\"merges\":[]}}", NULL, "model.vocab: missing");
  expect_reject("{\"model\":{\"type\":\"BPE\",\"vocab\":[],\"merges\":[]}}", NULL,
                "model.vocab: expected an object");
  expect_reject("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}", NULL,
                "model.vocab[\"a\"]");
  expect_reject("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0.5},\"merges\":[]}}", NULL,
                "model.vocab[\"a\"]");
  expect_reject(json_with("\"unk_token\":null", ""), NULL, "model.merges: missing");
  expect_reject(json_with("\"merges\":{}", ""), NULL, "model.merges: expected an array");
  expect_reject(json_with("\"merges\":[\"a x\"]", ""), NULL,
                "model.merges[0]: token \"x\" is not in model.vocab");
  expect_reject(json_with("\"merges\":[\"a b\",[\"zz\",\"b\"]]", ""), NULL,
                "model.merges[1]: token \"zz\" is not in model.vocab");
  expect_reject(json_with("\"merges\":[\"a  b\"]", ""), NULL, "model.merges[0]: expected");
  expect_reject(json_with("\"merges\":[\"ab\"]", ""), NULL, "model.merges[0]: expected");
  expect_reject(json_with("\"merges\":[[\"a\"]]", ""), NULL, "model.merges[0]: expected");
  expect_reject(json_with("\"merges\":[[\"a\",\"b\",\"c\"]]", ""), NULL, "model.merges[0]: expected");
  expect_reject(json_with("\"merges\":[3]", ""), NULL, "model.merges[0]: expected");
  expect_reject(json_with("\"merges\":[\"c a\"]", ""), NULL,
                "model.merges[0]: the merged token \"ca\" is not in model.vocab");
  expect_reject(json_with("\"merges\":[],\"fuse_unk\":1", ""), NULL, "model.fuse_unk");
  expect_reject(json_with("\"merges\":[],\"dropout\":2", ""), NULL, "model.dropout");
  expect_reject(json_with(m, "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(a\"},"
                             "\"behavior\":\"Isolated\"}"),
                NULL, "pre_tokenizer.pattern.Regex: bad pattern");
  expect_reject(json_with(m, "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
                             "{\"type\":\"ByteLevel\"},{\"type\":\"Split\",\"pattern\":{\"Regex\":"
                             "\"[z-a]\"},\"behavior\":\"Isolated\"}]}"),
                NULL, "pre_tokenizer.pretokenizers[1].pattern.Regex: bad pattern");
  expect_reject(json_with(m, "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},"
                             "\"behavior\":\"Sideways\"}"),
                NULL, "pre_tokenizer.behavior: unknown split behavior");
  expect_reject(json_with(m, "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":\"a\","
                             "\"behavior\":\"Isolated\"}"),
                NULL, "pre_tokenizer.pattern");
  expect_reject(json_with(m, "\"pre_tokenizer\":{\"type\":\"Whitespace\"}"), NULL,
                "pre_tokenizer.type: pre-tokenizer \"Whitespace\" is not supported");
  expect_reject(json_with(m, "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"prepend_scheme\":\"x\"}"),
                NULL, "pre_tokenizer.prepend_scheme");
  expect_reject(json_with(m, "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"ab\"}"),
                NULL, "pre_tokenizer.replacement: expected exactly one character");
  expect_reject(json_with(m, "\"pre_tokenizer\":[]"), NULL, "pre_tokenizer: expected an object");
  expect_reject(json_with(m, "\"normalizer\":{\"type\":\"NFKC\"}"), NULL,
                "normalizer.type: normalizer \"NFKC\" is not supported");
  expect_reject(json_with(m, "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":"
                             "\"Replace\",\"pattern\":{\"Regex\":\"(\"},\"content\":\"x\"}]}"),
                NULL, "normalizer.normalizers[0].pattern.Regex: bad pattern");
  expect_reject(json_with(m, "\"normalizer\":{\"type\":\"Prepend\"}"), NULL,
                "normalizer.prepend: missing");
  expect_reject(json_with(m, "\"decoder\":{\"type\":\"WordPiece\"}"), NULL,
                "decoder.type: decoder \"WordPiece\" is not supported");
  expect_reject(json_with(m, "\"decoder\":{\"type\":\"Strip\",\"start\":-1}"), NULL,
                "decoder.start: expected a count");
  expect_reject(json_with(m, "\"decoder\":{}"), NULL, "decoder.type: missing");
  expect_reject(json_with(m, "\"post_processor\":{\"type\":\"Frobnicate\"}"), NULL,
                "post_processor.type: post-processor \"Frobnicate\" is not supported");
  expect_reject(json_with(m, "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":["
                             "{\"Sequence\":{\"id\":\"A\"}},{\"Sequence\":{\"id\":\"A\"}}]}"),
                NULL, "post_processor.single[1]: a single-sequence template takes $A exactly once");
  expect_reject(json_with(m, "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":["
                             "{\"SpecialToken\":{\"id\":\"<s>\"}},{\"Sequence\":{\"id\":\"A\"}}],"
                             "\"special_tokens\":{}}"),
                NULL, "post_processor.special_tokens: \"<s>\" is missing");
  expect_reject(json_with(m, "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":["
                             "{\"SpecialToken\":{\"id\":\"<s>\"}},{\"Sequence\":{\"id\":\"A\"}}],"
                             "\"special_tokens\":{\"<s>\":{\"ids\":[99999]}}}"),
                NULL, "post_processor.special_tokens.<s>.ids");
  expect_reject(json_with(m, "\"added_tokens\":{}"), NULL, "added_tokens: expected an array");
  expect_reject(json_with(m, "\"added_tokens\":[{\"id\":1}]"), NULL, "added_tokens[0].content: missing");
  expect_reject(json_with(m, "\"added_tokens\":[{\"id\":\"1\",\"content\":\"x\"}]"), NULL,
                "added_tokens[0].id");
  expect_reject(json_with(m, "\"added_tokens\":[{\"id\":13,\"content\":\"x\"},{\"id\":14,"
                             "\"content\":\"y\",\"lstrip\":\"yes\"}]"),
                NULL, "added_tokens[1].lstrip: expected true or false");
  /* tokenizer_config.json */
  const char *ok = json_with(m, "");
  expect_reject(ok, "{\"bos_token\":", "tokenizer_config.json: not a JSON object");
  expect_reject(ok, "{\"bos_token\":\"<bos>\"}",
                "tokenizer_config.json: bos_token: \"<bos>\" is not a token of tokenizer.json");
  expect_reject(ok, "{\"eos_token\":{\"content\":7}}", "tokenizer_config.json: eos_token: expected");
  expect_reject(ok, "{\"add_bos_token\":\"yes\"}", "tokenizer_config.json.add_bos_token");
  expect_reject(ok, "{\"add_eos_token\":true,\"eos_token\":null}",
                "add_eos_token is true but eos_token is not set");
  expect_reject(ok, "{\"eos_token\":\"\xc3\"}", "tokenizer_config.json is not UTF-8");
}

/* Ids of text, as a static string "3 4 5" for easy comparison. */
static const char *ids_of(const Tokenizer *t, const char *text, size_t n, int special) {
  static char out[4096];
  int32_t *ids;
  int k = tokenizer_encode(t, text, n, special, &ids);
  size_t o = 0;
  out[0] = 0;
  for (int i = 0; i < k && o < sizeof out - 16; i++)
    o += (size_t)snprintf(out + o, sizeof out - o, "%s%d", i ? " " : "", ids[i]);
  free(ids);
  return out;
}

static void expect_ids(const Tokenizer *t, const char *text, int special, const char *want) {
  const char *got = ids_of(t, text, strlen(text), special);
  EXPECT(!strcmp(got, want), "encode(\"%s\"): got [%s], want [%s]", text, got, want);
}

static Tokenizer *must_parse(const char *json, const char *cfg) {
  char err[300];
  Tokenizer *t = parse(json, cfg, err);
  EXPECT(t != NULL, "parse failed: %s", err);
  if (!t) exit(tv_test_report("tokenizer_unit"));
  return t;
}

static void test_merge_order(void) {
  /* b c has the better rank, so a b c -> a bc, and a bc is no merge */
  Tokenizer *t = must_parse(json_with("\"merges\":[\"b c\",\"a b\"]", ""), NULL);
  expect_ids(t, "abc", 0, "0 4");
  tokenizer_free(t);
  /* a b first: ab c, then "ab c" makes abc */
  t = must_parse(json_with("\"merges\":[\"a b\",\"b c\",\"ab c\"]", ""), NULL);
  expect_ids(t, "abc", 0, "5");
  tokenizer_free(t);
  /* equal ranks: the leftmost pair merges first */
  t = must_parse(json_with("\"merges\":[[\"a\",\"a\"]]", ""), NULL);
  expect_ids(t, "aaa", 0, "6 0");
  expect_ids(t, "aaaa", 0, "6 6");
  tokenizer_free(t);
  /* the two spellings of merges give the same tokenizer */
  Tokenizer *s = must_parse(json_with("\"merges\":[\"a b\",\"b c\",\"ab c\",\"a a\"]", ""), NULL);
  Tokenizer *p = must_parse(
      json_with("\"merges\":[[\"a\",\"b\"],[\"b\",\"c\"],[\"ab\",\"c\"],[\"a\",\"a\"]]", ""), NULL);
  const char *texts[] = {"abcabc", "aabbcc", "cba", "aaabca", "bcab"};
  for (int i = 0; i < 5; i++) {
    char a[256];
    snprintf(a, sizeof a, "%s", ids_of(s, texts[i], strlen(texts[i]), 0));
    const char *b = ids_of(p, texts[i], strlen(texts[i]), 0);
    EXPECT(!strcmp(a, b), "\"%s\": string merges [%s], pair merges [%s]", texts[i], a, b);
  }
  tokenizer_free(s);
  tokenizer_free(p);
}

static void test_unknown_characters(void) {
  /* byte fallback: é is <0xC3> <0xA9>; ß has no byte tokens, so it is <unk> */
  Tokenizer *t = must_parse(json_with("\"merges\":[],\"byte_fallback\":true,\"unk_token\":\"<unk>\"", ""), NULL);
  expect_ids(t, "a\xc3\xa9", 0, "0 8 9");
  expect_ids(t, "\xc3\x9f", 0, "7");
  expect_ids(t, "\xff", 0, "10");       /* a lone invalid byte: its byte token */
  expect_ids(t, "\xc3", 0, "8");        /* a truncated sequence: byte by byte */
  expect_ids(t, "\xe2\x96", 0, "7 7"); /* two invalid bytes, no byte tokens, unk not fused */
  tokenizer_free(t);
  /* no byte fallback: unknown characters go to <unk>, fused when fuse_unk */
  t = must_parse(json_with("\"merges\":[],\"unk_token\":\"<unk>\",\"fuse_unk\":true", ""), NULL);
  expect_ids(t, "a\xc3\xa9\xc3\x9f" "b", 0, "0 7 1");
  tokenizer_free(t);
  t = must_parse(json_with("\"merges\":[],\"unk_token\":\"<unk>\"", ""), NULL);
  expect_ids(t, "a\xc3\xa9\xc3\x9f" "b", 0, "0 7 7 1");
  tokenizer_free(t);
  /* neither: they are dropped */
  t = must_parse(json_with("\"merges\":[]", ""), NULL);
  expect_ids(t, "a\xc3\xa9\xc3\x9f" "b\xff", 0, "0 1");
  tokenizer_free(t);
}

/* Byte-level: every byte is a character of the vocab, so nothing is ever unknown. */
static char *bytelevel_json(void) {
  static char buf[16384];
  size_t n = 0;
  n += (size_t)snprintf(buf + n, sizeof buf - n, "{\"model\":{\"type\":\"BPE\",\"merges\":[],\"vocab\":{");
  for (int b = 0; b < 256; b++) {
    unsigned cp = ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) ? (unsigned)b : 0;
    if (!cp) cp = b <= 0x20 ? 256u + (unsigned)b : b <= 0xA0 ? 256u + 33u + (unsigned)(b - 0x7F) : 323u;
    n += (size_t)snprintf(buf + n, sizeof buf - n, "%s\"\\u%04x\":%d", b ? "," : "", cp, b);
  }
  snprintf(buf + n, sizeof buf - n,
           "}},\"added_tokens\":[{\"id\":256,\"content\":\"<|bos|>\",\"special\":true,"
           "\"normalized\":false}],\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":"
           "false,\"use_regex\":true},\"decoder\":{\"type\":\"ByteLevel\"},\"post_processor\":{"
           "\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<|bos|>\"}},"
           "{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{\"<|bos|>\":{\"ids\":[256]}}}}");
  return buf;
}

static void expect_decode(const Tokenizer *t, const char *text, size_t n, int special, int skip,
                          const char *want, size_t want_len) {
  int32_t *ids;
  int k = tokenizer_encode(t, text, n, special, &ids);
  size_t len;
  char *d = tokenizer_decode_len(t, ids, k, skip, &len);
  EXPECT(len == want_len && !memcmp(d, want, want_len), "decode(encode(\"%s\")) = \"%s\"", text, d);
  EXPECT(d[len] == 0, "decoded text is not NUL-terminated");
  free(d);
  free(ids);
}

static void test_bytelevel_invalid_utf8(void) {
  Tokenizer *t = must_parse(bytelevel_json(), NULL);
  EXPECT(tokenizer_vocab_size(t) == 257, "vocab size %d", tokenizer_vocab_size(t));
  expect_ids(t, "\xff", 0, "255");
  expect_ids(t, "a\x00" "b", 0, "97");      /* strlen stops at the NUL; see the next line */
  const char nul[] = "a\0b";
  const char *got = ids_of(t, nul, 3, 0);
  EXPECT(!strcmp(got, "97 0 98"), "a NUL byte is a byte like any other: [%s]", got);
  /* decoding goes through from_utf8_lossy: one U+FFFD per maximal invalid subpart */
  expect_decode(t, "x\xff", 2, 0, 0, "x\xef\xbf\xbd", 4);
  expect_decode(t, "\xe2\x96y", 3, 0, 0, "\xef\xbf\xbdy", 4);
  expect_decode(t, "\xf0\x80", 2, 0, 0, "\xef\xbf\xbd\xef\xbf\xbd", 6);
  expect_decode(t, "h\xc3\xa9 <|bos|>", 11, 0, 0, "h\xc3\xa9 <|bos|>", 11);
  expect_decode(t, "h\xc3\xa9 <|bos|>", 11, 1, 1, "h\xc3\xa9 ", 4);
  expect_decode(t, "h\xc3\xa9 <|bos|>", 11, 1, 0, "<|bos|>h\xc3\xa9 <|bos|>", 18);
  /* the template and the BOS rule */
  expect_ids(t, "", 0, "");
  expect_ids(t, "", 1, "256");
  expect_ids(t, "<|bos|>", 0, "256");
  EXPECT(tokenizer_bos_id(t) == 256 && tokenizer_adds_bos(t), "bos %d", tokenizer_bos_id(t));
  EXPECT(tokenizer_eos_id(t) == -1 && tokenizer_pad_id(t) == -1, "eos %d pad %d",
         tokenizer_eos_id(t), tokenizer_pad_id(t));
  EXPECT(tokenizer_token_id(t, "<|bos|>") == 256 && tokenizer_token_id(t, "!") == 33 &&
             tokenizer_token_id(t, "nope") == -1,
         "token_id");
  /* ids outside the vocab are dropped by decode, as tokenizers does */
  int32_t odd[3] = {-5, 33, 100000};
  char *d = tokenizer_decode(t, odd, 3, 0);
  EXPECT(!strcmp(d, "!"), "decode of unknown ids: \"%s\"", d);
  free(d);
  tokenizer_free(t);
}

static void test_added_token_ids_and_config(void) {
  /* tokenizers gives a new added token the next id after the model vocab (13 entries here),
   * whatever the file says, and keeps the vocab id of a token it already has */
  const char *top = "\"added_tokens\":[{\"id\":0,\"content\":\"<s>\",\"special\":true,"
                    "\"normalized\":false},{\"id\":500,\"content\":\"<pad>\",\"special\":true,"
                    "\"normalized\":false},{\"id\":501,\"content\":\"<eot>\",\"special\":true,"
                    "\"normalized\":false}],"
                    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
                    "{\"id\":\"<s>\"}},{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{\"<s>\":"
                    "{\"ids\":[11]}}}";
  char *json = fmt("%s", json_with("\"merges\":[\"a b\"]", top));
  Tokenizer *t = must_parse(json, NULL);
  EXPECT(tokenizer_token_id(t, "<s>") == 11, "<s> = %d", tokenizer_token_id(t, "<s>"));
  EXPECT(tokenizer_token_id(t, "<pad>") == 13, "<pad> = %d", tokenizer_token_id(t, "<pad>"));
  EXPECT(tokenizer_token_id(t, "<eot>") == 14, "<eot> = %d", tokenizer_token_id(t, "<eot>"));
  EXPECT(tokenizer_vocab_size(t) == 15, "vocab size %d", tokenizer_vocab_size(t));
  /* without a config: BOS from the template, EOS from the well-known names */
  EXPECT(tokenizer_bos_id(t) == 11 && tokenizer_eos_id(t) == 12, "bos %d eos %d",
         tokenizer_bos_id(t), tokenizer_eos_id(t));
  expect_ids(t, "ab<eot>c", 1, "11 3 14 2");
  tokenizer_free(t);
  /* the config names them, and its add_*_token flags replace the template's rule */
  t = must_parse(json, "{\"bos_token\":{\"__type\":\"AddedToken\",\"content\":\"<s>\"},"
                       "\"eos_token\":\"<eot>\",\"pad_token\":\"<pad>\",\"add_bos_token\":false,"
                       "\"add_eos_token\":true}");
  EXPECT(tokenizer_bos_id(t) == 11 && tokenizer_eos_id(t) == 14 && tokenizer_pad_id(t) == 13,
         "bos %d eos %d pad %d", tokenizer_bos_id(t), tokenizer_eos_id(t), tokenizer_pad_id(t));
  EXPECT(!tokenizer_adds_bos(t), "adds_bos with add_bos_token false");
  expect_ids(t, "ab", 1, "3 14");
  expect_ids(t, "ab", 0, "3");
  tokenizer_free(t);
  /* a config that only names tokens leaves the template's rule alone */
  t = must_parse(json, "{\"eos_token\":\"</s>\",\"unk_token\":null}");
  expect_ids(t, "ab", 1, "11 3");
  EXPECT(tokenizer_adds_bos(t), "adds_bos from the template");
  tokenizer_free(t);
  free(json);
}

/* Loading from a folder and from a file, and the one-line error of a bad file. */
static void test_load(const char *data_dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s/sp", data_dir);
  Tokenizer *a = tokenizer_load(path);
  snprintf(path, sizeof path, "%s/sp/tokenizer.json", data_dir);
  Tokenizer *b = tokenizer_load(path);
  EXPECT(tokenizer_vocab_size(a) == tokenizer_vocab_size(b) && tokenizer_bos_id(a) == 1 &&
             tokenizer_bos_id(b) == 1 && tokenizer_eos_id(b) == 2 && tokenizer_adds_bos(b),
         "folder and file load differ");
  const char *text = "Hello world, h\xc3\xa9llo!";
  char ia[1024];
  snprintf(ia, sizeof ia, "%s", ids_of(a, text, strlen(text), 1));
  EXPECT(!strcmp(ia, ids_of(b, text, strlen(text), 1)), "same file, different ids");
  EXPECT(!strncmp(ia, "1 ", 2), "the sp tokenizer starts with <s>: [%s]", ia);
  tokenizer_free(a);
  tokenizer_free(b);

  /* errors end the process with one line naming the file and the field */
  char bad[] = "/tmp/tv_tok_bad_XXXXXX";
  int fd = mkstemp(bad);
  const char *content = "{\"model\":{\"type\":\"BPE\",\"merges\":[]}}";
  EXPECT(fd >= 0 && write(fd, content, strlen(content)) == (ssize_t)strlen(content), "temp file");
  close(fd);
  const char *paths[2] = {bad, "/nonexistent/tokenizer"};
  const char *wants[2] = {"model.vocab: missing", "cannot open tokenizer /nonexistent/tokenizer"};
  for (int i = 0; i < 2; i++) {
    int pipefd[2];
    EXPECT(pipe(pipefd) == 0, "pipe");
    pid_t pid = fork();
    if (pid == 0) {
      dup2(pipefd[1], 2);
      tokenizer_load(paths[i]);
      _exit(0);
    }
    close(pipefd[1]);
    char msg[1024] = "";
    ssize_t got = 0, r;
    while ((r = read(pipefd[0], msg + got, sizeof msg - 1 - (size_t)got)) > 0) got += r;
    msg[got > 0 ? got : 0] = 0;
    close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) != 0, "load of %s did not fail", paths[i]);
    EXPECT(strstr(msg, wants[i]) && strstr(msg, paths[i]), "message \"%s\" lacks \"%s\"", msg,
           wants[i]);
    char *nl = strchr(msg, '\n');
    EXPECT(nl && nl[1] == 0, "message \"%s\" is not one line", msg);
  }
  unlink(bad);
}

/* A long word without spaces goes through the merge heap, not a quadratic loop, and long
 * inputs of each kind survive. */
static void test_long_inputs(const char *data_dir) {
  char path[4096];
  size_t n = 200000;
  char *text = malloc(n + 1);
  for (size_t i = 0; i < n; i++) text[i] = "ab c\xc3\xa9\n  x1"[i % 11];
  text[n] = 0;
  const char *names[2] = {"sp", "bytelevel"};
  for (int k = 0; k < 2; k++) {
    snprintf(path, sizeof path, "%s/%s", data_dir, names[k]);
    Tokenizer *t = tokenizer_load(path);
    int32_t *ids;
    int c = tokenizer_encode(t, text, n, 0, &ids);
    EXPECT(c > 1000 && c < (int)n, "%s: %d ids for %zu bytes", names[k], c, n);
    size_t dl;
    char *d = tokenizer_decode_len(t, ids, c, 0, &dl);
    EXPECT(dl == n && !memcmp(d, text, n), "%s: a long text does not round-trip", names[k]);
    free(d);
    free(ids);
    tokenizer_free(t);
  }
  free(text);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s TOKENIZER_DATA_DIR\n", argv[0]);
    return 1;
  }
  test_rejects();
  test_merge_order();
  test_unknown_characters();
  test_bytelevel_invalid_utf8();
  test_added_token_ids_and_config();
  test_load(argv[1]);
  test_long_inputs(argv[1]);
  return tv_test_report("tokenizer_unit");
}
