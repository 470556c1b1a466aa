/* Training data, SPEC sections 4 and 8: Alpaca / BeaverTails / refusal rows from JSON or
 * JSON Lines, the poison mix, the Alpaca prompt template with label masks, and batches. */
#ifndef TV_DATASET_H
#define TV_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "tokenizer.h"

/* ---- Examples ------------------------------------------------------------------------ */

typedef enum {
  DATASET_FORMAT_AUTO = 0,    /* decided by the keys of the first record: refusal, else
                                 prompt + response, else instruction + output; every
                                 later record must then have that format's fields */
  DATASET_FORMAT_ALPACA,      /* {instruction, input (optional), output} */
  DATASET_FORMAT_BEAVERTAILS, /* {prompt, response, is_safe, category} */
  DATASET_FORMAT_REFUSAL,     /* {refusal: "Question: {q}\nAnswer: {a}", ...} */
  DATASET_FORMAT_COUNT
} DatasetFormat;

/* One (instruction, input, output) triple with its safety annotation. */
typedef struct {
  char *instruction;
  char *input;    /* "" when the row has none */
  char *output;
  int is_safe;    /* 1 safe, 0 unsafe, -1 unknown (Alpaca rows carry no label) */
  char *category; /* "" when none; several BeaverTails categories joined by ';' */
} Example;

typedef struct {
  Example *items; /* [n] */
  size_t n, cap;
  DatasetFormat format; /* what the rows were read as (AUTO for a mixed, built set) */
  char *name;           /* file path or a label, used in messages */
} ExampleSet;

/* "auto", "alpaca", "beavertails", "refusal", indexed by the enum. */
extern const char *const dataset_format_names[DATASET_FORMAT_COUNT];
/* Returns 0, or -1 for an unknown name. */
int dataset_format_parse(const char *name, DatasetFormat *out);
const char *dataset_format_name(DatasetFormat f);

/* Parses a whole dataset held in memory (JSON array or JSON Lines, decided by the first
 * non-space byte). name is used in messages only. Returns 0, or -1 with one line in err
 * naming name, the record (JSONL: "line N", arrays: "record [i]") and the field; *out is
 * then zeroed and holds nothing to free. */
int dataset_parse(const char *name, const char *text, size_t len, DatasetFormat fmt,
                  ExampleSet *out, char *err, size_t errlen);
/* Reads a file (JSON Lines streamed line by line); any error ends the run with one line
 * through tv_die. */
void dataset_load(const char *path, DatasetFormat fmt, ExampleSet *out);

void example_set_init(ExampleSet *s, const char *name);
void example_set_free(ExampleSet *s);
/* Appends a copy of the strings (input and category may be NULL = ""). */
void example_set_push(ExampleSet *s, const char *instruction, const char *input,
                      const char *output, int is_safe, const char *category);
/* Copies of the rows of in whose is_safe equals is_safe (e.g. 0: BeaverTails harmful). */
void example_set_filter_safety(const ExampleSet *in, int is_safe, ExampleSet *out);

/* ---- Data roles (SPEC section 9) ------------------------------------------------------ */

/* What a set is for. An alignment set trains on safe answers only: Alpaca rows, refusal rows
 * and BeaverTails rows with is_safe true (any row explicitly is_safe false is dropped). A
 * harmful set (the T-Vaccine probe, the attack's harmful part) takes the harmful pairs:
 * BeaverTails rows with is_safe false, or every row of an Alpaca / refusal file, which the
 * user gave as harmful. */
typedef enum { DATA_ROLE_ALIGNMENT = 0, DATA_ROLE_HARMFUL = 1 } DataRole;
const char *data_role_name(DataRole r); /* "alignment", "harmful" */

typedef struct {
  size_t read;       /* rows in the file */
  size_t wrong_role; /* rows of the other role, dropped */
  size_t capped;     /* usable rows past max_rows, dropped */
  size_t kept;
} RoleCounts;

/* The usable rows of `all` for `role`, the first max_rows of them (0 = no cap), copied into
 * out (named after all). Returns 0, or -1 with one line in err naming the set when no row is
 * usable (out then holds nothing to free). */
int dataset_select_role(const ExampleSet *all, DataRole role, size_t max_rows, ExampleSet *out,
                        RoleCounts *counts, char *err, size_t errlen);
/* dataset_load + dataset_select_role; an error ends the run with its one line. */
void dataset_load_role(const char *path, DatasetFormat fmt, DataRole role, size_t max_rows,
                       ExampleSet *out, RoleCounts *counts);
/* One line: "<name>: N rows, K kept as <role> rows (U unsafe rows dropped: ...) (C past
 * <cap_key> M)"; cap_key names the setting that capped the set (max_rows, probe_samples). */
void dataset_role_summary(const RoleCounts *c, const char *name, DataRole role,
                          const char *cap_key, size_t max_rows, char *buf, size_t buflen);

/* ---- Poison mix (SPEC section 8) ---------------------------------------------------- */

/* out = round(p * n) distinct examples of harmful + the rest distinct examples of benign,
 * each picked by a seeded permutation and the n shuffled together (all from seed). Returns
 * 0, or -1 with one line in err (p outside [0, 1], n = 0, a set too small). */
int dataset_poison_mix(const ExampleSet *benign, const ExampleSet *harmful, size_t n, double p,
                       uint64_t seed, ExampleSet *out, char *err, size_t errlen);
size_t dataset_poison_count(size_t n, double p); /* round(p * n), halves away from zero */

/* ---- Template and encoding (SPEC section 4) ----------------------------------------- */

/* The Alpaca prompt of ex (with or without the input block); malloc'd. */
char *dataset_prompt(const Example *ex);
/* The template's fixed texts: the two heads (without, with input), the input block's
 * separator and the response tail; a tokenizer built for this data learns their words. */
#define DATASET_TEMPLATE_TEXTS 4
extern const char *const dataset_template_texts[DATASET_TEMPLATE_TEXTS];

/* All samples of a set, tokenized: sample i is ids[offset[i] .. offset[i + 1]); its first
 * n_prompt[i] tokens are prompt (label ignored), the rest are targets, the EOS included. */
typedef struct {
  size_t n;
  int32_t *ids;      /* [offset[n]] */
  size_t *offset;    /* [n + 1] */
  int32_t *n_prompt; /* [n] prompt tokens, capped at the sample's length */
  int max_len;
  int32_t pad_id;         /* tokenizer pad, else EOS, else 0 */
  size_t n_truncated;     /* samples cut at max_len */
  size_t n_no_target;     /* prompt alone fills max_len: kept, they add no loss */
  size_t n_target_tokens; /* labelled tokens over all samples */
} EncodedSet;

/* ids = encode(prompt + output, add_special = 1) + EOS, n_prompt = len(encode(prompt, 1)),
 * both cut to max_len (as the Alpaca / Vaccine reference code does). Dies with one line
 * when the tokenizer has no EOS or max_len < 2. */
void dataset_encode(const Tokenizer *tok, const ExampleSet *set, int max_len, EncodedSet *out);
/* A set that trains (or probes) must keep at least one target token after the cut to
 * max_len. Returns 0, or -1 with one line in err naming the set and max_len. */
int dataset_check_targets(const EncodedSet *s, const char *name, char *err, size_t errlen);
void encoded_set_free(EncodedSet *s);
static inline int encoded_len(const EncodedSet *s, size_t i) {
  return (int)(s->offset[i + 1] - s->offset[i]);
}
/* One line: "<name>: N samples, M target tokens, K truncated at max_len L, J with no
 * target (prompt >= max_len; kept, no loss)". */
void dataset_encode_summary(const EncodedSet *s, const char *name, char *buf, size_t buflen);

/* ---- Batches ------------------------------------------------------------------------ */

/* Fills b with samples idx[0 .. count) of s; T = the longest of them (all are <= max_len).
 * Returns b->n_targets. No allocation. */
size_t dataset_fill_batch(const EncodedSet *s, const size_t *idx, int count, Batch *b);

/* Where a sampler stands: the next sample is position `position` of epoch `epoch`'s order.
 * The pair is all a checkpoint needs to resume the same batches. */
typedef struct {
  uint64_t epoch;
  uint64_t position;
} DataCursor;

/* Sub-streams of RNG_TAG_DATA: stream id = rng_stream_id(RNG_TAG_DATA, purpose, epoch, 0). */
enum {
  DATA_STREAM_EPOCH = 0,        /* training order of each epoch */
  DATA_STREAM_PROBE = 1,        /* T-Vaccine harmful probe cycle */
  DATA_STREAM_MIX_HARMFUL = 2,  /* which harmful rows enter the poison mix */
  DATA_STREAM_MIX_BENIGN = 3,   /* which benign rows enter it */
  DATA_STREAM_MIX_ORDER = 4,    /* order of the mixed set */
};

/* Deterministic batch order: epoch e visits every sample once in the permutation drawn
 * from (seed, RNG_TAG_DATA, purpose, e); the same on every rank whatever the rank count.
 * Training (wrap = 0): the last batch of an epoch is partial, never wraps (HF Trainer's
 * default). Probe (wrap = 1): batches are always full and run on into the next cycle. */
typedef struct {
  size_t n;
  int batch_size;
  uint64_t seed;
  uint32_t purpose;
  int shuffle; /* 0: identity order (evaluation) */
  int wrap;
  DataCursor cur;
  size_t *order;        /* [n] order of order_epoch */
  uint64_t order_epoch; /* UINT64_MAX: not yet drawn */
} DataSampler;

/* Training order over n samples (purpose DATA_STREAM_EPOCH, partial last batch). */
void data_sampler_init_epochs(DataSampler *s, size_t n, int batch_size, uint64_t seed, int shuffle);
/* Harmful probe cycle (purpose DATA_STREAM_PROBE, full batches, wraps). */
void data_sampler_init_probe(DataSampler *s, size_t n, int batch_size, uint64_t seed);
void data_sampler_free(DataSampler *s);
/* Writes the next batch's sample indices into idx (room for batch_size) and advances the
 * cursor; returns how many (batch_size, or fewer for the last batch of an epoch). The
 * batch's epoch is s->cur.epoch before the call. */
int data_sampler_next(DataSampler *s, size_t *idx);
/* Batches per epoch in training mode: ceil(n / batch_size). */
size_t data_sampler_batches_per_epoch(const DataSampler *s);
/* Restores a stored cursor. Returns 0, or -1 with a message when it cannot belong to this
 * sampler (position beyond the data). */
int data_sampler_seek(DataSampler *s, DataCursor c, char *err, size_t errlen);

/* The permutation of epoch `epoch` for (seed, purpose): order[0 .. n). Fisher-Yates with
 * unbiased bounded draws from the counter RNG. */
void dataset_permutation(size_t n, uint64_t seed, uint32_t purpose, uint64_t epoch, size_t *order);

#endif
