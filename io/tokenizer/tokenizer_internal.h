/* Internals shared by the files of io/tokenizer: the parsed form of a tokenizer.json (model, added
 * tokens, normaliser / pre-tokeniser / decoder steps) and the helpers the stages share. */
#ifndef TV_TOKENIZER_INTERNAL_H
#define TV_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* ---- growable byte buffer and string views (tokenizer_util.c) ---- */

typedef struct {
  char *p;
  size_t len, cap;
} TkBuf;

void tkbuf_reserve(TkBuf *b, size_t extra);
void tkbuf_put(TkBuf *b, const void *src, size_t n);
void tkbuf_putc(TkBuf *b, char c);
void tkbuf_free(TkBuf *b);

typedef struct {
  int32_t *v;
  int n, cap;
} TkIds;

void tkids_push(TkIds *a, int32_t id);

/* Length of the UTF-8 sequence at s[0..n) (>= 1); an invalid or truncated sequence counts
 * as one byte, so text that is not UTF-8 is walked byte by byte and never rejected. */
size_t tk_utf8_len(const unsigned char *s, size_t n);
/* Decodes the sequence at s (valid or not: an invalid byte decodes to 0xFFFFFFFF). */
uint32_t tk_utf8_decode(const unsigned char *s, size_t n, size_t *len);
/* Unicode White_Space (what Rust's char::is_whitespace and regex \s test). */
int tk_is_whitespace(uint32_t cp);
/* Appends bytes to out the way Rust's String::from_utf8_lossy does: every maximal invalid
 * subpart becomes one U+FFFD. */
void tk_append_lossy(TkBuf *out, const unsigned char *s, size_t n);
int tk_is_valid_utf8(const unsigned char *s, size_t n);

/* printf into err (when err != NULL) and return NULL / -1 for the caller's convenience. */
void tk_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- hash maps (tokenizer_map.c) ---- */

/* bytes -> int32; keys are copied into an arena owned by the map. */
typedef struct {
  uint32_t *slots; /* entry index + 1, 0 = empty */
  size_t nslots;
  struct TkStrEntry {
    size_t off;
    uint32_t len, hash;
    int32_t val;
  } *ent;
  size_t n, cap;
  TkBuf keys;
} TkStrMap;

/* Inserts or overwrites; returns 1 when the key was new. */
int tkmap_put(TkStrMap *m, const char *key, size_t len, int32_t val);
int32_t tkmap_get(const TkStrMap *m, const char *key, size_t len); /* -1 if absent */
void tkmap_free(TkStrMap *m);

/* (left id, right id) -> (rank, merged id), the BPE merge table. */
typedef struct {
  struct TkPair {
    uint64_t key; /* (left << 32 | right) + 1, 0 = empty */
    int32_t rank, merged;
  } *slots;
  size_t nslots, n;
} TkPairMap;

void tkpair_put(TkPairMap *m, int32_t a, int32_t b, int32_t rank, int32_t merged);
const struct TkPair *tkpair_get(const TkPairMap *m, int32_t a, int32_t b);
void tkpair_free(TkPairMap *m);

/* ---- regular expressions (tokenizer_regex.c), Oniguruma-compatible use of PCRE2 ---- */

typedef struct TkRegex TkRegex;
/* literal: the pattern is a plain string (a `String` pattern in tokenizer.json). */
TkRegex *tkre_compile(const char *pat, size_t len, int literal, char *err, size_t errlen);
void tkre_free(TkRegex *re);

/* One span of a piece of text and whether it was a match. */
typedef struct {
  size_t a, b;
  int match;
} TkSpan;

typedef struct {
  TkSpan *v;
  int n, cap;
} TkSpans;

/* Matches and gaps covering s[0..n) in order, as tokenizers' Pattern::find_matches for a
 * regex does (onig's find_iter: no empty match right after the previous match). */
void tkre_find_matches(const TkRegex *re, const char *s, size_t n, TkSpans *out);
/* Whether the regex matches anywhere in s. */
int tkre_search(const TkRegex *re, const char *s, size_t n);
void tkspans_push(TkSpans *sp, size_t a, size_t b, int match);

/* ---- the parsed tokenizer ---- */

enum { TK_NORM_PREPEND, TK_NORM_REPLACE, TK_NORM_NFC };
typedef struct {
  int kind;
  char *text; /* Prepend: the prefix; Replace: the replacement */
  size_t text_len;
  TkRegex *re; /* Replace: the pattern */
} TkNormStep;

enum { TK_SPLIT_REMOVED, TK_SPLIT_ISOLATED, TK_SPLIT_PREV, TK_SPLIT_NEXT, TK_SPLIT_CONTIGUOUS };
enum { TK_PREPEND_ALWAYS, TK_PREPEND_FIRST, TK_PREPEND_NEVER };
enum { TK_PRE_SPLIT, TK_PRE_BYTELEVEL, TK_PRE_METASPACE };
typedef struct {
  int kind;
  TkRegex *re; /* Split: its pattern; ByteLevel with use_regex: the GPT-2 pattern */
  int behavior, invert;
  int add_prefix_space; /* ByteLevel */
  char repl[8];         /* Metaspace replacement character, UTF-8 */
  size_t repl_len;
  int prepend_scheme, split; /* Metaspace */
} TkPreStep;

enum { TK_DEC_REPLACE, TK_DEC_BYTEFALLBACK, TK_DEC_FUSE, TK_DEC_STRIP, TK_DEC_BYTELEVEL,
       TK_DEC_METASPACE };
typedef struct {
  int kind;
  TkRegex *re;   /* Replace: the pattern */
  char *content; /* Replace: the replacement */
  size_t content_len;
  uint32_t strip_cp; /* Strip: the character; Metaspace: the replacement */
  int start, stop;   /* Strip */
  int prepend_scheme; /* Metaspace */
} TkDecStep;

typedef struct {
  char *content;
  size_t len;
  char *norm; /* content after the normaliser (tokens with normalized: true) */
  size_t norm_len;
  int32_t id;
  unsigned char special, lstrip, rstrip, single_word, normalized;
} TkAdded;

/* A trie-free leftmost-longest matcher: candidate added tokens bucketed by first byte,
 * longest first. */
typedef struct {
  int *idx; /* indices into Tokenizer.added */
  int start[257];
} TkAddedSet;

struct Tokenizer {
  /* model (BPE) */
  TkStrMap vocab;
  int32_t model_vocab_len; /* entries in model.vocab (what tokenizers calls its size) */
  size_t *id_off;          /* id -> token bytes in id_text (model and added), SIZE_MAX none */
  uint32_t *id_len;
  TkBuf id_text;
  int32_t n_ids; /* largest id + 1 */
  TkPairMap merges;
  int32_t unk_id; /* -1: none */
  int fuse_unk, byte_fallback, ignore_merges;
  char *cont_prefix, *eow_suffix;
  size_t cont_prefix_len, eow_suffix_len;
  int32_t byte_id[256]; /* <0xNN> ids for byte fallback, -1 if absent */

  /* added tokens, in tokenizers' order (special ones first) */
  TkAdded *added;
  int n_added;
  int32_t *added_of_id; /* id -> index into added, -1 */
  TkAddedSet raw_set, norm_set;
  TkRegex *word_start; /* one \w character (single_word), compiled when needed */

  TkNormStep *norm;
  int n_norm;
  TkPreStep *pre;
  int n_pre;
  TkDecStep *dec;
  int n_dec, has_decoder;

  /* encode(add_special = 1): prefix ids + text ids + suffix ids */
  TkIds prefix, suffix;
  int32_t bos, eos, pad;
  TkStrMap special; /* contents of special added tokens (skipped by decode on request) */
};

/* tokenizer_json.c: the normalizer / pre_tokenizer / decoder / post_processor objects, and
 * typed field access that names the field in its error (path is the object's JSON path). */
struct cJSON;
/* 0 ok (absent or null gives def), -1 wrong type. */
int tk_json_bool(const struct cJSON *o, const char *key, int def, int *out, const char *path,
                 char *err, size_t errlen);
/* The string field (NULL and no error when absent or null and !required). */
const char *tk_json_str(const struct cJSON *o, const char *key, int required, const char *path,
                        char *err, size_t errlen, int *failed);
int tk_parse_normalizer(Tokenizer *t, const struct cJSON *j, char *err, size_t errlen);
int tk_parse_pre_tokenizer(Tokenizer *t, const struct cJSON *j, char *err, size_t errlen);
int tk_parse_decoder(Tokenizer *t, const struct cJSON *j, char *err, size_t errlen);
int tk_parse_post_processor(Tokenizer *t, const struct cJSON *j, char *err, size_t errlen);

/* tokenizer_added.c */
int tk_added_prepare(Tokenizer *t, char *err, size_t errlen);
/* Splits s[0..n) on the added tokens of set (raw or normalised): spans with match = 1 carry
 * the added token's id in *ids (one per span, -1 for plain text). */
void tk_added_split(const Tokenizer *t, const TkAddedSet *set, const char *s, size_t n,
                    TkSpans *out, TkIds *ids);

/* tokenizer_pipeline.c: one piece of normalised text and how much of its start lies at
 * the start of the original input (Metaspace's prepend_scheme "first" needs that). */
typedef struct {
  size_t off, len; /* into the pipeline's buffer */
  size_t zero;     /* leading bytes aligned to original offset 0 */
} TkPiece;

/* tokenizer_normalize.c: normalises s into out (appends), returns the new `zero`. */
size_t tk_normalize(const Tokenizer *t, const char *s, size_t n, size_t zero, TkBuf *out);

/* tokenizer_nfc.c: Unicode NFC of s appended to out (invalid UTF-8 bytes pass through). */
void tk_nfc(const char *s, size_t n, TkBuf *out);
/* tokenizer_nfc_data.c (generated by tests/ref/tokenizer_nfc_table.py) */
typedef struct {
  uint32_t first, last;
  uint8_t ccc;
} TkCccRange;
typedef struct {
  uint32_t cp, a, b; /* cp -> a b (b = 0: a single code point) */
} TkDecomp;
typedef struct {
  uint32_t a, b, cp; /* a b -> cp, sorted by (a, b) */
} TkComp;
extern const TkCccRange tk_nfc_ccc[];
extern const int tk_nfc_ccc_n;
extern const TkDecomp tk_nfc_decomp[];
extern const int tk_nfc_decomp_n;
extern const TkComp tk_nfc_comp[];
extern const int tk_nfc_comp_n;

/* tokenizer_bytelevel.c */
extern const char *const tk_gpt2_pattern;
/* GPT-2 byte-to-unicode: writes the UTF-8 of the character standing for byte b (1 or 2
 * bytes) and returns its length. */
size_t tk_byte_char(unsigned char b, char out[2]);
/* Inverse: the byte a code point stands for, or -1. */
int tk_char_byte(uint32_t cp);

/* tokenizer_bpe.c: appends the ids of one pre-token. */
void tk_bpe_word(const Tokenizer *t, const char *s, size_t n, TkIds *out);

/* tokenizer_decode.c */
const char *tk_id_text(const Tokenizer *t, int32_t id, size_t *len);

#endif
