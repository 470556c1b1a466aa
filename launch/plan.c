/* tvaccine plan: per-rank device memory of a run from the model's config.json alone (no
 * weights needed) and whether it fits a given GPU memory, plus the largest batch that does.
 * The arithmetic is core/memory_plan.c; this file reads the inputs and prints the table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "check.h"
#include "comm.h"
#include "hf_model.h"
#include "memory_plan.h"
#include "run_config.h"
#include "run_setup.h"
#include "subcommands.h"

static void plan_usage(FILE *out) {
  fprintf(out,
          "usage: tvaccine plan --model DIR --ranks N --gpu-mem SIZE [--config FILE]\n"
          "                     [--batch B] [--weight-dtype bf16|f32] [--reserve-mib M]\n"
          "  Per-rank GPU memory of a run (weights, LoRA + AdamW, activations, perturbation,\n"
          "  workspace, transfer buffers, reserve) and whether it fits SIZE per GPU, then the\n"
          "  largest batch that fits every rank. DIR needs only config.json. --config takes\n"
          "  method, lora, max_len, batch_size, micro_batch, tvaccine.S and activations from a\n"
          "  run config (defaults otherwise: tvaccine, S 8, batch 10 x 200, r 8 on 7 targets).\n"
          "  SIZE: a number with MB/MiB or GB/GiB (both 2^20 / 2^30 bytes: a '24 GB' card has\n"
          "  24 GiB). Sampled layers are placed worst case (all on one rank); the layers are split\n"
          "  over the ranks as align splits them (dist.stages, else dist.split: cost by default,\n"
          "  even; from --config).\n"
          "\n"
          "Each option --KEY is the run-config key plan.KEY, '-' read as '_' (plan.gpu_mem,\n"
          "plan.weight_dtype, plan.reserve_mib): --set plan.ranks=8 and --ranks=8 are --ranks 8.\n");
}

/* "24GB", "24GiB", "24576MB", "24g": bytes (binary units), or 0 when malformed. */
static size_t parse_size(const char *text) {
  char *end;
  double v = strtod(text, &end);
  if (end == text || !(v > 0)) return 0;
  double unit = 0;
  if (!strcasecmp(end, "gb") || !strcasecmp(end, "gib") || !strcasecmp(end, "g"))
    unit = 1 << 30;
  else if (!strcasecmp(end, "mb") || !strcasecmp(end, "mib") || !strcasecmp(end, "m"))
    unit = 1 << 20;
  return unit ? (size_t)(v * unit) : 0;
}

static LlamaConfig read_model_config(const char *dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s/config.json", dir);
  FILE *f = fopen(path, "rb");
  if (!f) tv_die("plan: cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (len <= 0 || len > (64L << 20)) tv_die("plan: %s is empty or larger than 64 MiB", path);
  char *text = tv_malloc((size_t)len);
  size_t got = fread(text, 1, (size_t)len, f);
  fclose(f);
  if (got != (size_t)len) tv_die("plan: could not read %s", path);
  HfConfig hc;
  char err[512];
  if (hf_config_parse(text, (size_t)len, path, &hc, err, sizeof err)) tv_die("%s", err);
  free(text);
  return hc.cfg;
}

static double gib(size_t b) { return (double)b / (1 << 30); }

/* The largest total over ranks, and the rank it is on. */
static size_t worst_rank(const MemoryPlanInput *in, const int *first, int *rank_out,
                         StageMemoryPlan *plan_out) {
  size_t worst = 0;
  for (int k = 0; k < in->stages; k++) {
    int l0 = first[k], l1 = first[k + 1];
    StageMemoryPlan p;
    memory_plan_stage(in, k, l0, l1, &p);
    if (p.total >= worst) {
      worst = p.total;
      if (rank_out) *rank_out = k;
      if (plan_out) *plan_out = p;
    }
  }
  return worst;
}

/* The largest batch (rows of max_len tokens) for which every rank fits. */
static int largest_batch(const MemoryPlanInput *in, const int *first, size_t gpu_mem) {
  int best = 0;
  for (int b = 1; b <= 4096; b++) {
    MemoryPlanInput t = *in;
    t.batch = b;
    if (t.micro_batch > b) t.micro_batch = 0;
    if (worst_rank(&t, first, NULL, NULL) > gpu_mem) break;
    best = b;
  }
  return best;
}

int cmd_plan(int argc, char **argv) {
  RunConfig opt;
  run_config_defaults(&opt);
  char err[RUN_CONFIG_ERR_MAX];
  int help;
  if (run_config_parse_command(&opt, "plan", argc, argv, &help, err, sizeof err)) tv_die("%s", err);
  if (help) {
    plan_usage(stdout);
    run_config_free(&opt);
    return 0;
  }
  const char *model_dir = opt.plan.model;
  int ranks = opt.plan.ranks, batch_override = opt.plan.batch;
  TvDtype dtype = opt.plan.weight_dtype;
  size_t reserve = (size_t)opt.plan.reserve_mib << 20;
  if (!model_dir[0] || !ranks || !opt.plan.gpu_mem[0]) {
    plan_usage(stderr);
    tv_die("plan needs --model, --ranks and --gpu-mem");
  }
  size_t gpu_mem = parse_size(opt.plan.gpu_mem);
  if (!gpu_mem)
    tv_die("--gpu-mem (plan.gpu_mem) expects a size such as 24GB or 81920MiB, got '%s'",
           opt.plan.gpu_mem);
  RunConfig rc;
  run_config_defaults(&rc);
  if (opt.plan.config[0] && run_config_load(&rc, opt.plan.config, err, sizeof err))
    tv_die("%s", err);
  LlamaConfig model = read_model_config(model_dir);
  if (ranks > model.num_layers)
    tv_die("--ranks %d is more than the model's %d layers", ranks, model.num_layers);
  /* The split align will use: dist.stages, else dist.split (cost by default). */
  if (rc.dist.n_stages > 0 && rc.dist.n_stages != ranks)
    tv_die("dist.stages of %s lists %d stage sizes for --ranks %d: list one size per rank",
           opt.plan.config, rc.dist.n_stages, ranks);
  int *first = tv_malloc((size_t)(ranks + 1) * sizeof(int));
  run_setup_stage_sizes(&rc.dist, &model, ranks, model_dir, first + 1);
  first[0] = 0;
  for (int k = 0; k < ranks; k++) first[k + 1] += first[k];
  MemoryPlanInput in = {.model = model, .lora = rc.lora, .weight_dtype = dtype,
                        .method = rc.method, .S = rc.tvaccine.S, .activations = rc.activations,
                        .batch = batch_override ? batch_override : rc.batch_size,
                        .seq_len = rc.max_len, .micro_batch = rc.micro_batch, .stages = ranks,
                        .reserve_bytes = reserve};
  printf("plan: %s: L %d, D %d, F %d, H %d/%d, V %d; %s, LoRA r %d, weights %s, batch %d x %d "
         "(micro-batch %d), %d rank(s), %.2f GiB per GPU\n",
         model_dir, model.num_layers, model.hidden_size, model.intermediate_size,
         model.num_heads, model.num_kv_heads, model.vocab_size, method_name(rc.method),
         rc.lora.r, tv_dtype_name(dtype), in.batch, in.seq_len,
         in.micro_batch > 0 && in.micro_batch < in.batch ? in.micro_batch : in.batch, ranks,
         gib(gpu_mem));
  size_t micro_rows = (size_t)(in.micro_batch > 0 && in.micro_batch < in.batch ? in.micro_batch
                                                                                : in.batch) *
                      (size_t)in.seq_len;
  int chunk = stage_logit_chunk_rows(micro_rows, (size_t)model.vocab_size);
  printf("plan: matrices %s, norms f32; the LM head and its loss run in chunks of %d of %zu "
         "rows (%.1f MiB of f32 logits at a time)\n",
         tv_dtype_name(dtype), chunk, micro_rows,
         (double)chunk * model.vocab_size * sizeof(float) / (1 << 20));
  printf("%-5s %-9s %9s %9s %9s %9s %9s %9s %9s %9s  (GiB)\n", "rank", "layers", "weights",
         "lora+adam", "activ.", "perturb", "workspace", "transfer", "reserve", "total");
  int fits = 1;
  for (int k = 0; k < ranks; k++) {
    int l0 = first[k], l1 = first[k + 1];
    StageMemoryPlan p;
    memory_plan_stage(&in, k, l0, l1, &p);
    char layers[32];
    snprintf(layers, sizeof layers, "[%d,%d)", l0, l1);
    printf("%-5d %-9s %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f  %s\n", k, layers,
           gib(p.weights), gib(p.lora), gib(p.activations), gib(p.perturbation),
           gib(p.workspace), gib(p.transfer), gib(p.reserve), gib(p.total),
           p.total <= gpu_mem ? "fits" : "DOES NOT FIT");
    fits &= p.total <= gpu_mem;
  }
  int best = largest_batch(&in, first, gpu_mem);
  printf("plan: batch %d x %d %s on %d x %.2f GiB; largest batch that fits: %d x %d\n", in.batch,
         in.seq_len, fits ? "fits" : "does NOT fit", ranks, gib(gpu_mem), best, in.seq_len);
  if (in.activations == ACTIVATIONS_AUTO && in.method == METHOD_TVACCINE) {
    /* auto keeps frozen layers only where that costs no extra work, so its need depends on
     * the sampled layers: the table counts them kept (its upper bound); recompute is the floor. */
    MemoryPlanInput r = in;
    r.activations = ACTIVATIONS_RECOMPUTE;
    size_t need = worst_rank(&r, first, NULL, NULL);
    printf("plan: activations auto is counted as keep above (its upper bound); with activations: "
           "recompute (or a lower activation_budget_mib) the largest rank needs %.2f GiB, and "
           "the largest batch that fits is %d x %d\n", gib(need),
           largest_batch(&r, first, gpu_mem), in.seq_len);
  }
  free(first);
  run_config_free(&rc);
  run_config_free(&opt);
  return fits ? 0 : 1;
}
