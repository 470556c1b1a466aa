/* The YAML run config of `tvaccine align` (and later attack/eval): defaults, loading a file
 * over them with libcyaml, --set key=value overrides, validation, and writing it back out. */
#ifndef TV_RUN_CONFIG_H
#define TV_RUN_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "dataset.h"
#include "lora.h"
#include "optim.h"
#include "schedule.h"
#include "tensor.h"
#include "vaccine.h"

/* Every function that can fail takes (err, errlen) and returns NULL on success or err holding
 * ONE line that names the key (dotted path, e.g. "tvaccine.S") and, for a file, the file and
 * line. RUN_CONFIG_ERR_MAX bytes hold every message (a very long file path is cut, never
 * overrun). libcyaml's own log never reaches stderr: it is captured and turned into that line. */
#define RUN_CONFIG_ERR_MAX 512

/* How the Stage stores frozen base matrices (`weight_dtype`): auto = bf16 on cuda, f32 on
 * cpu (run_config_weight_dtype resolves it). */
typedef enum { WEIGHT_DTYPE_AUTO = 0, WEIGHT_DTYPE_F32 = 1, WEIGHT_DTYPE_BF16 = 2 } WeightDtypeChoice;
extern const char *const weight_dtype_names[3]; /* auto, f32, bf16 */
typedef struct {
  int S;             /* layers activated per resample */
  int J;             /* resample interval (steps) */
  int K;             /* probe interval (steps) */
  char *probe_data;  /* harmful probe set; "" = the command's default */
  int probe_samples; /* pairs of the probe set used */
  int probe_batch;   /* probe batch size */
  FreezeScope freeze_scope;
  int *layers; /* [n_layers] fixed layer set that bypasses sampling; none = sample */
  int n_layers;
} RunTVaccine;

/* How the ranks share a step (results do not depend on it). */
typedef struct {
  int micro_batches;         /* split each batch into m micro-batches; 0 = micro_batch decides */
  PipelineSchedule schedule; /* 1f1b (default) or gpipe */
  LayerSplit split;          /* decoder layers over ranks: cost (default) or even */
  int data_parallel;         /* D pipeline replicas, each taking 1/D of every batch */
  int *stages;               /* [n_stages] layers per pipeline stage; none = split decides */
  int n_stages;
} RunDist;
/* The options of the subcommands besides align, one section each: every option --KEY of
 * `tvaccine CMD` is the key CMD.KEY ('-' read as '_'), settable in YAML and with --set
 * (run_config_parse_command). Defaults are each command's own; "" = not given. */
/* The whole study of `tvaccine demo` (launch/demo.c): world, alignment, attack, evaluation. */
typedef struct {
  char *out;  /* the demo's folder */
  uint64_t seed;
  int quick, fresh; /* booleans: tiny smoke-test settings; redo every phase */
  int threads;      /* per phase; 0 = all cores */
  int layers, width, heads, kv_heads, ffn, pretrain_epochs; /* the world's base model */
  int align_steps;
  double align_lr, rho;
  int tvaccine_s, tvaccine_j, tvaccine_k;
  double attack_lr;
  int attack_steps, attack_n;
  char *p;                /* comma-separated harmful fractions of the attacks */
  char *task, *second_task; /* the attack's benign task (FA) and a second benign task */
  int eval_prompts, max_new_tokens;
} RunDemo;

typedef struct {
  char *out; /* the world folder (required) */
  uint64_t seed;
  int layers, width, heads, kv_heads, ffn, epochs, batch, threads;
  int64_t steps; /* -1: epochs decide; 0: keep the random initial weights */
  double lr;
} RunSynth;

typedef struct {
  int config; /* index into bench_configs: 0 = M, 1 = S */
  int steps, warmup, threads;
  char *reference; /* command of a reference step; "" = none */
  int methods;     /* boolean */
  int tvaccine_layers;
  int ranks;         /* boolean: pipeline steps on the ranks mpirun started */
  int micro_batches; /* micro-batches of --ranks */
  PipelineSchedule schedule;
  int data_parallel; /* --ranks: the ranks as D pipeline replicas */
  ActivationPolicy activations; /* T-Vaccine's frozen layers in --ranks */
  int activation_budget_mib;    /* with activations auto; 0 = no limit */
} RunBench;

typedef struct {
  char *model, *adapter, *out; /* required */
  int merge;                   /* boolean */
  char *dtype;      /* f32, f16, bf16 (or float32, ...); "" = the command's default */
  char *shard_size; /* e.g. 5GB, 500MB, 2GiB or bytes */
  int threads;
} RunExport;

typedef struct {
  char *model, *prompts, *out; /* required */
  char *adapter, *tokenizer;   /* "" = none / the model folder */
  char *format;                /* auto, alpaca, beavertails, refusal or plain */
  int64_t max_prompts;         /* 0 = all */
  int max_new_tokens, batch, threads;
  int no_cache; /* boolean */
} RunGenerate;

typedef struct {
  char *answers; /* required */
  char *judge, *task, *world, *out, *summary, *judge_tokenizer; /* "" = not given */
  int judge_batch, threads;
} RunEval;

typedef struct {
  char *model, *harmful, *benign, *out; /* required for a new attack */
  char *adapter, *tokenizer, *resume;   /* "" = none / the model folder / a new attack */
  char *harmful_format, *benign_format; /* auto, alpaca, beavertails or refusal */
  double p;                             /* harmful fraction of the mix */
  int64_t n;                            /* samples in the mix */
  uint64_t seed;
} RunAttack;

typedef struct {
  char *model;  /* a folder with config.json (required) */
  int ranks;    /* pipeline stages (required, >= 1) */
  char *gpu_mem; /* memory per GPU, e.g. 24GB (required) */
  char *config; /* run config for method, LoRA, batch, ...; "" = defaults */
  int batch;    /* rows per batch; 0 = the run config's batch_size */
  TvDtype weight_dtype; /* base weights: bf16 (the CUDA design) or f32 */
  int reserve_mib;      /* runtime reserve per GPU */
} RunPlan;

typedef struct {
  Method method;
  char *model;     /* Hugging Face model folder (required) */
  char *tokenizer; /* "" = the model folder; see run_config_tokenizer */
  char *data;      /* alignment data, JSON array or JSON Lines (required) */
  DatasetFormat data_format;
  int max_len; /* tokens per sequence */
  int epochs;
  int64_t max_steps; /* 0 = epochs * ceil(samples / batch_size) */
  int batch_size;
  int micro_batch; /* 0 = batch_size (one micro-batch) */
  uint64_t seed;
  int threads;        /* 0 = all cores (device: cpu) */
  BackendKind device; /* cpu | cuda: where the math runs (one GPU per rank) */
  WeightDtypeChoice weight_dtype; /* frozen base matrices: auto (bf16 on cuda) | f32 | bf16 */
  char *out;          /* output folder (required) */
  int64_t save_every; /* checkpoint every N steps; 0 = only at the end */
  int64_t log_every;
  char *init_adapter; /* PEFT folder to start LoRA from; "" = fresh init */
  char *resume;       /* checkpoint file or run folder to continue; "" = new run */
  double rho;         /* perturbation intensity (vaccine, tvaccine) */
  int max_rows;       /* keep the first N usable alignment rows; 0 = all */
  ActivationPolicy activations;
  int activation_budget_mib; /* auto: layer records a rank may keep (micro-batches held at once); 0 = no limit */
  LoraConfig lora;
  OptimConfig optim; /* total_steps is not a config key: it stays 0 until the trainer
                        knows the data size (run_config_total_steps) */
  RunTVaccine tvaccine;
  RunDist dist;
  RunDemo demo;
  RunSynth synth;
  RunBench bench;
  RunExport export;
  RunGenerate generate;
  RunEval eval;
  RunAttack attack;
  RunPlan plan;
} RunConfig;

/* Every key at its default (the key table in run_config.c). Owns its strings. */
void run_config_defaults(RunConfig *c);
void run_config_free(RunConfig *c); /* leaves *c zeroed; run_config_defaults makes it usable */
void run_config_copy(RunConfig *dst, const RunConfig *src); /* deep; dst is overwritten */

/* Reads a YAML file over *c: keys present replace values, absent keys keep theirs. Unknown,
 * duplicate or mis-cased keys, wrong types and out-of-range values are errors. On error *c
 * is left exactly as it was. */
const char *run_config_load(RunConfig *c, const char *path, char *err, size_t errlen);
/* The same for YAML text held in memory; origin names it in errors ("checkpoint x.h5"). */
const char *run_config_load_text(RunConfig *c, const char *text, size_t len, const char *origin,
                                 char *err, size_t errlen);

/* One --set override, "key=value" with a dotted key: tvaccine.S=2, model=/m,
 * lora.target_modules=[q_proj,v_proj], tvaccine.layers=[1,5], lora={r: 4, alpha: 2}.
 * A value starting with '[' or '{' is YAML flow syntax; anything else is taken literally as
 * one scalar. Same type rules and messages as a file; *c unchanged on error. */
const char *run_config_set(RunConfig *c, const char *assignment, char *err, size_t errlen);

/* The options of subcommand `section` (demo, synth, bench, export, generate, eval) over *c,
 * through the key table: --KEY VALUE and --KEY=VALUE set section.KEY ('-' read as '_'); a boolean key may be
 * given bare (--merge); --set KEY=VALUE sets a key of that section, dotted or not
 * (--set synth.layers=2, --set layers=2). argv[0] is the command. *help is set to 1 by
 * --help or -h. An unknown option, a missing value, a stray argument or a bad value: err holds
 * one line naming it. */
const char *run_config_parse_command(RunConfig *c, const char *section, int argc, char **argv,
                                     int *help, char *err, size_t errlen);
/* The same, but --set KEY=VALUE sets the section's key only when dotted (attack.p=0.2);
 * any other is kept, in order, in others[*n_others] (room for argc entries; pointers into
 * argv) instead of refused: attack passes those to the align run it starts. */
const char *run_config_parse_command_others(RunConfig *c, const char *section, int argc,
                                            char **argv, int *help, const char **others,
                                            int *n_others, char *err, size_t errlen);
/* The keys of a section, "section.a, section.b, ..." (for --help and errors). */
void run_config_section_keys(const char *section, char *buf, size_t n);

/* Every range, enum and cross-key rule, and the required keys (model, data, out). Does not
 * look at the file system: whether paths exist is checked by the command that opens them. */
const char *run_config_validate(const RunConfig *c, char *err, size_t errlen);

/* Every key as YAML (malloc'd, caller frees) that loads back to the same config bit for bit;
 * written to the run folder and into checkpoints. */
char *run_config_to_yaml(const RunConfig *c);

/* Resuming: NULL when `now` differs from the checkpoint's config `saved` only in keys that
 * may change on resume (run_config_may_change_on_resume), else one line naming the first
 * key that differs, with both values. */
const char *run_config_check_resume(const RunConfig *saved, const RunConfig *now, char *err,
                                    size_t errlen);
/* out, resume, save_every, log_every, threads, init_adapter (unused when resuming),
 * max_steps and epochs (only to lengthen the run: the caller checks), and the input paths
 * model, tokenizer, data, tvaccine.probe_data (their contents are compared by digest). */
int run_config_may_change_on_resume(const char *key);

/* The tokenizer folder: tokenizer, or the model folder when tokenizer is "". */
const char *run_config_tokenizer(const RunConfig *c);
/* The base weights' dtype of a run: weight_dtype, with auto = bf16 on device cuda, f32 on cpu. */
TvDtype run_config_weight_dtype(const RunConfig *c);
/* Optimizer steps of the run: max_steps, or epochs * ceil(n_samples / batch_size). */
int64_t run_config_total_steps(const RunConfig *c, int64_t n_samples);
/* Effective micro-batch rows: ceil(batch_size / dist.micro_batches), else micro_batch, else
 * batch_size. */
int run_config_micro_batch(const RunConfig *c);

#endif
