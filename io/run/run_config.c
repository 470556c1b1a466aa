/* The run config (see run_config.h): the key table, defaults, the type and range rules of
 * every key, validation and the YAML writer. Reading YAML is in run_config_load.c. */
#include "run_config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
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
static void *at(RunConfig *c, const RcKey *k) { return (char *)c + k->off; }
static const void *at_c(const RunConfig *c, const RcKey *k) { return (const char *)c + k->off; }

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  return memcpy(tv_malloc(n), s, n);
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
    if (rc_keys[i].kind == K_STR) *(char **)at(c, &rc_keys[i]) = dup_str("");
  free(c->demo.out), free(c->demo.p), free(c->demo.task), free(c->demo.second_task);
  c->demo.out = dup_str("runs/demo");
  c->demo.p = dup_str("0,0.05,0.1,0.2");
  c->demo.task = dup_str("sst");
  c->demo.second_task = dup_str("agnews");
  free(c->export.shard_size);
  c->export.shard_size = dup_str("5GB");
  free(c->generate.format);
  c->generate.format = dup_str("auto");
  free(c->attack.harmful_format), free(c->attack.benign_format);
  c->attack.harmful_format = dup_str("auto");
  c->attack.benign_format = dup_str("auto");
}

/* A K_LAYERS key's list and its count. */
static int **list_of(RunConfig *c, const RcKey *k) { return (int **)at(c, k); }
static int *count_of(RunConfig *c, const RcKey *k) { return (int *)((char *)c + k->count_off); }
static const int *list_of_c(const RunConfig *c, const RcKey *k) {
  return *(int *const *)at_c(c, k);
}
static int count_of_c(const RunConfig *c, const RcKey *k) {
  return *(const int *)((const char *)c + k->count_off);
}

void run_config_free(RunConfig *c) {
  for (int i = 0; i < RC_N_KEYS; i++) {
    if (rc_keys[i].kind == K_STR) free(*(char **)at(c, &rc_keys[i]));
    if (rc_keys[i].kind == K_LAYERS) free(*list_of(c, &rc_keys[i]));
  }
  memset(c, 0, sizeof *c);
}

void run_config_copy(RunConfig *dst, const RunConfig *src) {
  memcpy(dst, src, sizeof *dst);
  for (int i = 0; i < RC_N_KEYS; i++)
    if (rc_keys[i].kind == K_STR)
      *(char **)at(dst, &rc_keys[i]) = dup_str(*(char *const *)at_c(src, &rc_keys[i]));
  for (int i = 0; i < RC_N_KEYS; i++) {
    const RcKey *k = &rc_keys[i];
    if (k->kind != K_LAYERS) continue;
    int n = count_of_c(src, k);
    *list_of(dst, k) = NULL;
    if (n > 0) *list_of(dst, k) = memcpy(tv_malloc((size_t)n * sizeof(int)), list_of_c(src, k),
                                         (size_t)n * sizeof(int));
  }
}

/* ---- values: parsing, range checks, formatting ----------------------------------------- */

const char *rc_shown(const char *s, char *buf, size_t n) {
  size_t i = 0;
  for (; s[i] && i < 60 && i + 4 < n; i++) buf[i] = iscntrl((unsigned char)s[i]) ? '?' : s[i];
  if (s[i]) buf[i++] = '.', buf[i++] = '.', buf[i++] = '.';
  buf[i] = 0;
  return buf;
}

/* Strict decimal integer: optional sign and digits only (no 0x10, 1e3, 3.5 or " 5").
 * 0 = ok, 1 = not an integer, 2 = does not fit. */
static int parse_i64(const char *s, int64_t *v) {
  const char *p = s + (*s == '+' || *s == '-');
  if (!*p) return 1;
  for (const char *q = p; *q; q++)
    if (!isdigit((unsigned char)*q)) return 1;
  errno = 0;
  long long x = strtoll(s, NULL, 10);
  if (errno == ERANGE) return 2;
  *v = x;
  return 0;
}

/* Shortest decimal text that reads back to exactly this float (or double). */
static void fmt_float(float v, char *buf, size_t n) {
  for (int p = 1; p <= 9; p++)
    if (snprintf(buf, n, "%.*g", p, (double)v), strtof(buf, NULL) == v) return;
}
static void fmt_double(double v, char *buf, size_t n) {
  for (int p = 1; p <= 17; p++)
    if (snprintf(buf, n, "%.*g", p, v), strtod(buf, NULL) == v) return;
}

static void range_text(const RcKey *k, char *buf, size_t n) {
  if (k->kind == K_INT || k->kind == K_I64 || k->kind == K_LAYERS) {
    if (k->ihi == INT_MAX)
      snprintf(buf, n, ">= %" PRId64, k->ilo);
    else
      snprintf(buf, n, "in %" PRId64 "..%" PRId64, k->ilo, k->ihi);
  } else {
    real_bounds_text(&k->bounds, buf, n);
  }
}

static int out_of_range(const RcKey *k, const char *text, char *msg, size_t n) {
  char r[64], s[80];
  range_text(k, r, sizeof r);
  snprintf(msg, n, "%s: %s is out of range: must be %s", k->name, rc_shown(text, s, sizeof s), r);
  return -1;
}

static int num_in_range(const RcKey *k, double v) {
  return real_bounds_hold(&k->bounds, v);
}

static int enum_index(const RcKey *k, const char *s) {
  for (int i = 0; i < k->n_names; i++)
    if (!strcmp(s, k->names[i])) return i;
  return -1;
}

static int not_one_of(const char *key, const char *text, const char *const *names, int count,
                      const char *(*name_of)(int), char *msg, size_t n) {
  char s[80];
  int len = snprintf(msg, n, "%s: '%s' is not one of ", key, rc_shown(text, s, sizeof s));
  for (int i = 0; i < count && len > 0 && (size_t)len < n; i++)
    len +=
        snprintf(msg + len, n - (size_t)len, "%s%s", i ? ", " : "", names ? names[i] : name_of(i));
  return -1;
}
static const char *target_name_of(int i) { return lora_target_name((LoraTarget)i); }

/* Range and consistency of one key's current value (validation, and after every assignment).
 * 0 = fine, -1 = msg holds the error line. */
static int check_key(const RunConfig *c, const RcKey *k, char *msg, size_t n) {
  char t[64];
  const void *p = at_c(c, k);
  switch (k->kind) {
    case K_STR: TV_CHECK(*(char *const *)p, "run config key %s has no string", k->name); return 0;
    case K_U64: return 0;
    case K_BOOL:
      if (*(const int *)p == 0 || *(const int *)p == 1) return 0;
      return snprintf(msg, n, "%s: must be true or false", k->name), -1;
    case K_ENUM: {
      int v;
      memcpy(&v, p, sizeof v);
      if (v >= 0 && v < k->n_names) return 0;
      snprintf(t, sizeof t, "%d", v);
      return not_one_of(k->name, t, k->names, k->n_names, NULL, msg, n);
    }
    case K_INT:
    case K_I64: {
      int64_t v = k->kind == K_INT ? *(const int *)p : *(const int64_t *)p;
      if (v >= k->ilo && v <= k->ihi) return 0;
      snprintf(t, sizeof t, "%" PRId64, v);
      return out_of_range(k, t, msg, n);
    }
    case K_FLOAT:
    case K_DOUBLE: {
      double v = k->kind == K_FLOAT ? (double)*(const float *)p : *(const double *)p;
      if (num_in_range(k, v)) return 0;
      if (k->kind == K_FLOAT)
        fmt_float((float)v, t, sizeof t);
      else
        fmt_double(v, t, sizeof t);
      if (!isfinite(v))
        return snprintf(msg, n, "%s: expected a finite number, got '%s'", k->name, t), -1;
      return out_of_range(k, t, msg, n);
    }
    case K_MODULES:
      if (c->lora.target_mask && !(c->lora.target_mask >> LORA_NUM_TARGETS)) return 0;
      return snprintf(msg, n,
                      "%s: must name at least one of q_proj, k_proj, v_proj, o_proj, "
                      "gate_proj, up_proj, down_proj",
                      k->name),
             -1;
    case K_LAYERS: {
      const int *list = list_of_c(c, k);
      for (int i = 0; i < count_of_c(c, k); i++) {
        int l = list[i];
        if (l < k->ilo || l > k->ihi)
          return snprintf(t, sizeof t, "%d", l), out_of_range(k, t, msg, n);
        for (int j = 0; j < i && k->distinct; j++)
          if (list[j] == l) return snprintf(msg, n, "%s: layer %d is listed twice", k->name, l), -1;
      }
      return 0;
    }
  }
  return 0;
}

int rc_set_scalar(RunConfig *c, const RcKey *k, const char *text, char *msg, size_t n) {
  char s[80];
  void *p = at(c, k);
  int64_t iv;
  switch (k->kind) {
    case K_STR:
      free(*(char **)p);
      *(char **)p = dup_str(text);
      return 0;
    case K_BOOL:
      if (strcmp(text, "true") && strcmp(text, "false"))
        return snprintf(msg, n, "%s: expected true or false, got '%s'", k->name,
                        rc_shown(text, s, sizeof s)),
               -1;
      *(int *)p = !strcmp(text, "true");
      return 0;
    case K_ENUM: {
      int v = enum_index(k, text);
      if (v < 0) return not_one_of(k->name, text, k->names, k->n_names, NULL, msg, n);
      memcpy(p, &v, sizeof v);
      return 0;
    }
    case K_INT:
    case K_I64: {
      int r = parse_i64(text, &iv);
      if (r == 1)
        return snprintf(msg, n, "%s: expected an integer, got '%s'", k->name,
                        rc_shown(text, s, sizeof s)),
               -1;
      if (r == 2 || iv < k->ilo || iv > k->ihi) return out_of_range(k, text, msg, n);
      if (k->kind == K_INT)
        *(int *)p = (int)iv;
      else
        *(int64_t *)p = iv;
      return 0;
    }
    case K_U64: {
      int digits = *text != 0;
      for (const char *q = text; *q; q++) digits &= isdigit((unsigned char)*q) != 0;
      errno = 0;
      unsigned long long v = digits ? strtoull(text, NULL, 10) : 0;
      if (!digits && parse_i64(text, &iv) == 1)
        return snprintf(msg, n, "%s: expected an integer, got '%s'", k->name,
                        rc_shown(text, s, sizeof s)),
               -1;
      if (!digits || errno == ERANGE) /* negative, or past 2^64 - 1 */
        return snprintf(msg, n, "%s: %s is out of range: must be in 0..%" PRIu64, k->name,
                        rc_shown(text, s, sizeof s), UINT64_MAX),
               -1;
      *(uint64_t *)p = v;
      return 0;
    }
    case K_FLOAT:
    case K_DOUBLE: {
      char *end;
      double d = *text && !isspace((unsigned char)*text) ? strtod(text, &end) : NAN;
      if (!*text || isspace((unsigned char)*text) || *end)
        return snprintf(msg, n, "%s: expected a number, got '%s'", k->name,
                        rc_shown(text, s, sizeof s)),
               -1;
      if (!isfinite(d))
        return snprintf(msg, n, "%s: expected a finite number, got '%s'", k->name,
                        rc_shown(text, s, sizeof s)),
               -1;
      if (k->kind == K_DOUBLE) {
        *(double *)p = d;
      } else {
        float f = strtof(text, NULL); /* direct: rounding through double could differ */
        if (!isfinite(f))
          return snprintf(msg, n, "%s: %s is out of range: too large", k->name,
                          rc_shown(text, s, sizeof s)),
                 -1;
        *(float *)p = f;
      }
      if (!num_in_range(k, d)) return out_of_range(k, text, msg, n);
      return 0;
    }
    default: TV_CHECK(0, "rc_set_scalar on list key %s", k->name);
  }
  return 0;
}

int rc_set_list(RunConfig *c, const RcKey *k, char *const *items, unsigned count, char *msg,
                size_t n) {
  char s[80];
  if (k->kind == K_MODULES) {
    unsigned mask = 0;
    for (unsigned i = 0; i < count; i++) {
      int t = 0;
      while (t < LORA_NUM_TARGETS && strcmp(items[i], lora_target_name((LoraTarget)t))) t++;
      if (t == LORA_NUM_TARGETS)
        return not_one_of(k->name, items[i], NULL, LORA_NUM_TARGETS, target_name_of, msg, n);
      if (mask & (1u << t))
        return snprintf(msg, n, "%s: '%s' is listed twice", k->name, items[i]), -1;
      mask |= 1u << t;
    }
    c->lora.target_mask = mask;
    return check_key(c, k, msg, n);
  }
  int *layers = count ? tv_malloc(count * sizeof(int)) : NULL;
  for (unsigned i = 0; i < count; i++) {
    int64_t v;
    int r = parse_i64(items[i], &v);
    if (r == 1) {
      free(layers);
      return snprintf(msg, n, "%s: expected an integer%s, got '%s'", k->name,
                      k->distinct ? " layer index" : "", rc_shown(items[i], s, sizeof s)),
             -1;
    }
    if (r == 2 || v < k->ilo || v > k->ihi) return free(layers), out_of_range(k, items[i], msg, n);
    layers[i] = (int)v;
  }
  free(*list_of(c, k));
  *list_of(c, k) = layers;
  *count_of(c, k) = (int)count;
  return check_key(c, k, msg, n);
}

const char *run_config_validate(const RunConfig *c, char *err, size_t errlen) {
  for (int i = 0; i < RC_N_KEYS; i++)
    if (check_key(c, &rc_keys[i], err, errlen)) return err;
  static const struct {
    const char *key, *what;
    size_t off;
  } required[] = {
      {"model", "the Hugging Face model folder", OFF(model)},
      {"data", "the alignment data file", OFF(data)},
      {"out", "the output folder", OFF(out)},
  };
  for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
    if (!**(char *const *)((const char *)c + required[i].off))
      return snprintf(err, errlen, "%s: required (%s); set it in the config or with --set %s=PATH",
                      required[i].key, required[i].what, required[i].key),
             err;
  if (c->micro_batch > c->batch_size)
    return snprintf(err, errlen,
                    "micro_batch: %d is out of range: must be <= batch_size (%d); "
                    "0 means the whole batch",
                    c->micro_batch, c->batch_size),
           err;
  if (c->dist.micro_batches > c->batch_size)
    return snprintf(err, errlen,
                    "dist.micro_batches: %d is out of range: must be <= batch_size (%d); "
                    "0 means micro_batch decides",
                    c->dist.micro_batches, c->batch_size),
           err;
  if (c->dist.micro_batches && c->micro_batch)
    return snprintf(err, errlen,
                    "dist.micro_batches: %d and micro_batch: %d both split the batch; set one "
                    "(the other 0)",
                    c->dist.micro_batches, c->micro_batch),
           err;
  if (c->tvaccine.probe_batch > c->tvaccine.probe_samples)
    return snprintf(err, errlen,
                    "tvaccine.probe_batch: %d is out of range: must be <= "
                    "tvaccine.probe_samples (%d)",
                    c->tvaccine.probe_batch, c->tvaccine.probe_samples),
           err;
  return NULL;
}

/* A string as a double-quoted YAML scalar that reads back byte for byte. */
static void put_quoted(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20 || *p == 0x7f)
      fprintf(f, "\\x%02x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

void rc_put_value(FILE *f, const RunConfig *c, const RcKey *k) {
  char num[64];
  const void *p = at_c(c, k);
  switch (k->kind) {
    case K_STR: put_quoted(f, *(char *const *)p); break;
    case K_ENUM: {
      int v;
      memcpy(&v, p, sizeof v);
      if (v >= 0 && v < k->n_names)
        fputs(k->names[v], f);
      else
        fprintf(f, "%d", v); /* invalid; reloading reports it */
      break;
    }
    case K_BOOL: fputs(*(const int *)p ? "true" : "false", f); break;
    case K_INT: fprintf(f, "%d", *(const int *)p); break;
    case K_I64: fprintf(f, "%" PRId64, *(const int64_t *)p); break;
    case K_U64: fprintf(f, "%" PRIu64, *(const uint64_t *)p); break;
    case K_FLOAT: fmt_float(*(const float *)p, num, sizeof num), fputs(num, f); break;
    case K_DOUBLE: fmt_double(*(const double *)p, num, sizeof num), fputs(num, f); break;
    case K_MODULES:
      fputc('[', f);
      for (int t = 0, first = 1; t < LORA_NUM_TARGETS; t++)
        if (c->lora.target_mask & (1u << t))
          fprintf(f, "%s%s", first ? "" : ", ", lora_target_name((LoraTarget)t)), first = 0;
      fputc(']', f);
      break;
    case K_LAYERS:
      fputc('[', f);
      for (int j = 0; j < count_of_c(c, k); j++) fprintf(f, "%s%d", j ? ", " : "", list_of_c(c, k)[j]);
      fputc(']', f);
      break;
  }
}

char *run_config_to_yaml(const RunConfig *c) {
  char *buf = NULL;
  size_t size = 0;
  FILE *f = open_memstream(&buf, &size);
  TV_CHECK(f, "open_memstream failed");
  fprintf(f, "# tvaccine run config: every key, as this run used it\n");
  int section = -1;
  for (int i = 0; i < RC_N_KEYS; i++) {
    const RcKey *k = &rc_keys[i];
    int sec = rc_key_section(k);
    if (sec != section && sec >= 0) fprintf(f, "%s:\n", rc_sections[sec]);
    section = sec;
    fprintf(f, "%s%s: ", sec >= 0 ? "  " : "", rc_key_leaf(k));
    rc_put_value(f, c, k);
    fputc('\n', f);
  }
  TV_CHECK(fclose(f) == 0, "writing the run config to memory failed");
  return buf;
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
