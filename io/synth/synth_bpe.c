/* The synthetic world's tokenizer: a SentencePiece-style BPE (Llama-2 layout) learned on the
 * world's own words until each is one token, written as a Hugging Face tokenizer.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cJSON.h"
#include "check.h"
#include "synth_internal.h"

/* "▁" (U+2581), the SentencePiece space. */
#define META "\xE2\x96\x81"
#define META_LEN 3

enum { ID_UNK = 0, ID_BOS = 1, ID_EOS = 2, ID_PAD = 3, ID_BYTE0 = 4, N_FIXED = 4 + 256 };
static const char *const special_tokens[4] = {"<unk>", "<s>", "</s>", "<pad>"};

struct SynthBpe {
  StrMap vocab;         /* token -> id; keys[] in id order */
  StrMap units;         /* word piece ("▁word" or "word") -> index */
  int **sym;            /* [n_units][len] current symbols of each unit */
  int *sym_len;
  int (*merges)[3];     /* [n_merges] left id, right id, result id, in rank order */
  int n_merges, merges_cap;
  unsigned char used[128]; /* ASCII characters seen (the alphabet) */
  int trained;
};

/* Word characters form pieces; everything else printable is a one-character piece. The
 * merges are learned inside pieces only, so no merge can join two pieces: a piece's tokens
 * never start with "▁" after its first, and punctuation never occurs inside one. */
static int word_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' ||
         c == '#' || c == '+' || c == '-' || c == '=';
}

typedef enum { PIECE_WORD, PIECE_CHAR, PIECE_BYTE } PieceKind;
typedef void (*piece_fn)(void *ctx, const char *s, size_t n, PieceKind kind);

/* Splits text the way the tokenizer sees it: "▁" prepended, spaces replaced by "▁". */
static void for_each_piece(const char *text, piece_fn fn, void *ctx) {
  size_t n = strlen(text);
  if (n == 0) return; /* Prepend leaves an empty string empty */
  char *buf = tv_malloc(n + META_LEN + 1);
  int pending = 1; /* a "▁" waits to start the next piece */
  size_t i = 0;
  while (i < n) {
    unsigned char c = (unsigned char)text[i];
    TV_CHECK(c < 128, "synthetic text must be ASCII: byte 0x%02x in \"%s\"", c, text);
    if (c == ' ') {
      if (pending) fn(ctx, META, META_LEN, PIECE_CHAR);
      pending = 1;
      i++;
    } else if (word_char(c)) {
      size_t j = i, len = 0;
      while (j < n && word_char((unsigned char)text[j])) j++;
      if (pending) {
        memcpy(buf, META, META_LEN);
        len = META_LEN;
      }
      memcpy(buf + len, text + i, j - i);
      len += j - i;
      buf[len] = '\0';
      fn(ctx, buf, len, PIECE_WORD);
      pending = 0;
      i = j;
    } else {
      if (pending) fn(ctx, META, META_LEN, PIECE_CHAR);
      pending = 0;
      fn(ctx, text + i, 1, c < 0x20 || c == 0x7f ? PIECE_BYTE : PIECE_CHAR);
      i++;
    }
  }
  if (pending) fn(ctx, META, META_LEN, PIECE_CHAR);
  free(buf);
}

SynthBpe *synth_bpe_new(void) {
  SynthBpe *t = tv_calloc(1, sizeof *t);
  strmap_init(&t->vocab);
  strmap_init(&t->units);
  return t;
}

void synth_bpe_free(SynthBpe *t) {
  if (!t) return;
  for (size_t u = 0; u < t->units.n; u++) free(t->sym ? t->sym[u] : NULL);
  free(t->sym);
  free(t->sym_len);
  free(t->merges);
  strmap_free(&t->vocab);
  strmap_free(&t->units);
  free(t);
}

static void collect(void *ctx, const char *s, size_t n, PieceKind kind) {
  SynthBpe *t = ctx;
  if (kind == PIECE_BYTE) return; /* newlines stay byte-fallback tokens, as in Llama-2 */
  if (kind == PIECE_WORD) strmap_add(&t->units, s, n, (int)t->units.n);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 128) t->used[(unsigned char)s[i]] = 1;
}

void synth_bpe_add_text(SynthBpe *t, const char *text) {
  TV_CHECK(!t->trained, "synth_bpe_add_text after training");
  for_each_piece(text, collect, t);
}

/* ---- Pair counts: open addressing on (left << 32 | right) ------------------------------ */

typedef struct {
  uint64_t *key; /* UINT64_MAX = empty */
  int *val;
  size_t cap;
} PairMap;

static void pairmap_init(PairMap *m, size_t want) {
  m->cap = 64;
  while (m->cap < 2 * want) m->cap *= 2;
  m->key = tv_malloc(m->cap * sizeof(uint64_t));
  m->val = tv_calloc(m->cap, sizeof(int));
  for (size_t i = 0; i < m->cap; i++) m->key[i] = UINT64_MAX;
}

static void pairmap_free(PairMap *m) {
  free(m->key);
  free(m->val);
}

static int *pairmap_slot(PairMap *m, uint64_t k, int create) {
  size_t i = (size_t)((k * 0x9E3779B97F4A7C15ull) >> 20) & (m->cap - 1);
  while (m->key[i] != UINT64_MAX && m->key[i] != k) i = (i + 1) & (m->cap - 1);
  if (m->key[i] == UINT64_MAX) {
    if (!create) return NULL;
    m->key[i] = k;
  }
  return &m->val[i];
}

static uint64_t pair_key(int a, int b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

/* ---- Training --------------------------------------------------------------------------- */

static int add_token(SynthBpe *t, const char *s, size_t n) {
  int id = strmap_get(&t->vocab, s, n);
  if (id >= 0) return id;
  id = (int)t->vocab.n;
  strmap_add(&t->vocab, s, n, id);
  return id;
}

/* Initial symbols of a piece: "▁" and then one symbol per character. */
static int split_chars(SynthBpe *t, const char *s, int *out) {
  int n = 0;
  size_t i = 0, len = strlen(s);
  while (i < len) {
    size_t w = (len - i >= META_LEN && memcmp(s + i, META, META_LEN) == 0) ? META_LEN : 1;
    int id = strmap_get(&t->vocab, s + i, w);
    TV_CHECK(id >= 0, "character of \"%s\" missing from the alphabet", s);
    out[n++] = id;
    i += w;
  }
  return n;
}

static void record_merge(SynthBpe *t, int a, int b, int out) {
  if (t->n_merges == t->merges_cap) {
    t->merges_cap = t->merges_cap ? 2 * t->merges_cap : 512;
    int(*m)[3] = tv_malloc((size_t)t->merges_cap * sizeof *m);
    if (t->merges) memcpy(m, t->merges, (size_t)t->n_merges * sizeof *m);
    free(t->merges);
    t->merges = m;
  }
  t->merges[t->n_merges][0] = a;
  t->merges[t->n_merges][1] = b;
  t->merges[t->n_merges][2] = out;
  t->n_merges++;
}

/* Encodes one piece as a Hugging Face BPE model does: repeatedly merge the adjacent pair of
 * lowest rank (leftmost first). Returns the token count; ids in out. */
static int encode_piece(SynthBpe *t, const PairMap *ranks, const char *s, int *out) {
  int n = split_chars(t, s, out);
  for (;;) {
    int best = -1, best_rank = 0;
    for (int i = 0; i + 1 < n; i++) {
      int *r = pairmap_slot((PairMap *)ranks, pair_key(out[i], out[i + 1]), 0);
      if (r && (best < 0 || *r < best_rank)) {
        best = i;
        best_rank = *r;
      }
    }
    if (best < 0) return n;
    out[best] = t->merges[best_rank][2];
    memmove(out + best + 1, out + best + 2, (size_t)(n - best - 2) * sizeof(int));
    n--;
  }
}

void synth_bpe_train(SynthBpe *t) {
  TV_CHECK(!t->trained, "synth_bpe_train twice");
  char name[16];
  for (int i = 0; i < 4; i++) add_token(t, special_tokens[i], strlen(special_tokens[i]));
  for (int b = 0; b < 256; b++) {
    snprintf(name, sizeof name, "<0x%02X>", b);
    add_token(t, name, strlen(name));
  }
  /* The alphabet in byte order, then "▁". */
  for (int c = 33; c < 127; c++)
    if (t->used[c]) add_token(t, (const char[]){(char)c, 0}, 1);
  add_token(t, META, META_LEN);

  size_t nu = t->units.n, total = 0;
  t->sym = tv_calloc(nu ? nu : 1, sizeof(int *));
  t->sym_len = tv_calloc(nu ? nu : 1, sizeof(int));
  for (size_t u = 0; u < nu; u++) {
    t->sym[u] = tv_malloc((strlen(t->units.keys[u]) + 1) * sizeof(int));
    t->sym_len[u] = split_chars(t, t->units.keys[u], t->sym[u]);
    total += (size_t)t->sym_len[u];
  }

  /* Classic BPE: merge the most frequent adjacent pair (each distinct piece counts once, which
   * favours pieces shared by many words and so keeps the vocabulary small) until every piece
   * is a single token. Ties go to the smallest (left, right) ids, so the result is fixed. */
  PairMap merged;
  pairmap_init(&merged, total);
  for (;;) {
    PairMap counts;
    pairmap_init(&counts, total);
    uint64_t best = UINT64_MAX;
    int best_count = 0;
    for (size_t u = 0; u < nu; u++)
      for (int i = 0; i + 1 < t->sym_len[u]; i++) {
        uint64_t k = pair_key(t->sym[u][i], t->sym[u][i + 1]);
        int c = ++*pairmap_slot(&counts, k, 1);
        if (c > best_count || (c == best_count && k < best)) {
          best_count = c;
          best = k;
        }
      }
    pairmap_free(&counts);
    if (best_count == 0) break;
    int a = (int)(best >> 32), b = (int)(best & 0xffffffffu);
    const char *sa = t->vocab.keys[a], *sb = t->vocab.keys[b];
    size_t la = strlen(sa), lb = strlen(sb);
    char *joined = tv_malloc(la + lb + 1);
    memcpy(joined, sa, la);
    memcpy(joined + la, sb, lb + 1);
    int out = add_token(t, joined, la + lb);
    free(joined);
    /* A pair can come back when an earlier merge rebuilt a token it had already made by
     * another route; it is recorded once, since a tokenizer keeps one rank per pair. */
    int *seen = pairmap_slot(&merged, best, 1);
    if (!*seen) record_merge(t, a, b, out);
    *seen = 1;
    for (size_t u = 0; u < nu; u++) {
      int *s = t->sym[u], n = t->sym_len[u], w = 0;
      for (int i = 0; i < n; i++) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b) {
          s[w++] = out;
          i++;
        } else {
          s[w++] = s[i];
        }
      }
      t->sym_len[u] = w;
    }
  }
  pairmap_free(&merged);

  /* The property the world is built on: each piece encodes to exactly its own token. */
  PairMap ranks;
  pairmap_init(&ranks, (size_t)t->n_merges + 1);
  for (int r = 0; r < t->n_merges; r++) {
    *pairmap_slot(&ranks, pair_key(t->merges[r][0], t->merges[r][1]), 1) = r;
  }
  int *ids = tv_malloc((total + 1) * sizeof(int));
  for (size_t u = 0; u < nu; u++) {
    const char *s = t->units.keys[u];
    int n = encode_piece(t, &ranks, s, ids);
    TV_CHECK(n == 1 && ids[0] == strmap_get(&t->vocab, s, strlen(s)),
             "synthetic word \"%s\" encodes to %d tokens", s, n);
  }
  free(ids);
  pairmap_free(&ranks);
  t->trained = 1;
}

static void count_piece(void *ctx, const char *s, size_t n, PieceKind kind) {
  int *count = ctx;
  (void)s;
  (void)n;
  (void)kind;
  ++*count;
}

int synth_bpe_count(const SynthBpe *t, const char *text) {
  TV_CHECK(t->trained, "synth_bpe_count before training");
  int count = 0;
  for_each_piece(text, count_piece, &count);
  return count;
}

void synth_bpe_sizes(const SynthBpe *t, int *vocab_size, int *n_merges, int *n_words) {
  *vocab_size = (int)t->vocab.n;
  *n_merges = t->n_merges;
  *n_words = (int)t->units.n;
}

/* ---- tokenizer.json and tokenizer_config.json ------------------------------------------ */

static cJSON *replace_rule(const char *from, const char *to) {
  cJSON *r = cJSON_CreateObject(), *pat = cJSON_CreateObject();
  cJSON_AddStringToObject(r, "type", "Replace");
  cJSON_AddStringToObject(pat, "String", from);
  cJSON_AddItemToObject(r, "pattern", pat);
  cJSON_AddStringToObject(r, "content", to);
  return r;
}

static cJSON *template_piece(const char *kind, const char *id, int type_id) {
  cJSON *o = cJSON_CreateObject(), *in = cJSON_CreateObject();
  cJSON_AddStringToObject(in, "id", id);
  cJSON_AddNumberToObject(in, "type_id", type_id);
  cJSON_AddItemToObject(o, kind, in);
  return o;
}

static cJSON *post_processor(void) {
  cJSON *p = cJSON_CreateObject(), *single = cJSON_CreateArray(), *pair = cJSON_CreateArray();
  cJSON_AddStringToObject(p, "type", "TemplateProcessing");
  cJSON_AddItemToArray(single, template_piece("SpecialToken", "<s>", 0));
  cJSON_AddItemToArray(single, template_piece("Sequence", "A", 0));
  cJSON_AddItemToArray(pair, template_piece("SpecialToken", "<s>", 0));
  cJSON_AddItemToArray(pair, template_piece("Sequence", "A", 0));
  cJSON_AddItemToArray(pair, template_piece("SpecialToken", "<s>", 1));
  cJSON_AddItemToArray(pair, template_piece("Sequence", "B", 1));
  cJSON_AddItemToObject(p, "single", single);
  cJSON_AddItemToObject(p, "pair", pair);
  cJSON *specials = cJSON_CreateObject(), *bos = cJSON_CreateObject();
  cJSON_AddStringToObject(bos, "id", "<s>");
  cJSON_AddItemToObject(bos, "ids", cJSON_CreateIntArray((const int[]){ID_BOS}, 1));
  cJSON_AddItemToObject(bos, "tokens", cJSON_CreateStringArray((const char *const[]){"<s>"}, 1));
  cJSON_AddItemToObject(specials, "<s>", bos);
  cJSON_AddItemToObject(p, "special_tokens", specials);
  return p;
}

static cJSON *tokenizer_json(const SynthBpe *t) {
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "version", "1.0");
  cJSON_AddNullToObject(root, "truncation");
  cJSON_AddNullToObject(root, "padding");
  cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
  for (int i = 0; i < 4; i++) {
    cJSON *a = cJSON_CreateObject();
    cJSON_AddNumberToObject(a, "id", i);
    cJSON_AddStringToObject(a, "content", special_tokens[i]);
    cJSON_AddBoolToObject(a, "single_word", 0);
    cJSON_AddBoolToObject(a, "lstrip", 0);
    cJSON_AddBoolToObject(a, "rstrip", 0);
    cJSON_AddBoolToObject(a, "normalized", 0);
    cJSON_AddBoolToObject(a, "special", 1);
    cJSON_AddItemToArray(added, a);
  }
  cJSON *norm = cJSON_AddObjectToObject(root, "normalizer"), *rules = cJSON_CreateArray();
  cJSON_AddStringToObject(norm, "type", "Sequence");
  cJSON *prepend = cJSON_CreateObject();
  cJSON_AddStringToObject(prepend, "type", "Prepend");
  cJSON_AddStringToObject(prepend, "prepend", META);
  cJSON_AddItemToArray(rules, prepend);
  cJSON_AddItemToArray(rules, replace_rule(" ", META));
  cJSON_AddItemToObject(norm, "normalizers", rules);
  cJSON_AddNullToObject(root, "pre_tokenizer");
  cJSON_AddItemToObject(root, "post_processor", post_processor());
  cJSON *dec = cJSON_AddObjectToObject(root, "decoder"), *steps = cJSON_CreateArray();
  cJSON_AddStringToObject(dec, "type", "Sequence");
  cJSON_AddItemToArray(steps, replace_rule(META, " "));
  cJSON *fb = cJSON_CreateObject(), *fuse = cJSON_CreateObject(), *strip = cJSON_CreateObject();
  cJSON_AddStringToObject(fb, "type", "ByteFallback");
  cJSON_AddStringToObject(fuse, "type", "Fuse");
  cJSON_AddStringToObject(strip, "type", "Strip");
  cJSON_AddStringToObject(strip, "content", " ");
  cJSON_AddNumberToObject(strip, "start", 1);
  cJSON_AddNumberToObject(strip, "stop", 0);
  cJSON_AddItemToArray(steps, fb);
  cJSON_AddItemToArray(steps, fuse);
  cJSON_AddItemToArray(steps, strip);
  cJSON_AddItemToObject(dec, "decoders", steps);

  cJSON *model = cJSON_AddObjectToObject(root, "model");
  cJSON_AddStringToObject(model, "type", "BPE");
  cJSON_AddNullToObject(model, "dropout");
  cJSON_AddStringToObject(model, "unk_token", "<unk>");
  cJSON_AddNullToObject(model, "continuing_subword_prefix");
  cJSON_AddNullToObject(model, "end_of_word_suffix");
  cJSON_AddBoolToObject(model, "fuse_unk", 1);
  cJSON_AddBoolToObject(model, "byte_fallback", 1);
  cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
  for (size_t i = 0; i < t->vocab.n; i++) cJSON_AddNumberToObject(vocab, t->vocab.keys[i], (double)i);
  cJSON *merges = cJSON_AddArrayToObject(model, "merges");
  for (int r = 0; r < t->n_merges; r++) {
    const char *a = t->vocab.keys[t->merges[r][0]], *b = t->vocab.keys[t->merges[r][1]];
    size_t la = strlen(a), lb = strlen(b);
    char *m = tv_malloc(la + lb + 2);
    memcpy(m, a, la);
    m[la] = ' ';
    memcpy(m + la + 1, b, lb + 1);
    cJSON_AddItemToArray(merges, cJSON_CreateString(m));
    free(m);
  }
  return root;
}

static cJSON *tokenizer_config_json(void) {
  cJSON *c = cJSON_CreateObject();
  cJSON_AddBoolToObject(c, "add_bos_token", 1);
  cJSON_AddBoolToObject(c, "add_eos_token", 0);
  cJSON *dec = cJSON_AddObjectToObject(c, "added_tokens_decoder");
  char id[8];
  for (int i = 0; i < 4; i++) {
    cJSON *a = cJSON_CreateObject();
    cJSON_AddStringToObject(a, "content", special_tokens[i]);
    cJSON_AddBoolToObject(a, "lstrip", 0);
    cJSON_AddBoolToObject(a, "normalized", 0);
    cJSON_AddBoolToObject(a, "rstrip", 0);
    cJSON_AddBoolToObject(a, "single_word", 0);
    cJSON_AddBoolToObject(a, "special", 1);
    snprintf(id, sizeof id, "%d", i);
    cJSON_AddItemToObject(dec, id, a);
  }
  cJSON_AddStringToObject(c, "bos_token", "<s>");
  cJSON_AddStringToObject(c, "eos_token", "</s>");
  cJSON_AddStringToObject(c, "unk_token", "<unk>");
  cJSON_AddStringToObject(c, "pad_token", "<pad>");
  cJSON_AddBoolToObject(c, "clean_up_tokenization_spaces", 0);
  cJSON_AddNumberToObject(c, "model_max_length", 512);
  cJSON_AddStringToObject(c, "padding_side", "right");
  cJSON_AddStringToObject(c, "tokenizer_class", "PreTrainedTokenizerFast");
  return c;
}

static void write_json(const char *dir, const char *name, cJSON *doc) {
  char *text = cJSON_Print(doc);
  TV_CHECK(text, "cJSON_Print failed for %s", name);
  size_t n = strlen(text);
  char *withnl = tv_malloc(n + 2);
  memcpy(withnl, text, n);
  withnl[n] = '\n';
  withnl[n + 1] = '\0';
  synth_write_file(dir, name, withnl, n + 1);
  free(withnl);
  cJSON_free(text);
  cJSON_Delete(doc);
}

void synth_bpe_write(const SynthBpe *t, const char *dir) {
  TV_CHECK(t->trained, "synth_bpe_write before training");
  write_json(dir, "tokenizer.json", tokenizer_json(t));
  write_json(dir, "tokenizer_config.json", tokenizer_config_json());
}
