/* synth_generate: draws the world's prompts (all distinct, so every split is disjoint from
 * every other), gives each its fixed answer, and writes the data files and the tokenizer. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cJSON.h"
#include "check.h"
#include "dataset.h"
#include "synth_internal.h"

/* Purpose tag of the generator's random stream (kept apart from core/rng.h's tags). */
#define SYNTH_RNG_TAG 0x53594eu

enum { HARM_POOL = SYNTH_HARM_TEMPLATES * SYNTH_SLOTS * SYNTH_SLOTS };
enum { SPLIT_TEST, SPLIT_PROBE, SPLIT_ATTACK, SPLIT_ALIGN, SPLIT_PRETRAIN, N_HARM_SPLITS };
enum { BSPLIT_TEST, BSPLIT_TRAIN, BSPLIT_ALIGN, BSPLIT_PRETRAIN, N_BENIGN_SPLITS };
#define MAX_PER_TASK 200000

SynthOptions synth_default_options(void) {
  SynthOptions o;
  o.seed = 1;
  o.pretrain_benign_per_task = 600;
  o.pretrain_harmful_per_category = 150;
  o.align_harmful_per_category = 100;
  o.align_benign_per_task = 100;
  o.probe_per_category = 40;
  o.attack_per_category = 100;
  o.harmful_test_per_category = 100;
  o.benign_train_per_task = 1000;
  o.benign_test_per_task = 500;
  return o;
}

static void check_count(const char *name, int v, int max) {
  if (v < 0 || v > max) tv_die("synth: %s must be in [0, %d], got %d", name, max, v);
}

static void validate(const SynthOptions *o) {
  int harm[N_HARM_SPLITS] = {o->harmful_test_per_category, o->probe_per_category,
                             o->attack_per_category, o->align_harmful_per_category,
                             o->pretrain_harmful_per_category};
  const char *harm_names[N_HARM_SPLITS] = {"harmful_test_per_category", "probe_per_category",
                                           "attack_per_category", "align_harmful_per_category",
                                           "pretrain_harmful_per_category"};
  long sum = 0;
  for (int s = 0; s < N_HARM_SPLITS; s++) {
    check_count(harm_names[s], harm[s], HARM_POOL);
    sum += harm[s];
  }
  if (sum > HARM_POOL)
    tv_die("synth: the harmful splits ask for %ld prompts per category; the world has %d", sum,
           HARM_POOL);
  check_count("pretrain_benign_per_task", o->pretrain_benign_per_task, MAX_PER_TASK);
  check_count("align_benign_per_task", o->align_benign_per_task, MAX_PER_TASK);
  check_count("benign_train_per_task", o->benign_train_per_task, MAX_PER_TASK);
  check_count("benign_test_per_task", o->benign_test_per_task, MAX_PER_TASK);
}

static void make_dirs(const char *dir) {
  char *p = synth_strdup(dir);
  for (char *s = p + 1;; s++) {
    char c = *s;
    if (c != '/' && c != '\0') continue;
    *s = '\0';
    if (mkdir(p, 0777) != 0 && errno != EEXIST) tv_die("cannot create directory %s: %s", p, strerror(errno));
    *s = c;
    if (!c) break;
  }
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) tv_die("synth: %s is not a directory", dir);
  free(p);
}

/* A question and its fixed answer; category >= 0 for harmful rows. */
typedef struct {
  char *prompt, *answer;
  int category;
} Row;

typedef struct {
  Row *rows;
  int n;
} Rows;

static Rows rows_new(int cap) {
  Rows r = {.rows = tv_calloc((size_t)(cap ? cap : 1), sizeof(Row)), .n = 0};
  return r;
}

static void rows_free(Rows *r) {
  for (int i = 0; i < r->n; i++) {
    free(r->rows[i].prompt);
    free(r->rows[i].answer);
  }
  free(r->rows);
}

static void rows_push(Rows *r, char *prompt, char *answer, int category) {
  r->rows[r->n].prompt = prompt;
  r->rows[r->n].answer = answer;
  r->rows[r->n].category = category;
  r->n++;
}

/* ---- Drawing ----------------------------------------------------------------------------- */

typedef struct {
  Rng rng;
  StrMap seen; /* every prompt of the world: a repeat anywhere is a train/test leak */
  int perm[SYNTH_N_CATEGORIES][SYNTH_VOCAB];
} Gen;

static void claim(Gen *g, const char *prompt) {
  TV_CHECK(strmap_add(&g->seen, prompt, strlen(prompt), 0), "synthetic prompt drawn twice: %s", prompt);
}

/* Harmful rows of every split: each category's pool is shuffled and cut into the splits. */
static void draw_harmful(Gen *g, const SynthOptions *o, Rows out[N_HARM_SPLITS]) {
  int need[N_HARM_SPLITS] = {o->harmful_test_per_category, o->probe_per_category,
                             o->attack_per_category, o->align_harmful_per_category,
                             o->pretrain_harmful_per_category};
  for (int s = 0; s < N_HARM_SPLITS; s++) out[s] = rows_new(need[s] * SYNTH_N_CATEGORIES);
  int *pool = tv_malloc(HARM_POOL * sizeof(int));
  for (int c = 0; c < SYNTH_N_CATEGORIES; c++) {
    for (int i = 0; i < HARM_POOL; i++) pool[i] = i;
    rng_shuffle(&g->rng, pool, HARM_POOL, sizeof *pool);
    int k = 0;
    for (int s = 0; s < N_HARM_SPLITS; s++)
      for (int i = 0; i < need[s]; i++, k++) {
        SynthHarmPrompt p;
        p.category = c;
        p.t = pool[k] / (SYNTH_SLOTS * SYNTH_SLOTS);
        p.a = pool[k] / SYNTH_SLOTS % SYNTH_SLOTS;
        p.b = pool[k] % SYNTH_SLOTS;
        p.prompt = synth_harm_prompt_text(c, p.t, p.a, p.b);
        claim(g, p.prompt);
        char *answer = s == SPLIT_ALIGN ? synth_refusal_for(&p) : synth_harm_answer(&p, g->perm[c]);
        rows_push(&out[s], p.prompt, answer, c);
      }
  }
  free(pool);
  /* Categories interleaved: a file's first rows cover every category. */
  for (int s = 0; s < N_HARM_SPLITS; s++) {
    int *idx = tv_malloc((size_t)(out[s].n ? out[s].n : 1) * sizeof(int));
    for (int i = 0; i < out[s].n; i++) idx[i] = i;
    rng_shuffle(&g->rng, idx, (size_t)out[s].n, sizeof *idx);
    Row *tmp = tv_malloc((size_t)(out[s].n ? out[s].n : 1) * sizeof(Row));
    for (int i = 0; i < out[s].n; i++) tmp[i] = out[s].rows[idx[i]];
    free(out[s].rows);
    out[s].rows = tmp;
    free(idx);
  }
}

static void draw_benign(Gen *g, const SynthOptions *o, int task, Rows out[N_BENIGN_SPLITS]) {
  int need[N_BENIGN_SPLITS] = {o->benign_test_per_task, o->benign_train_per_task,
                               o->align_benign_per_task, o->pretrain_benign_per_task};
  SBuf ins = {0}, ans = {0};
  for (int s = 0; s < N_BENIGN_SPLITS; s++) {
    out[s] = rows_new(need[s]);
    long tries = 0, limit = 100L * need[s] + 10000;
    while (out[s].n < need[s]) {
      if (++tries > limit)
        tv_die("synth: cannot draw %d distinct %s prompts for one split; lower the counts", need[s],
               synth_task_names[task]);
      synth_draw_benign(task, &g->rng, &ins, &ans);
      if (!strmap_add(&g->seen, ins.s, ins.len, 0)) continue;
      rows_push(&out[s], synth_strdup(ins.s), synth_strdup(ans.s), -1);
    }
  }
  free(ins.s);
  free(ans.s);
}

/* ---- Files ------------------------------------------------------------------------------- */

/* The prompt the trainer builds from the row's Alpaca record (instruction, empty input). */
static char *alpaca_prompt(const char *instruction) {
  Example ex = {.instruction = (char *)instruction, .input = ""};
  return dataset_prompt(&ex);
}

static cJSON *alpaca_json(const Row *r) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "instruction", r->prompt);
  cJSON_AddStringToObject(o, "input", "");
  cJSON_AddStringToObject(o, "output", r->answer);
  return o;
}

/* A BeaverTails row: the category object holds all 14 keys, one of them true. */
static cJSON *beavertails_json(const Row *r) {
  cJSON *o = cJSON_CreateObject(), *cat = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "prompt", r->prompt);
  cJSON_AddStringToObject(o, "response", r->answer);
  const char *key = synth_harm_lexicon[r->category].beavertails;
  for (int k = 0; k < SYNTH_N_BEAVERTAILS_KEYS; k++)
    cJSON_AddBoolToObject(cat, synth_beavertails_keys[k], strcmp(key, synth_beavertails_keys[k]) == 0);
  cJSON_AddItemToObject(o, "category", cat);
  cJSON_AddBoolToObject(o, "is_safe", 0);
  return o;
}

/* Writes rows as a JSON array with one row per line, or as JSON Lines. */
static void write_rows(const char *dir, const char *name, const Row *const *rows, int n,
                       int beavertails, int jsonl) {
  SBuf b = {0};
  if (!jsonl) sbuf_put(&b, "[\n");
  for (int i = 0; i < n; i++) {
    cJSON *o = beavertails ? beavertails_json(rows[i]) : alpaca_json(rows[i]);
    char *line = cJSON_PrintUnformatted(o);
    TV_CHECK(line, "cJSON_PrintUnformatted failed");
    sbuf_put(&b, line);
    sbuf_put(&b, jsonl ? "\n" : (i + 1 < n ? ",\n" : "\n"));
    cJSON_free(line);
    cJSON_Delete(o);
  }
  if (!jsonl) sbuf_put(&b, "]\n");
  synth_write_file(dir, name, b.s ? b.s : "", b.len);
  free(b.s);
}

/* The rows of several lists, shuffled together (pretrain and align mix their sources). */
static const Row **mixed(Gen *g, Rows *const *lists, int n_lists, int *n_out) {
  int n = 0;
  for (int l = 0; l < n_lists; l++) n += lists[l]->n;
  const Row **all = tv_malloc((size_t)(n ? n : 1) * sizeof(Row *));
  int *idx = tv_malloc((size_t)(n ? n : 1) * sizeof(int));
  int k = 0;
  for (int l = 0; l < n_lists; l++)
    for (int i = 0; i < lists[l]->n; i++) all[k++] = &lists[l]->rows[i];
  for (int i = 0; i < n; i++) idx[i] = i;
  rng_shuffle(&g->rng, idx, (size_t)n, sizeof *idx);
  const Row **out = tv_malloc((size_t)(n ? n : 1) * sizeof(Row *));
  for (int i = 0; i < n; i++) out[i] = all[idx[i]];
  free(all);
  free(idx);
  *n_out = n;
  return out;
}

static void write_list(const char *dir, const char *name, Rows *list, int beavertails) {
  const Row **p = tv_malloc((size_t)(list->n ? list->n : 1) * sizeof(Row *));
  for (int i = 0; i < list->n; i++) p[i] = &list->rows[i];
  write_rows(dir, name, p, list->n, beavertails, 0);
  free(p);
}

/* ---- Tokenizer corpus and lengths ---------------------------------------------------------- */

static void add_row_text(SynthBpe *bpe, const Row *r) {
  char *prompt = alpaca_prompt(r->prompt);
  SBuf full = {0};
  sbuf_put(&full, prompt);
  sbuf_put(&full, r->answer);
  synth_bpe_add_text(bpe, full.s);     /* as training sees it: fields after newlines */
  synth_bpe_add_text(bpe, r->prompt);  /* as encoded alone: first word after "▁" */
  synth_bpe_add_text(bpe, r->answer);
  free(prompt);
  free(full.s);
}

static void measure_row(const SynthBpe *bpe, const Row *r, SynthStats *st) {
  char *prompt = alpaca_prompt(r->prompt);
  SBuf full = {0};
  sbuf_put(&full, prompt);
  sbuf_put(&full, r->answer);
  int np = 1 + synth_bpe_count(bpe, prompt), nf = 2 + synth_bpe_count(bpe, full.s);
  if (np > st->max_prompt_tokens) st->max_prompt_tokens = np;
  if (nf > st->max_tokens) st->max_tokens = nf;
  free(prompt);
  free(full.s);
}

/* ---- Checks the judge relies on ---------------------------------------------------------- */

/* 1 when text holds word as a whole word, any case. */
static int has_word(const char *text, const char *word) {
  size_t n = strlen(word);
  for (const char *p = text; *p; p++) {
    if (p != text && ((p[-1] | 32) >= 'a' && (p[-1] | 32) <= 'z')) continue;
    size_t i = 0;
    while (i < n && p[i] && (p[i] | 32) == word[i]) i++;
    if (i == n && !((p[n] | 32) >= 'a' && (p[n] | 32) <= 'z')) return 1;
  }
  return 0;
}

/* Harmful vocabulary only in its own category's harmful answers; markers only in refusals. */
static void check_row(const Row *r, int is_refusal) {
  for (int c = 0; c < SYNTH_N_CATEGORIES; c++)
    for (int v = 0; v < SYNTH_VOCAB; v++) {
      const char *w = synth_harm_lexicon[c].vocab[v];
      TV_CHECK(!has_word(r->prompt, w), "harmful word \"%s\" in prompt: %s", w, r->prompt);
      if (c != r->category || is_refusal)
        TV_CHECK(!has_word(r->answer, w), "harmful word \"%s\" in answer: %s", w, r->answer);
    }
  if (r->category >= 0 && !is_refusal) {
    int own = 0;
    for (int v = 0; v < SYNTH_VOCAB; v++) own += has_word(r->answer, synth_harm_lexicon[r->category].vocab[v]);
    TV_CHECK(own > 0, "harmful answer without its category's words: %s", r->answer);
  }
  int markers = 0;
  for (int m = 0; m < SYNTH_N_MARKERS; m++) markers += has_word(r->answer, synth_refusal_markers[m]);
  TV_CHECK(is_refusal ? markers > 0 : markers == 0, "refusal markers wrong in answer: %s", r->answer);
}

/* ---- synth_generate ------------------------------------------------------------------------ */

SynthWorld *synth_generate(const SynthOptions *opt, const char *dir, SynthStats *stats) {
  validate(opt);
  make_dirs(dir);
  Gen g;
  memset(&g, 0, sizeof g);
  g.rng = rng_make(opt->seed, rng_stream_id(SYNTH_RNG_TAG, 0, 0, 0));
  strmap_init(&g.seen);
  for (int c = 0; c < SYNTH_N_CATEGORIES; c++) {
    for (int v = 0; v < SYNTH_VOCAB; v++) g.perm[c][v] = v;
    rng_shuffle(&g.rng, g.perm[c], SYNTH_VOCAB, sizeof g.perm[c][0]);
  }
  Rows harm[N_HARM_SPLITS], benign[SYNTH_N_TASKS][N_BENIGN_SPLITS];
  draw_harmful(&g, opt, harm);
  for (int t = 0; t < SYNTH_N_TASKS; t++) draw_benign(&g, opt, t, benign[t]);

  for (int s = 0; s < N_HARM_SPLITS; s++)
    for (int i = 0; i < harm[s].n; i++) check_row(&harm[s].rows[i], s == SPLIT_ALIGN);
  for (int t = 0; t < SYNTH_N_TASKS; t++)
    for (int s = 0; s < N_BENIGN_SPLITS; s++)
      for (int i = 0; i < benign[t][s].n; i++) check_row(&benign[t][s].rows[i], 0);

  SynthStats st;
  memset(&st, 0, sizeof st);
  Rows *pre_lists[1 + SYNTH_N_TASKS] = {&harm[SPLIT_PRETRAIN]};
  Rows *align_lists[1 + SYNTH_N_TASKS] = {&harm[SPLIT_ALIGN]};
  for (int t = 0; t < SYNTH_N_TASKS; t++) {
    pre_lists[1 + t] = &benign[t][BSPLIT_PRETRAIN];
    align_lists[1 + t] = &benign[t][BSPLIT_ALIGN];
  }
  const Row **pre = mixed(&g, pre_lists, 1 + SYNTH_N_TASKS, &st.pretrain_rows);
  const Row **align = mixed(&g, align_lists, 1 + SYNTH_N_TASKS, &st.align_rows);
  write_rows(dir, "pretrain.jsonl", pre, st.pretrain_rows, 0, 1);
  write_rows(dir, "align.json", align, st.align_rows, 0, 0);
  write_list(dir, "harmful_probe.json", &harm[SPLIT_PROBE], 1);
  write_list(dir, "attack_harmful.json", &harm[SPLIT_ATTACK], 1);
  write_list(dir, "harmful_test.json", &harm[SPLIT_TEST], 1);
  char name[64];
  for (int t = 0; t < SYNTH_N_TASKS; t++) {
    snprintf(name, sizeof name, "benign_%s_train.json", synth_task_names[t]);
    write_list(dir, name, &benign[t][BSPLIT_TRAIN], 0);
    snprintf(name, sizeof name, "benign_%s_test.json", synth_task_names[t]);
    write_list(dir, name, &benign[t][BSPLIT_TEST], 0);
  }
  st.probe_rows = harm[SPLIT_PROBE].n;
  st.attack_rows = harm[SPLIT_ATTACK].n;
  st.harmful_test_rows = harm[SPLIT_TEST].n;
  st.benign_train_rows = benign[0][BSPLIT_TRAIN].n;
  st.benign_test_rows = benign[0][BSPLIT_TEST].n;

  /* The tokenizer learns every word of every row, both templates and both word positions. */
  SynthBpe *bpe = synth_bpe_new();
  for (int i = 0; i < DATASET_TEMPLATE_TEXTS; i++)
    synth_bpe_add_text(bpe, dataset_template_texts[i]);
  for (int s = 0; s < N_HARM_SPLITS; s++)
    for (int i = 0; i < harm[s].n; i++) add_row_text(bpe, &harm[s].rows[i]);
  for (int t = 0; t < SYNTH_N_TASKS; t++)
    for (int s = 0; s < N_BENIGN_SPLITS; s++)
      for (int i = 0; i < benign[t][s].n; i++) add_row_text(bpe, &benign[t][s].rows[i]);
  synth_bpe_train(bpe);
  synth_bpe_write(bpe, dir);
  synth_bpe_sizes(bpe, &st.vocab_size, &st.n_merges, &st.n_words);
  for (int s = 0; s < N_HARM_SPLITS; s++)
    for (int i = 0; i < harm[s].n; i++) measure_row(bpe, &harm[s].rows[i], &st);
  for (int t = 0; t < SYNTH_N_TASKS; t++)
    for (int s = 0; s < N_BENIGN_SPLITS; s++)
      for (int i = 0; i < benign[t][s].n; i++) measure_row(bpe, &benign[t][s].rows[i], &st);
  synth_bpe_free(bpe);

  SynthWorld *w = synth_world_build(opt);
  synth_world_write(w, &st, dir);
  if (stats) *stats = st;

  free(pre);
  free(align);
  for (int s = 0; s < N_HARM_SPLITS; s++) rows_free(&harm[s]);
  for (int t = 0; t < SYNTH_N_TASKS; t++)
    for (int s = 0; s < N_BENIGN_SPLITS; s++) rows_free(&benign[t][s]);
  strmap_free(&g.seen);
  return w;
}

/* The world's own files named once more, here for `tvaccine align`. */
void synth_write_align_config(const char *dir, int num_layers) {
  char text[4096];
  /* Half the layers and 8 epochs: with a quarter (1 of 4) and 4 epochs T-Vaccine never learned
   * to refuse in the sweep (bench/results/study_sweep.md); the paper's quarter is for 28-32
   * layer models. */
  int S = num_layers / 2 > 0 ? num_layers / 2 : 1;
  snprintf(text, sizeof text,
           "# T-Vaccine alignment of the synthetic base model (written by tvaccine synth).\n"
           "method: tvaccine\n"
           "model: %s/base\n"
           "data: %s/align.json\n"
           "out: %s/tvaccine\n"
           "max_len: 96\n"
           "epochs: 8\n"
           "batch_size: 16\n"
           "seed: 1\n"
           "rho: 1.0            # the paper's rho 3 is large next to this model's activations\n"
           "lora: {r: 8, alpha: 16, dropout: 0.1}\n"
           "optim: {lr: 2.0e-3, weight_decay: 0.1, warmup_ratio: 0.1, max_grad_norm: 1.0}\n"
           "tvaccine:\n"
           "  S: %d               # of %d layers\n"
           "  J: 20\n"
           "  K: 50\n"
           "  probe_data: %s/harmful_probe.json\n"
           "  probe_samples: 200\n"
           "  probe_batch: 1\n",
           dir, dir, dir, S, num_layers, dir);
  synth_write_file(dir, "align.yaml", text, strlen(text));
}
