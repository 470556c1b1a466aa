/* The run config (see run_config.h): the key table, defaults, copy and free, and the derived
 * settings. Each key's values (parsing, range checks, validation, the YAML writer) are in
 * run_config_value.c; reading YAML is in run_config_load.c. */
#include "run_config.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "run_config_internal.h"

/* ---- the keys ------------------------------------------------------------------------ */

const char *const rc_sections[RC_N_SECTIONS] = {"lora",  "optim",  "tvaccine", "dist",
                                                 "demo",  "synth",  "bench",    "export",
                                                 "generate", "eval", "attack", "plan"};

static const char *const bench_config_names[] = {"M", "S"}; /* launch/bench_config.c order */
static const char *const plan_dtype_names[] = {"f32", "bf16"}; /* TvDtype order */
const char *const weight_dtype_names[3] = {"auto", "f32", "bf16"}; /* WeightDtypeChoice order */
_Static_assert(TV_F32 == 0 && TV_BF16 == 1, "plan.weight_dtype names follow TvDtype");

/* Enums are read and written through an int. */
_Static_assert(sizeof(Method) == sizeof(int) && sizeof(DatasetFormat) == sizeof(int) &&
                   sizeof(FreezeScope) == sizeof(int) && sizeof(ActivationPolicy) == sizeof(int) &&
                   sizeof(BackendKind) == sizeof(int) && sizeof(PipelineSchedule) == sizeof(int) &&
                   sizeof(LayerSplit) == sizeof(int) && sizeof(TvDtype) == sizeof(int) &&
                   sizeof(WeightDtypeChoice) == sizeof(int),
               "enums must be int-sized");

/* clang-format off */
#define OFF(m) offsetof(RunConfig, m)
#define STR(k, m) {.name = k, .kind = K_STR, .off = OFF(m)}
#define ENUM(k, m, n) \
  {.name = k, .kind = K_ENUM, .off = OFF(m), .names = n, .n_names = sizeof(n) / sizeof(n[0])}
#define INT(k, m, lo, hi) {.name = k, .kind = K_INT, .off = OFF(m), .ilo = lo, .ihi = hi}
#define I64(k, m, lo, hi) {.name = k, .kind = K_I64, .off = OFF(m), .ilo = lo, .ihi = hi}
/* FLT/DBL(key, member, bounds): bounds is a REAL_BOUNDS (core/bounds.h), the owner's where
 * the setting has one (optim.h). */
#define FLT(k, m, b) {.name = k, .kind = K_FLOAT, .off = OFF(m), .bounds = b}
#define DBL(k, m, b) {.name = k, .kind = K_DOUBLE, .off = OFF(m), .bounds = b}
#define BOOL(k, m) {.name = k, .kind = K_BOOL, .off = OFF(m)}
#define U64(k, m) {.name = k, .kind = K_U64, .off = OFF(m)}
/* A list of ints (member m, its count member cnt), entries in [lo, hi]; distinct: layer
 * indices, each listed once. */
#define INTLIST(k, m, cnt, lo, hi, dist)                                                   \
  {.name = k, .kind = K_LAYERS, .off = OFF(m), .count_off = OFF(cnt), .ilo = lo, .ihi = hi, \
   .distinct = dist}
#define BIG INT64_C(1000000000000) /* step counts: far beyond any run, far below overflow */

/* Order: top-level keys, then each section's keys together (the writer relies on it). */
const RcKey rc_keys[] = {
    ENUM("method", method, method_names),
    STR("model", model),
    STR("tokenizer", tokenizer),
    STR("data", data),
    ENUM("data_format", data_format, dataset_format_names),
    INT("max_len", max_len, 8, 65536),
    INT("epochs", epochs, 1, 1000000),
    I64("max_steps", max_steps, 0, BIG),
    INT("batch_size", batch_size, 1, 1000000),
    INT("micro_batch", micro_batch, 0, 1000000),
    {.name = "seed", .kind = K_U64, .off = OFF(seed)},
    INT("threads", threads, 0, 4096),
    ENUM("device", device, backend_kind_names),
    ENUM("weight_dtype", weight_dtype, weight_dtype_names),
    STR("out", out),
    I64("save_every", save_every, 0, BIG),
    I64("log_every", log_every, 1, BIG),
    STR("init_adapter", init_adapter),
    STR("resume", resume),
    DBL("rho", rho, REAL_BOUNDS(0, 0, -1, 0)),
    INT("max_rows", max_rows, 0, INT_MAX),
    ENUM("activations", activations, activation_policy_names),
    INT("activation_budget_mib", activation_budget_mib, 0, INT_MAX),
    INT("lora.r", lora.r, 1, 65536),
    FLT("lora.alpha", lora.alpha, REAL_BOUNDS(0, 1, -1, 0)),
    FLT("lora.dropout", lora.dropout, REAL_BOUNDS(0, 0, 1, 1)),
    {.name = "lora.target_modules", .kind = K_MODULES, .off = OFF(lora.target_mask)},
    FLT("optim.lr", optim.lr, OPTIM_LR_BOUNDS),
    FLT("optim.weight_decay", optim.weight_decay, OPTIM_WEIGHT_DECAY_BOUNDS),
    DBL("optim.warmup_ratio", optim.warmup_ratio, OPTIM_WARMUP_RATIO_BOUNDS),
    FLT("optim.max_grad_norm", optim.max_grad_norm, OPTIM_MAX_GRAD_NORM_BOUNDS), /* 0 = no clipping */
    DBL("optim.adam_beta1", optim.beta1, OPTIM_BETA_BOUNDS),
    DBL("optim.adam_beta2", optim.beta2, OPTIM_BETA_BOUNDS),
    FLT("optim.adam_epsilon", optim.eps, OPTIM_EPSILON_BOUNDS),
    INT("tvaccine.S", tvaccine.S, 1, 65536),
    INT("tvaccine.J", tvaccine.J, 1, INT_MAX),
    INT("tvaccine.K", tvaccine.K, 1, INT_MAX),
    STR("tvaccine.probe_data", tvaccine.probe_data),
    INT("tvaccine.probe_samples", tvaccine.probe_samples, 1, INT_MAX),
    INT("tvaccine.probe_batch", tvaccine.probe_batch, 1, 1000000),
    ENUM("tvaccine.freeze_scope", tvaccine.freeze_scope, freeze_scope_names),
    INTLIST("tvaccine.layers", tvaccine.layers, tvaccine.n_layers, 0, 65535, 1),
    INT("dist.micro_batches", dist.micro_batches, 0, 1000000),
    ENUM("dist.schedule", dist.schedule, schedule_names),
    ENUM("dist.split", dist.split, layer_split_names),
    INT("dist.data_parallel", dist.data_parallel, 1, 65536),
    INTLIST("dist.stages", dist.stages, dist.n_stages, 1, 65535, 0),
    /* The other subcommands' options (run_config_parse_command), one section each. */
    STR("demo.out", demo.out),
    U64("demo.seed", demo.seed),
    BOOL("demo.quick", demo.quick),
    BOOL("demo.fresh", demo.fresh),
    INT("demo.threads", demo.threads, 0, 1024),
    INT("demo.layers", demo.layers, 1, 64),
    INT("demo.width", demo.width, 8, 4096),
    INT("demo.heads", demo.heads, 1, 64),
    INT("demo.kv_heads", demo.kv_heads, 1, 64),
    INT("demo.ffn", demo.ffn, 8, 16384),
    INT("demo.pretrain_epochs", demo.pretrain_epochs, 1, 1000),
    INT("demo.align_steps", demo.align_steps, 1, 10000000),
    DBL("demo.align_lr", demo.align_lr, OPTIM_LR_BOUNDS),
    DBL("demo.rho", demo.rho, REAL_BOUNDS(0, 0, -1, 0)),
    INT("demo.tvaccine_s", demo.tvaccine_s, 1, 65536),
    INT("demo.tvaccine_j", demo.tvaccine_j, 1, INT_MAX),
    INT("demo.tvaccine_k", demo.tvaccine_k, 1, INT_MAX),
    DBL("demo.attack_lr", demo.attack_lr, OPTIM_LR_BOUNDS),
    INT("demo.attack_steps", demo.attack_steps, 1, 10000000),
    INT("demo.attack_n", demo.attack_n, 1, 100000000),
    STR("demo.p", demo.p),
    STR("demo.task", demo.task),
    STR("demo.second_task", demo.second_task),
    INT("demo.eval_prompts", demo.eval_prompts, 1, 1000000),
    INT("demo.max_new_tokens", demo.max_new_tokens, 1, 1 << 20),
    STR("synth.out", synth.out),
    U64("synth.seed", synth.seed),
    INT("synth.layers", synth.layers, 1, 64),
    INT("synth.width", synth.width, 8, 4096),
    INT("synth.heads", synth.heads, 1, 64),
    INT("synth.kv_heads", synth.kv_heads, 1, 64),
    INT("synth.ffn", synth.ffn, 8, 16384),
    INT("synth.epochs", synth.epochs, 1, 1000),
    INT("synth.batch", synth.batch, 1, 1024),
    INT("synth.threads", synth.threads, 0, 1024),
    I64("synth.steps", synth.steps, -1, 100000000),
    DBL("synth.lr", synth.lr, REAL_BOUNDS(0, 0, 1, 0)),
    ENUM("bench.config", bench.config, bench_config_names),
    INT("bench.steps", bench.steps, 1, 10000),
    INT("bench.warmup", bench.warmup, 0, 10000),
    INT("bench.threads", bench.threads, 0, 1024),
    STR("bench.reference", bench.reference),
    BOOL("bench.methods", bench.methods),
    INT("bench.tvaccine_layers", bench.tvaccine_layers, 1, 1024),
    BOOL("bench.ranks", bench.ranks),
    INT("bench.micro_batches", bench.micro_batches, 1, 1024),
    ENUM("bench.schedule", bench.schedule, schedule_names),
    INT("bench.data_parallel", bench.data_parallel, 1, 1024),
    ENUM("bench.activations", bench.activations, activation_policy_names),
    INT("bench.activation_budget_mib", bench.activation_budget_mib, 0, INT_MAX),
    STR("export.model", export.model),
    STR("export.adapter", export.adapter),
    STR("export.out", export.out),
    BOOL("export.merge", export.merge),
    STR("export.dtype", export.dtype),
    STR("export.shard_size", export.shard_size),
    INT("export.threads", export.threads, 0, 1024),
    STR("generate.model", generate.model),
    STR("generate.adapter", generate.adapter),
    STR("generate.tokenizer", generate.tokenizer),
    STR("generate.prompts", generate.prompts),
    STR("generate.format", generate.format),
    I64("generate.max_prompts", generate.max_prompts, 0, INT64_C(1) << 40),
    STR("generate.out", generate.out),
    INT("generate.max_new_tokens", generate.max_new_tokens, 1, 1 << 20),
    INT("generate.batch", generate.batch, 1, 1 << 16),
    INT("generate.threads", generate.threads, 0, 1024),
    BOOL("generate.no_cache", generate.no_cache),
    STR("eval.answers", eval.answers),
    STR("eval.judge", eval.judge),
    STR("eval.task", eval.task),
    STR("eval.world", eval.world),
    STR("eval.out", eval.out),
    STR("eval.summary", eval.summary),
    STR("eval.judge_tokenizer", eval.judge_tokenizer),
    INT("eval.judge_batch", eval.judge_batch, 1, 4096),
    INT("eval.threads", eval.threads, 0, 1024),
    STR("attack.model", attack.model),
    STR("attack.adapter", attack.adapter),
    STR("attack.harmful", attack.harmful),
    STR("attack.benign", attack.benign),
    STR("attack.out", attack.out),
    DBL("attack.p", attack.p, REAL_BOUNDS(0, 0, 1, 0)),
    I64("attack.n", attack.n, 1, INT64_C(1) << 40),
    U64("attack.seed", attack.seed),
    STR("attack.tokenizer", attack.tokenizer),
    STR("attack.resume", attack.resume),
    STR("attack.harmful_format", attack.harmful_format),
    STR("attack.benign_format", attack.benign_format),
    STR("plan.model", plan.model),
    INT("plan.ranks", plan.ranks, 0, 4096),
    STR("plan.gpu_mem", plan.gpu_mem),
    STR("plan.config", plan.config),
    INT("plan.batch", plan.batch, 0, 1000000),
    ENUM("plan.weight_dtype", plan.weight_dtype, plan_dtype_names),
    INT("plan.reserve_mib", plan.reserve_mib, 0, 1 << 20),
};
/* clang-format on */
_Static_assert(sizeof rc_keys / sizeof rc_keys[0] == RC_N_KEYS, "RC_N_KEYS must count rc_keys");

int rc_key_section(const RcKey *k) { /* -1 = top level */
  for (int s = 0; s < RC_N_SECTIONS; s++) {
    size_t n = strlen(rc_sections[s]);
    if (!strncmp(k->name, rc_sections[s], n) && k->name[n] == '.') return s;
  }
  return -1;
}
const char *rc_key_leaf(const RcKey *k) {
  const char *dot = strrchr(k->name, '.');
  return dot ? dot + 1 : k->name;
}
const RcKey *rc_find_key(const char *name) {
  for (int i = 0; i < RC_N_KEYS; i++)
    if (!strcmp(rc_keys[i].name, name)) return &rc_keys[i];
  return NULL;
}

/* ---- defaults, copy, free ------------------------------------------------------------ */

void run_config_defaults(RunConfig *c) {
  /* The header's RC_N_KEYS sizes rc_keys, so a table one entry short still compiles, with a
   * zeroed last entry: caught here. */
  TV_CHECK(rc_keys[RC_N_KEYS - 1].name, "RC_N_KEYS is larger than the key table");
  memset(c, 0, sizeof *c);
  c->method = METHOD_TVACCINE;
  c->data_format = DATASET_FORMAT_AUTO;
  c->max_len = 200;
  c->activations = ACTIVATIONS_DEFAULT;
  c->epochs = 20;
  c->batch_size = 10;
  c->seed = 42;
  c->log_every = 1;
  c->rho = 3.0;
  c->lora = lora_config_default();
  c->optim = optim_config_default(0);
  c->optim.total_steps = 0; /* not a config key; the trainer sets it */
  c->tvaccine = (RunTVaccine){.S = 8,
                               .J = 20,
                               .K = 200,
                               .probe_samples = 200,
                               .probe_batch = 1,
                               .freeze_scope = FREEZE_LAYER};
  c->dist.data_parallel = 1;
  /* The demo's study, from the sweep in bench/results/study_sweep.md (3-4 seeds a setting): with
   * 200 alignment steps and T-Vaccine on 1 of 4 layers T-Vaccine never learned to refuse, so
   * 400 steps (8 epochs of the world's alignment set) and S 2; attack lr 5e-4 for 200 steps
   * (3e-4 restored no aligned model at p 0.1; at 1e-3 T-Vaccine ends above SFT, at 5e-4 below:
   * the ordering is not robust, the README says so); rho 1 (3 and 0.3 were no better). */
  c->demo = (RunDemo){.seed = 1, .layers = 4, .width = 64, .heads = 4, .kv_heads = 2,
                      .ffn = 172, .pretrain_epochs = 6, .align_steps = 400, .align_lr = 2e-3,
                      .rho = 1.0, .tvaccine_s = 2, .tvaccine_j = 20, .tvaccine_k = 50,
                      .attack_lr = 5e-4, .attack_steps = 200, .attack_n = 1000,
                      .eval_prompts = 200, .max_new_tokens = 64};
  c->synth = (RunSynth){.seed = 1, .layers = 4, .width = 64, .heads = 4, .kv_heads = 2,
                        .ffn = 172, .epochs = 6, .batch = 16, .steps = -1, .lr = 3e-3};
  c->bench = (RunBench){.config = 0, .steps = 5, .warmup = 1, .tvaccine_layers = 2,
                        .micro_batches = 8, .schedule = SCHEDULE_1F1B,
                        .data_parallel = 1, .activations = ACTIVATIONS_DEFAULT};
  c->generate = (RunGenerate){.max_new_tokens = 128, .batch = 16};
  c->eval = (RunEval){.judge_batch = 8};
  c->attack = (RunAttack){.p = 0.1, .n = 1000, .seed = 1};
  c->plan = (RunPlan){.weight_dtype = TV_BF16, .reserve_mib = 1024};
  for (int i = 0; i < RC_N_KEYS; i++)
    if (rc_keys[i].kind == K_STR) *(char **)rc_at(c, &rc_keys[i]) = rc_dup_str("");
  free(c->demo.out), free(c->demo.p), free(c->demo.task), free(c->demo.second_task);
  c->demo.out = rc_dup_str("runs/demo");
  c->demo.p = rc_dup_str("0,0.05,0.1,0.2");
  c->demo.task = rc_dup_str("sst");
  c->demo.second_task = rc_dup_str("agnews");
  free(c->export.shard_size);
  c->export.shard_size = rc_dup_str("5GB");
  free(c->generate.format);
  c->generate.format = rc_dup_str("auto");
  free(c->attack.harmful_format), free(c->attack.benign_format);
  c->attack.harmful_format = rc_dup_str("auto");
  c->attack.benign_format = rc_dup_str("auto");
}


void run_config_free(RunConfig *c) {
  for (int i = 0; i < RC_N_KEYS; i++) {
    if (rc_keys[i].kind == K_STR) free(*(char **)rc_at(c, &rc_keys[i]));
    if (rc_keys[i].kind == K_LAYERS) free(*rc_list_of(c, &rc_keys[i]));
  }
  memset(c, 0, sizeof *c);
}

void run_config_copy(RunConfig *dst, const RunConfig *src) {
  memcpy(dst, src, sizeof *dst);
  for (int i = 0; i < RC_N_KEYS; i++)
    if (rc_keys[i].kind == K_STR)
      *(char **)rc_at(dst, &rc_keys[i]) = rc_dup_str(*(char *const *)rc_at_c(src, &rc_keys[i]));
  for (int i = 0; i < RC_N_KEYS; i++) {
    const RcKey *k = &rc_keys[i];
    if (k->kind != K_LAYERS) continue;
    int n = rc_count_of_c(src, k);
    *rc_list_of(dst, k) = NULL;
    if (n > 0) *rc_list_of(dst, k) = memcpy(tv_malloc((size_t)n * sizeof(int)), rc_list_of_c(src, k),
                                         (size_t)n * sizeof(int));
  }
}

const char *run_config_tokenizer(const RunConfig *c) {
  return c->tokenizer[0] ? c->tokenizer : c->model;
}

TvDtype run_config_weight_dtype(const RunConfig *c) {
  switch (c->weight_dtype) {
  case WEIGHT_DTYPE_F32: return TV_F32;
  case WEIGHT_DTYPE_BF16: return TV_BF16;
  default: return c->device == BACKEND_CUDA ? TV_BF16 : TV_F32;
  }
}

int64_t run_config_total_steps(const RunConfig *c, int64_t n_samples) {
  if (c->max_steps > 0) return c->max_steps;
  int64_t per_epoch = (n_samples + c->batch_size - 1) / c->batch_size;
  return (int64_t)c->epochs * per_epoch;
}

int run_config_micro_batch(const RunConfig *c) {
  if (c->dist.micro_batches) /* m micro-batches: rows rounded up, the last may be shorter */
    return (c->batch_size + c->dist.micro_batches - 1) / c->dist.micro_batches;
  return c->micro_batch ? c->micro_batch : c->batch_size;
}
