/* `tvaccine generate`: greedy answers of a Hugging Face model (optionally with a PEFT
 * adapter merged in) to the prompts of a file, formatted with the training Alpaca template,
 * written as JSON Lines. Runs on one process or as a pipeline over MPI ranks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "comm.h"
#include "dataset.h"
#include "generate.h"
#include "hf_model.h"
#include "model.h"
#include "peft.h"
#include "prompts.h"
#include "run_config.h"
#include "runlog.h"
#include "run_setup.h"
#include "subcommands.h"
#include "tokenizer.h"

static void generate_usage(FILE *out) {
  fprintf(out,
          "usage: tvaccine generate --model DIR --prompts FILE --out FILE [--adapter DIR]\n"
          "                         [--tokenizer PATH] [--format F] [--max-prompts N]\n"
          "                         [--max-new-tokens N] [--batch N] [--threads N] [--no-cache]\n"
          "                         [--set KEY=VALUE ...]\n"
          "\n"
          "Greedy decoding (argmax at every step) of each prompt until an EOS token or the token\n"
          "limit. Prompts are formatted with the Alpaca template exactly as training formats\n"
          "them and encoded with the tokenizer's BOS rule. Under mpirun the decoder layers are\n"
          "split into pipeline stages, one per rank, as in align.\n"
          "\n"
          "  --model DIR          Hugging Face model folder (config.json + safetensors)\n"
          "  --adapter DIR        PEFT LoRA folder, merged into the weights before decoding\n"
          "  --tokenizer PATH     tokenizer.json or its folder (default: --model)\n"
          "  --prompts FILE       prompts: Alpaca, BeaverTails or refusal rows (JSON or JSON\n"
          "                       Lines), or plain text with one instruction per line\n"
          "  --format F           auto (default), alpaca, beavertails, refusal or plain\n"
          "  --max-prompts N      the first N prompts only (default: all)\n"
          "  --out FILE           JSON Lines, one object per prompt in file order: index,\n"
          "                       instruction, input, reference (the row's own answer), category,\n"
          "                       is_safe (1, 0, or -1 unknown), answer, new_tokens, stop (\"eos\" or\n"
          "                       \"length\")\n"
          "  --max-new-tokens N   token limit per answer (default 128, as for the harmful score)\n"
          "  --batch N            sequences decoded together (default 16)\n"
          "  --threads N          CPU threads per rank (default: all cores)\n"
          "  --no-cache           recompute the whole sequence for every token instead of using\n"
          "                       the KV cache (a slow reference; same tokens)\n"
          "EOS: the ids of config.json's eos_token_id and the tokenizer's EOS.\n"
          "Each option --KEY is the run-config key generate.KEY, '-' read as '_'\n"
          "(generate.max_new_tokens; generate.no_cache is true or false): --set\n"
          "generate.batch=4 and --batch=4 are --batch 4.\n");
}

typedef struct {
  const char *model, *adapter, *tokenizer, *prompts, *format, *out;
  long long max_prompts;
  int max_new, batch, threads, no_cache;
} GenerateArgs;

static const char *given(const char *s) { return s[0] ? s : NULL; }

/* The options through the key table (generate.*); rc owns the strings a points to. */
static GenerateArgs parse_args(RunConfig *rc, int argc, char **argv, int *exit_code) {
  char err[RUN_CONFIG_ERR_MAX];
  int help;
  *exit_code = -1;
  if (run_config_parse_command(rc, "generate", argc, argv, &help, err, sizeof err))
    tv_die("%s", err);
  const RunGenerate *g = &rc->generate;
  GenerateArgs a = {.model = given(g->model), .adapter = given(g->adapter),
                    .tokenizer = given(g->tokenizer), .prompts = given(g->prompts),
                    .format = g->format, .out = given(g->out), .max_prompts = g->max_prompts,
                    .max_new = g->max_new_tokens, .batch = g->batch, .threads = g->threads,
                    .no_cache = g->no_cache};
  if (help) {
    generate_usage(stdout);
    *exit_code = 0;
    return a;
  }
  if (!a.model) tv_die("generate: --model DIR is required");
  if (!a.prompts) tv_die("generate: --prompts FILE is required");
  if (!a.out) tv_die("generate: --out FILE is required");
  if (prompt_format_check(a.format))
    tv_die("generate: --format expects auto, alpaca, beavertails, refusal or plain, got '%s'",
           a.format);
  return a;
}

/* Prompt texts through the training template and the tokenizer's BOS rule. */
static void encode_prompts(const Tokenizer *tok, const ExampleSet *set, int32_t **ids,
                           size_t **offset) {
  size_t cap = 1024, used = 0;
  *ids = tv_malloc(cap * sizeof(int32_t));
  *offset = tv_malloc((set->n + 1) * sizeof(size_t));
  for (size_t i = 0; i < set->n; i++) {
    char *text = dataset_prompt(&set->items[i]);
    int32_t *p = NULL;
    int n = tokenizer_encode(tok, text, strlen(text), 1, &p);
    if (n < 1) tv_die("%s: prompt %zu encodes to no token", set->name, i);
    while (used + (size_t)n > cap) cap *= 2, *ids = realloc(*ids, cap * sizeof(int32_t));
    TV_CHECK(*ids, "out of memory for %zu prompt tokens", cap);
    (*offset)[i] = used;
    memcpy(*ids + used, p, (size_t)n * sizeof(int32_t));
    used += (size_t)n;
    free(p);
    free(text);
  }
  (*offset)[set->n] = used;
}

/* EOS ids: config.json's list plus the tokenizer's own EOS when it is not in it. */
static int collect_eos(const HfConfig *hc, const Tokenizer *tok, int32_t *eos) {
  int n = 0;
  for (int i = 0; i < hc->n_eos; i++) eos[n++] = hc->eos_ids[i];
  int te = tokenizer_eos_id(tok), known = te < 0;
  for (int i = 0; i < n; i++) known |= eos[i] == te;
  if (!known) eos[n++] = te;
  return n;
}

typedef struct {
  double t0;
} Progress;

static void print_progress(void *ctx, size_t done, size_t total) {
  Progress *p = ctx;
  fprintf(stderr, "generate: %zu/%zu prompts (%.1f s)\n", done, total, now_s() - p->t0);
}

static void write_answers(RunLog *log, const ExampleSet *set, const Tokenizer *tok,
                          const int32_t *out, const int *len, int max_new, const int32_t *eos,
                          int n_eos) {
  for (size_t i = 0; i < set->n; i++) {
    const Example *e = &set->items[i];
    const int32_t *t = out + i * (size_t)max_new;
    int ended = 0;
    for (int k = 0; k < n_eos && len[i] > 0; k++) ended |= t[len[i] - 1] == eos[k];
    char *answer = tokenizer_decode(tok, t, len[i], 1);
    runlog_begin(log);
    runlog_int(log, "index", (int64_t)i);
    runlog_str(log, "instruction", e->instruction);
    runlog_str(log, "input", e->input);
    runlog_str(log, "reference", e->output);
    runlog_str(log, "category", e->category);
    runlog_int(log, "is_safe", e->is_safe);
    runlog_str(log, "answer", answer);
    runlog_int(log, "new_tokens", len[i]);
    runlog_str(log, "stop", ended ? "eos" : "length");
    runlog_end(log);
    free(answer);
  }
  runlog_close(log);
}

int cmd_generate(int argc, char **argv) {
  int code;
  RunConfig rc;
  run_config_defaults(&rc);
  GenerateArgs a = parse_args(&rc, argc, argv, &code);
  if (code >= 0) return run_config_free(&rc), code;
  Comm *comm = comm_init(&argc, &argv);
  int rank = comm_rank(comm), size = comm_size(comm);
  HfModel *model = hf_model_open(a.model);
  const HfConfig *hc = hf_model_config(model);
  Tokenizer *tok = tokenizer_load(a.tokenizer ? a.tokenizer : a.model);
  if (tokenizer_vocab_size(tok) > hc->cfg.vocab_size)
    tv_die("%s: the tokenizer has %d ids but the model's vocab_size is %d",
           a.tokenizer ? a.tokenizer : a.model, tokenizer_vocab_size(tok), hc->cfg.vocab_size);
  ExampleSet set;
  prompts_load(a.prompts, a.format, (size_t)a.max_prompts, &set);
  int32_t *ids;
  size_t *offset;
  encode_prompts(tok, &set, &ids, &offset);
  int32_t eos[HF_MAX_EOS + 1];
  int n_eos = collect_eos(hc, tok, eos);

  Progress prog = {.t0 = now_s()};
  GenerateOptions o = {.max_new_tokens = a.max_new, .eos_ids = eos, .n_eos = n_eos,
                       .batch_size = a.batch, .use_cache = !a.no_cache,
                       .on_batch = print_progress, .ctx = &prog};
  PromptSet ps = {.n = set.n, .ids = ids, .offset = offset};
  int l0, l1;
  comm_split_layers(hc->cfg.num_layers, size, rank, &l0, &l1);
  LoraConfig lc = lora_config_default();
  if (a.adapter) lc = peft_read_config(a.adapter, hc->cfg.num_layers).lora;
  lc.dropout = 0.0f; /* inference */
  Backend *be = run_setup_backend(BACKEND_CPU, 0, a.threads);
  /* The KV-cache decoder keeps its own state: the stage needs no activation room then. The
   * CPU keeps f32 weights (a bf16 file widens exactly; the merge is not rounded again). */
  Stage *s = a.no_cache ? run_setup_hf_stage(be, model, &lc, l0, l1, a.batch,
                                             generate_context_length(&ps, &o), TV_F32)
                        : run_setup_hf_stage(be, model, &lc, l0, l1, 1, 1, TV_F32);
  if (a.adapter) peft_load(a.adapter, &hc->cfg, be, stage_lora(s));
  stage_merge_lora(s);

  /* Opened before the long part, so a bad path fails first. */
  RunLog *log = rank == 0 ? runlog_open(a.out, 0) : NULL;
  int32_t *out = tv_malloc(set.n * (size_t)a.max_new * sizeof(int32_t));
  int *len = tv_malloc(set.n * sizeof(int));
  if (rank == 0)
    fprintf(stderr, "generate: %zu prompts, up to %d new tokens, batch %d, %d rank%s%s\n", set.n,
            a.max_new, a.batch, size, size > 1 ? "s" : "", a.adapter ? ", adapter merged" : "");
  double t0 = now_s();
  generate_greedy(comm, s, &o, &ps, out, len);
  double secs = now_s() - t0;
  if (rank == 0) {
    write_answers(log, &set, tok, out, len, a.max_new, eos, n_eos);
    size_t total = 0, stopped = 0;
    for (size_t i = 0; i < set.n; i++) {
      total += (size_t)len[i];
      stopped += len[i] < a.max_new;
    }
    printf("generate: %zu answers (%zu ended before the limit), %zu new tokens in %.2f s "
           "(%.1f tokens/s) -> %s\n", set.n, stopped, total, secs, secs > 0 ? total / secs : 0.0,
           a.out);
  }
  free(len);
  free(out);
  stage_destroy(s);
  backend_destroy(be);
  free(ids);
  free(offset);
  example_set_free(&set);
  tokenizer_free(tok);
  hf_model_close(model);
  comm_finalize(comm);
  run_config_free(&rc);
  return 0;
}
