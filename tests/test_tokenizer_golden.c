/* Golden test of io/tokenizer against Hugging Face's tokenizers (tests/ref/tokenizer_golden.py):
 * every corpus line must encode (with and without specials) and decode exactly as the library did. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_util.h"
#include "tokenizer.h"

typedef struct {
  char *p;
  size_t len;
} Str;

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "cannot open %s\n", path);
    exit(1);
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *p = malloc((size_t)n + 1);
  if (!p || fread(p, 1, (size_t)n, f) != (size_t)n) {
    fprintf(stderr, "cannot read %s\n", path);
    exit(1);
  }
  fclose(f);
  p[n] = 0;
  *len = (size_t)n;
  return p;
}

/* Splits buf in place at '\n' into lines. */
static int split_lines(char *buf, size_t len, char ***out) {
  int n = 0, cap = 1024;
  char **v = malloc((size_t)cap * sizeof(char *));
  size_t start = 0;
  for (size_t i = 0; i < len; i++) {
    if (buf[i] != '\n') continue;
    buf[i] = 0;
    if (n == cap) v = realloc(v, (size_t)(cap *= 2) * sizeof(char *));
    v[n++] = buf + start;
    start = i + 1;
  }
  *out = v;
  return n;
}

/* The escapes of tokenizer_golden.py: \\ \n \r \t \xHH. */
static Str unescape(const char *s, size_t n) {
  Str r = {.p = malloc(n + 1), .len = 0};
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c == '\\' && i + 1 < n) {
      char e = s[++i];
      if (e == 'n') c = '\n';
      else if (e == 'r') c = '\r';
      else if (e == 't') c = '\t';
      else if (e == 'x' && i + 2 < n) {
        char hex[3] = {s[i + 1], s[i + 2], 0};
        c = (char)strtol(hex, NULL, 16);
        i += 2;
      } else c = e;
    }
    r.p[r.len++] = c;
  }
  r.p[r.len] = 0;
  return r;
}

static int b64(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* Ids as pairs of base-64 digits; returns the count, -1 on a malformed field. */
static int parse_ids(const char *s, size_t n, int32_t *out, int cap) {
  if (n % 2) return -1;
  int k = 0;
  for (size_t i = 0; i < n; i += 2) {
    int hi = b64(s[i]), lo = b64(s[i + 1]);
    if (hi < 0 || lo < 0 || k == cap) return -1;
    out[k++] = hi * 64 + lo;
  }
  return k;
}

static int same_ids(const int32_t *a, int na, const int32_t *b, int nb) {
  return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof(int32_t)) == 0);
}

static void print_ids(const char *what, const int32_t *v, int n) {
  fprintf(stderr, "  %s:", what);
  for (int i = 0; i < n; i++) fprintf(stderr, " %d", v[i]);
  fprintf(stderr, "\n");
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s TOKENIZER_DIR CORPUS\n", argv[0]);
    return 1;
  }
  char path[4096];
  size_t clen, elen;
  char *cbuf = slurp(argv[2], &clen);
  snprintf(path, sizeof path, "%s/expected.txt", argv[1]);
  char *ebuf = slurp(path, &elen);
  char **corpus, **exp;
  int ncorpus = split_lines(cbuf, clen, &corpus);
  int nexp = split_lines(ebuf, elen, &exp);
  EXPECT(nexp >= 3 && !strncmp(exp[1], "prefix: ", 8) && !strncmp(exp[2], "suffix: ", 8),
         "%s: bad header", path);
  if (tv_test_failures) return tv_test_report("tokenizer_golden");

  Tokenizer *t = tokenizer_load(argv[1]);
  enum { CAP = 1 << 16 };
  int32_t *want = malloc(CAP * sizeof(int32_t)), *swant = malloc(CAP * sizeof(int32_t));
  int32_t pre[64], suf[64];
  int npre = parse_ids(exp[1] + 8, strlen(exp[1] + 8), pre, 64);
  int nsuf = parse_ids(exp[2] + 8, strlen(exp[2] + 8), suf, 64);
  EXPECT(npre >= 0 && nsuf >= 0, "bad prefix/suffix lines");

  int lines = nexp - 3, matched = 0, shown = 0;
  double enc_seconds = 0;
  size_t tokens = 0;
  EXPECT(lines > 0 && lines <= ncorpus, "%d expected lines for %d corpus lines", lines, ncorpus);
  for (int i = 0; i < lines && i < ncorpus; i++) {
    char *f[5];
    int nf = 0;
    for (char *p = exp[i + 3]; nf < 5;) {
      f[nf++] = p;
      char *tab = strchr(p, '\t');
      if (!tab) break;
      *tab = 0;
      p = tab + 1;
    }
    if (nf != 5) {
      EXPECT(0, "expected.txt line %d: %d fields", i + 4, nf);
      continue;
    }
    Str text = unescape(corpus[i], strlen(corpus[i]));
    int nw = parse_ids(f[0], strlen(f[0]), want, CAP);
    int ns;
    if (!strcmp(f[1], "+")) {
      ns = 0;
      for (int k = 0; k < npre; k++) swant[ns++] = pre[k];
      for (int k = 0; k < nw && ns < CAP; k++) swant[ns++] = want[k];
      for (int k = 0; k < nsuf && ns < CAP; k++) swant[ns++] = suf[k];
    } else {
      ns = parse_ids(f[1], strlen(f[1]), swant, CAP);
    }
    EXPECT(nw >= 0 && ns >= 0, "expected.txt line %d: bad ids", i + 4);

    int32_t *ids = NULL, *sids = NULL;
    clock_t c0 = clock();
    int n = tokenizer_encode(t, text.p, text.len, 0, &ids);
    int sn = tokenizer_encode(t, text.p, text.len, 1, &sids);
    enc_seconds += (double)(clock() - c0) / CLOCKS_PER_SEC;
    tokens += (size_t)n;

    size_t ldec, lspec = 0, lskip;
    char *dec = tokenizer_decode_len(t, ids, n, 0, &ldec);
    Str dwant = strcmp(f[2], "\\s") ? unescape(f[2], strlen(f[2])) : unescape(corpus[i], strlen(corpus[i]));
    int ok_ids = same_ids(ids, n, want, nw);
    int ok_sids = same_ids(sids, sn, swant, ns);
    int ok_dec = ldec == dwant.len && !memcmp(dec, dwant.p, dwant.len);
    int ok_dspec = 1, ok_dskip = 1;
    char *dspec = NULL, *dskip = tokenizer_decode_len(t, sids, sn, 1, &lskip);
    if (strcmp(f[3], "-")) {
      dspec = tokenizer_decode_len(t, sids, sn, 0, &lspec);
      Str w = strcmp(f[3], "\\s") ? unescape(f[3], strlen(f[3])) : dwant;
      ok_dspec = lspec == w.len && !memcmp(dspec, w.p, w.len);
      if (w.p != dwant.p) free(w.p);
    }
    {
      Str w = strcmp(f[4], "\\s") ? unescape(f[4], strlen(f[4])) : dwant;
      ok_dskip = lskip == w.len && !memcmp(dskip, w.p, w.len);
      if (w.p != dwant.p) free(w.p);
    }
    int ok = ok_ids && ok_sids && ok_dec && ok_dspec && ok_dskip;
    matched += ok;
    EXPECT(ok, "corpus line %d (\"%s\"): ids %s, special ids %s, decode %s, special decode %s, "
           "skip decode %s", i + 1, corpus[i], ok_ids ? "ok" : "DIFFER", ok_sids ? "ok" : "DIFFER",
           ok_dec ? "ok" : "DIFFER", ok_dspec ? "ok" : "DIFFER", ok_dskip ? "ok" : "DIFFER");
    if (!ok && shown++ < 5) {
      print_ids("want", want, nw);
      print_ids("got ", ids, n);
      if (!ok_dec) fprintf(stderr, "  decode want \"%s\"\n  decode got  \"%s\"\n", dwant.p, dec);
    }
    free(ids);
    free(sids);
    free(dec);
    free(dspec);
    free(dskip);
    free(dwant.p);
    free(text.p);
  }
  printf("tokenizer_golden %s: %d of %d lines match (%zu tokens, encode %.3f s for all lines "
         "twice)\n", argv[1], matched, lines, tokens, enc_seconds);
  tokenizer_free(t);
  free(want);
  free(swant);
  free(corpus);
  free(exp);
  free(cbuf);
  free(ebuf);
  return tv_test_report("tokenizer_golden");
}
