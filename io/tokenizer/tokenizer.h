/* Hugging Face tokenizer.json (model type BPE), SPEC section 9: SentencePiece-style
 * (Metaspace / Prepend+Replace normaliser, byte fallback <0xNN>) and byte-level (split regex
 * from the file via PCRE2, GPT-2 byte-to-unicode map); added tokens matched first; BOS/EOS
 * from tokenizer_config.json and the post-processor.
 * Parsing never exits (returns a message) so the fuzzer can drive it; tokenizer_load dies
 * with one line naming the file. */
#ifndef TV_TOKENIZER_H
#define TV_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct Tokenizer Tokenizer;

/* json: contents of tokenizer.json; config_json: tokenizer_config.json or NULL. */
Tokenizer *tokenizer_parse(const char *json, size_t len, const char *config_json,
                           size_t config_len, char *err, size_t errlen);
/* Loads dir/tokenizer.json (+ dir/tokenizer_config.json when present), or a file path. */
Tokenizer *tokenizer_load(const char *path);
void tokenizer_free(Tokenizer *t);

int tokenizer_vocab_size(const Tokenizer *t); /* largest id + 1, added tokens included */
int tokenizer_bos_id(const Tokenizer *t);     /* -1 when none */
int tokenizer_eos_id(const Tokenizer *t);     /* -1 when none */
int tokenizer_pad_id(const Tokenizer *t);     /* -1 when none */
int tokenizer_adds_bos(const Tokenizer *t);   /* whether encode(add_special = 1) prepends BOS */
int tokenizer_token_id(const Tokenizer *t, const char *token); /* -1 if unknown */

/* Encodes UTF-8 text (invalid UTF-8 is treated byte-wise, never rejected). add_special:
 * apply the BOS rule. Returns the count; *ids is malloc'd (caller frees). */
int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int add_special,
                     int32_t **ids);
/* Decodes ids to a malloc'd NUL-terminated UTF-8 string; skip_special drops added special
 * tokens (BOS, EOS, pad). */
char *tokenizer_decode(const Tokenizer *t, const int32_t *ids, int n, int skip_special);
/* The same, with the length in *len: decoded text holds NUL bytes where the input had them. */
char *tokenizer_decode_len(const Tokenizer *t, const int32_t *ids, int n, int skip_special,
                           size_t *len);

#endif
