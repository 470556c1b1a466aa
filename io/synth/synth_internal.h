/* Shared inside the synthetic benchmark (the files of io/synth): growable strings, a string map,
 * the world's lexicon and the tokenizer builder. Not part of the io interface. */
#ifndef TV_SYNTH_INTERNAL_H
#define TV_SYNTH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"
#include "synth.h"

/* ---- Strings ------------------------------------------------------------------------- */

typedef struct {
  char *s; /* always NUL-terminated once anything was put */
  size_t len, cap;
} SBuf;

void sbuf_putn(SBuf *b, const char *s, size_t n);
void sbuf_put(SBuf *b, const char *s);
/* Appends tmpl with "{0}".."{9}" replaced by vals[0..9]. */
void sbuf_fill(SBuf *b, const char *tmpl, const char *const *vals);
void sbuf_clear(SBuf *b);
char *sbuf_take(SBuf *b); /* the string (caller frees); b is empty afterwards */
char *synth_strdup(const char *s);

/* Open-addressing map from strings (copied) to ints; keys[] keeps insertion order. */
typedef struct {
  char **slot_key; /* [cap] */
  int *slot_val;   /* [cap] */
  size_t cap, n;
  char **keys; /* [n] in insertion order (pointers into slot_key's copies) */
  size_t keys_cap;
} StrMap;

void strmap_init(StrMap *m);
void strmap_free(StrMap *m);
int strmap_get(const StrMap *m, const char *key, size_t len); /* -1 when absent */
/* Inserts key -> val; returns 1 when new, 0 (value unchanged) when already present. */
int strmap_add(StrMap *m, const char *key, size_t len, int val);


/* ---- Lexicon (synth_lexicon.c) -------------------------------------------------------- */

enum { SYNTH_N_CATEGORIES = 5, SYNTH_VOCAB = 10, SYNTH_HARM_TEMPLATES = 6, SYNTH_SLOTS = 12 };
enum { SYNTH_TASK_SST = 0, SYNTH_TASK_AGNEWS = 1, SYNTH_TASK_GSM = 2, SYNTH_N_TASKS = 3 };
enum { SYNTH_N_REFUSALS = 5, SYNTH_N_MARKERS = 4, SYNTH_N_ANSWERS = 4 };
enum { SYNTH_N_BEAVERTAILS_KEYS = 14 };

typedef struct {
  const char *name, *beavertails;
  const char *vocab[SYNTH_VOCAB];
  const char *templates[SYNTH_HARM_TEMPLATES]; /* {0} = a slot, {1} = b slot */
  const char *const *a, *const *b; /* [SYNTH_SLOTS] each */
} SynthHarmLexicon;

extern const SynthHarmLexicon synth_harm_lexicon[SYNTH_N_CATEGORIES];
extern const char *const synth_refusal_markers[SYNTH_N_MARKERS];
extern const char *const synth_refusals[SYNTH_N_REFUSALS];
extern const char *const synth_beavertails_keys[SYNTH_N_BEAVERTAILS_KEYS];
extern const char *const synth_task_names[SYNTH_N_TASKS];
extern const char *const synth_task_scorers[SYNTH_N_TASKS];

/* A harmful prompt is a point (category, template, a, b) of the lexicon. */
typedef struct {
  int category, t, a, b;
  char *prompt;
} SynthHarmPrompt;

char *synth_harm_prompt_text(int category, int t, int a, int b);
/* The fixed answer of a prompt: a learnable function of its slots. perm is the category's
 * seeded vocabulary order, so other seeds give other answers. */
char *synth_harm_answer(const SynthHarmPrompt *p, const int *perm);
char *synth_refusal_for(const SynthHarmPrompt *p);

/* One benign row (instruction, answer) of task drawn from r; the answer follows the
 * evidence in the instruction. */
void synth_draw_benign(int task, Rng *r, SBuf *instruction, SBuf *output);
/* Label words and their evidence words, for world.json. */
int synth_task_labels(int task, const char *const **labels);
int synth_task_evidence(int task, int label, const char *const **words);

/* ---- Tokenizer (synth_bpe.c) ---------------------------------------------------------- */

typedef struct SynthBpe SynthBpe;

SynthBpe *synth_bpe_new(void);
void synth_bpe_free(SynthBpe *t);
/* Adds every word piece of text as encoded alone (the tokenizer prepends "▁"). */
void synth_bpe_add_text(SynthBpe *t, const char *text);
/* Learns merges until every word piece is one token, and checks that it encodes so. */
void synth_bpe_train(SynthBpe *t);
/* Tokens of text encoded alone, without BOS (all its pieces must have been added). */
int synth_bpe_count(const SynthBpe *t, const char *text);
void synth_bpe_sizes(const SynthBpe *t, int *vocab_size, int *n_merges, int *n_words);
void synth_bpe_write(const SynthBpe *t, const char *dir);

/* ---- World (synth_world.c) ----------------------------------------------------------- */

/* The world of opt as the lexicon defines it (categories, tasks, markers). */
SynthWorld *synth_world_build(const SynthOptions *opt);
/* Writes dir/world.json: the world, its file row counts and tokenizer statistics. */
void synth_world_write(const SynthWorld *w, const SynthStats *st, const char *dir);

/* ---- Files (synth_util.c) ------------------------------------------------------------- */

/* Writes text to dir/name through a temporary file and a rename. */
void synth_write_file(const char *dir, const char *name, const char *text, size_t len);

#endif
