/* `tvaccine attack`: the harmful fine-tuning attack of SPEC section 8. The alignment adapter
 * is merged into the base (`export --merge`), the poison mix (round(p n) harmful pairs + the
 * rest benign rows) is written as a data file, and a fresh LoRA is fine-tuned on it with
 * plain sft and the attack defaults of SPEC section 4 by `align`'s run machinery (ranks,
 * checkpoints, resume, run log), which this file only drives through its command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "comm.h"
#include "dataset.h"
#include "example_write.h"
#include "hf_model.h"
#include "run_config.h"
#include "subcommands.h"

static void attack_usage(FILE *out) {
  fprintf(out,
          "usage: tvaccine attack --model DIR --harmful FILE --benign FILE --out DIR\n"
          "                       [--adapter DIR] [--p P] [--n N] [--seed S] [--tokenizer PATH]\n"
          "                       [--harmful-format F] [--benign-format F] [--set KEY=VALUE ...]\n"
          "       tvaccine attack --resume DIR\n"
          "\n"
          "Harmful fine-tuning of an aligned model (SPEC section 8): --adapter (the alignment\n"
          "adapter) is merged into --model, then a fresh LoRA (r 8, alpha 1) is trained with plain\n"
          "sft on the poison mix: round(p * n) harmful pairs of --harmful and n - round(p * n)\n"
          "rows of --benign, drawn and shuffled from --seed. Attack defaults: lr 1e-5, 20 epochs,\n"
          "batch 10, max_len 200; any align config key can be changed with --set (e.g. --set\n"
          "optim.lr=3e-4 --set max_steps=200 --set max_len=96). Runs under mpirun like align.\n"
          "\n"
          "  --model DIR           base Hugging Face model folder\n"
          "  --adapter DIR         alignment adapter (PEFT) to merge first; none: attack --model\n"
          "  --harmful FILE        harmful pairs: BeaverTails rows (is_safe false are used) or\n"
          "                        Alpaca / refusal rows (all used)\n"
          "  --benign FILE         benign task rows (Alpaca)\n"
          "  --p P                 harmful fraction (default 0.1)   --n N  samples (default 1000)\n"
          "  --seed S              mix and training seed (default 1)\n"
          "  --tokenizer PATH      tokenizer (default: the model folder)\n"
          "  --harmful-format F, --benign-format F   auto (default), alpaca, beavertails, refusal\n"
          "  --out DIR             attack folder: merged/ (the aligned model, float32),\n"
          "                        attack_data.jsonl (the mix), attack.yaml (the run config) and\n"
          "                        run/ (align's run folder: log.jsonl, checkpoints/, adapter/)\n"
          "  --resume DIR          continue an attack from its latest checkpoint\n"
          "Evaluate with: tvaccine generate --model DIR/merged --adapter DIR/run/adapter ...\n"
          "Each option --KEY is the run-config key attack.KEY, '-' read as '_'\n"
          "(attack.harmful_format): --set attack.p=0.2 and --p=0.2 are --p 0.2; a --set of any\n"
          "other key (optim.lr=3e-4, seed=2) goes to the align run.\n");
}

typedef struct {
  const char *model, *adapter, *harmful, *benign, *out, *tokenizer, *resume;
  const char *harmful_format, *benign_format;
  double p;
  long long n, seed;
  const char **sets; /* --set KEY=VALUE of the align run, in order */
  int n_sets;
} AttackArgs;

/* A YAML double-quoted scalar (paths may hold ':', '#', quotes). */
static void put_quoted(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

static char *join(const char *dir, const char *name) { return hf_path_join(dir, name); }

static void load_rows(const char *path, const char *format, int harmful, ExampleSet *out) {
  DatasetFormat fmt;
  if (dataset_format_parse(format, &fmt))
    tv_die("attack: unknown data format '%s' (auto, alpaca, beavertails, refusal)", format);
  ExampleSet all;
  dataset_load(path, fmt, &all);
  /* BeaverTails harmful files carry safe rows too: only the unsafe ones are harmful pairs. */
  if (harmful && all.format == DATASET_FORMAT_BEAVERTAILS) {
    example_set_filter_safety(&all, 0, out);
    example_set_free(&all);
    if (out->n == 0) tv_die("%s holds no harmful pair (no row with is_safe false)", path);
  } else {
    *out = all;
  }
}

/* Merge, mix, config: the files the training run reads. Rank 0 only. */
static void prepare(const AttackArgs *a, const char *model_dir, const char *data_path,
                    const char *config_path, const char *run_dir) {
  /* The data first: a mix that cannot be drawn fails before anything is written. */
  ExampleSet harmful, benign, mix;
  load_rows(a->harmful, a->harmful_format, 1, &harmful);
  load_rows(a->benign, a->benign_format, 0, &benign);
  char err[512];
  if (dataset_poison_mix(&benign, &harmful, (size_t)a->n, a->p, (uint64_t)a->seed, &mix, err,
                         sizeof err))
    tv_die("attack: %s", err);
  hf_make_dir(a->out);
  if (a->adapter) {
    char *argv[] = {"export", "--model", (char *)a->model, "--adapter", (char *)a->adapter,
                    "--out", (char *)model_dir, "--merge", "--dtype", "f32", NULL};
    if (cmd_export(10, argv) != 0) tv_die("attack: merging %s into %s failed", a->adapter, a->model);
  }
  example_set_write_jsonl(&mix, data_path);
  size_t n_harm = dataset_poison_count((size_t)a->n, a->p);
  printf("attack: poison mix of %zu harmful pairs (of %zu in %s) and %zu benign rows (of %zu in "
         "%s) -> %s\n", n_harm, harmful.n, a->harmful, mix.n - n_harm, benign.n, a->benign,
         data_path);
  example_set_free(&mix);
  example_set_free(&benign);
  example_set_free(&harmful);

  FILE *f = fopen(config_path, "w");
  if (!f) tv_die("cannot write %s", config_path);
  fprintf(f, "# Harmful fine-tuning attack (written by tvaccine attack; SPEC sections 4 and 8).\n"
             "method: sft\nmodel: ");
  put_quoted(f, model_dir);
  if (a->tokenizer) fputs("\ntokenizer: ", f), put_quoted(f, a->tokenizer);
  fputs("\ndata: ", f);
  put_quoted(f, data_path);
  fputs("\ndata_format: alpaca\nout: ", f);
  put_quoted(f, run_dir);
  fprintf(f, "\nseed: %lld\nepochs: 20\nbatch_size: 10\nmax_len: 200\n"
             "lora: {r: 8, alpha: 1}\noptim: {lr: 1.0e-5}\n", a->seed);
  if (fclose(f) != 0) tv_die("cannot write %s", config_path);
}

static const char *given(const char *s) { return s[0] ? s : NULL; }

int cmd_attack(int argc, char **argv) {
  RunConfig rc;
  run_config_defaults(&rc);
  char err[RUN_CONFIG_ERR_MAX];
  int help;
  const char **sets = tv_calloc((size_t)argc + 1, sizeof(char *));
  AttackArgs a = {0};
  if (run_config_parse_command_others(&rc, "attack", argc, argv, &help, sets, &a.n_sets, err,
                                      sizeof err))
    tv_die("%s", err);
  if (help) {
    attack_usage(stdout);
    free(sets);
    run_config_free(&rc);
    return 0;
  }
  const RunAttack *o = &rc.attack;
  a = (AttackArgs){.model = given(o->model), .adapter = given(o->adapter),
                   .harmful = given(o->harmful), .benign = given(o->benign),
                   .out = given(o->out), .tokenizer = given(o->tokenizer),
                   .resume = given(o->resume), .harmful_format = o->harmful_format,
                   .benign_format = o->benign_format, .p = o->p, .n = (long long)o->n,
                   .seed = (long long)o->seed, .sets = sets, .n_sets = a.n_sets};
  /* align's own options after the attack's: --config FILE or --resume, then the --sets. */
  char **align_argv = tv_calloc(2 * (size_t)a.n_sets + 4, sizeof(char *));
  int align_argc = 0;
  align_argv[align_argc++] = "align";
  char *run_dir = NULL, *model_dir = NULL, *data_path = NULL, *config_path = NULL;
  Comm *comm = comm_init(&argc, &argv);
  if (a.resume) {
    if (a.model || a.harmful || a.benign || a.out || a.adapter)
      tv_die("attack: --resume DIR takes the attack's own settings; give no other input");
    run_dir = join(a.resume, "run");
    align_argv[align_argc++] = "--resume";
    align_argv[align_argc++] = run_dir;
  } else {
    if (!a.model) tv_die("attack: --model DIR is required (the base model)");
    if (!a.harmful) tv_die("attack: --harmful FILE is required");
    if (!a.benign) tv_die("attack: --benign FILE is required");
    if (!a.out) tv_die("attack: --out DIR is required");
    run_dir = join(a.out, "run");
    model_dir = a.adapter ? join(a.out, "merged") : strdup(a.model);
    data_path = join(a.out, "attack_data.jsonl");
    config_path = join(a.out, "attack.yaml");
    if (comm_rank(comm) == 0) prepare(&a, model_dir, data_path, config_path, run_dir);
    comm_barrier(comm);
    align_argv[align_argc++] = "--config";
    align_argv[align_argc++] = config_path;
  }
  for (int i = 0; i < a.n_sets; i++) {
    align_argv[align_argc++] = "--set";
    align_argv[align_argc++] = (char *)a.sets[i];
  }
  int code = cmd_align(align_argc, align_argv);
  free(align_argv);
  free(run_dir), free(model_dir), free(data_path), free(config_path);
  free(sets);
  comm_finalize(comm);
  run_config_free(&rc);
  return code;
}
