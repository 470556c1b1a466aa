/* `tvaccine bench --methods`: steps of sft, vaccine and tvaccine through the trainer on the
 * same model and batch, with step time, every buffer the trainer and stage hold for steps,
 * and the process's peak resident memory, under both activation policies of frozen layers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "check.h"
#include "run_setup.h"
#include "subcommands.h"
#include "trainer.h"

typedef struct {
  const char *label;
  Method method;
  ActivationPolicy policy;
  const int *fixed; /* [S] a fixed T-Vaccine set, or NULL to probe and sample */
} MethodRun;

typedef struct {
  double step_s;
  TrainerMemory mem;
  double rss_mib;
  int probes;
  char layers[128];
} MethodResult;

/* The process's peak resident set (VmHWM), reset before each run by writing 5 to
 * /proc/self/clear_refs, so each run's peak is its own. 0 when /proc is not there. */
static void reset_peak_rss(void) {
  FILE *f = fopen("/proc/self/clear_refs", "w");
  if (!f) return;
  fputs("5", f);
  fclose(f);
}

static double peak_rss_mib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  double kib = 0;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "VmHWM:", 6)) kib = strtod(line + 6, NULL);
  fclose(f);
  return kib / 1024.0;
}

static void describe_layers(const Trainer *tr, Method m, char *buf, size_t len) {
  if (m != METHOD_TVACCINE) {
    snprintf(buf, len, "all");
    return;
  }
  int count;
  const int *act = trainer_active_layers(tr, &count);
  size_t off = 0;
  buf[0] = 0;
  for (int k = 0; k < count && off + 8 < len; k++)
    off += (size_t)snprintf(buf + off, len - off, "%s%d", k ? "," : "", act[k]);
}

/* Sampling runs probe and resample every other step (K = J = 2) and time the steps between
 * probes, so `steps` timed steps come with `steps` probes; other runs time every step after
 * one warm-up step. Memory peaks cover the whole run, probes included. */
static MethodResult run_method(Comm *comm, Backend *be, const BenchConfig *bc, const MethodRun *mr,
                               int steps, int S) {
  reset_peak_rss();
  LlamaConfig cfg = llama_config_default(bc->V, bc->D, bc->F, bc->L, bc->H, bc->Hkv);
  LoraConfig lc = lora_config_default();
  lc.r = bc->r;
  lc.dropout = 0.1f;
  Stage *s = stage_create(be, &cfg, &lc, 0, bc->L, bc->B, bc->T);
  stage_init_random_weights(s, 7, 0.02f);
  lora_set_init(be, stage_lora(s), 7);
  size_t n = (size_t)bc->B * bc->T;
  int32_t *tokens = tv_malloc(n * sizeof(int32_t)), *targets = tv_malloc(n * sizeof(int32_t));
  Batch batch = {.tokens = tokens, .targets = targets, .B = bc->B, .T = bc->T,
                 .n_targets = (size_t)bench_random_batch(bc, tokens, targets)};
  Batch probe = {.tokens = tokens, .targets = targets, .B = 1, .T = bc->T,
                 .n_targets = (size_t)bc->T - 1};
  int sampling = mr->method == METHOD_TVACCINE && !mr->fixed;
  TrainerConfig tc = {
      .method = mr->method,
      .rho = 3.0,
      .S = S,
      .J = sampling ? 2 : 20,
      .K = sampling ? 2 : 200,
      .fixed_layers = mr->fixed,
      .num_fixed = mr->fixed ? S : 0,
      .optim = optim_config_default(2 * steps + 2),
      .seed = 7,
      .activations = mr->policy,
  };
  Trainer *tr = trainer_create(comm, s, &tc, bc->B);
  trainer_take_memory_peak(tr);
  double *times = tv_malloc((size_t)steps * sizeof(double));
  MethodResult r = {0};
  StepReport rep;
  int64_t step = 0;
  if (!sampling) trainer_step(tr, step++, &batch, &probe, &rep);
  for (int i = 0; i < steps; i++) {
    if (sampling) {
      trainer_step(tr, step++, &batch, &probe, &rep); /* probe + resample, untimed */
      r.probes += rep.probed;
    }
    double t0 = now_s();
    trainer_step(tr, step++, &batch, &probe, &rep);
    times[i] = now_s() - t0;
  }
  /* The fastest step: on a shared machine the one least disturbed by other load (as the
   * sgemm rate takes its best trial). */
  r.step_s = times[0];
  for (int i = 1; i < steps; i++) r.step_s = times[i] < r.step_s ? times[i] : r.step_s;
  r.mem = trainer_take_memory_peak(tr);
  r.rss_mib = peak_rss_mib();
  describe_layers(tr, mr->method, r.layers, sizeof r.layers);
  free(times);
  free(tokens);
  free(targets);
  trainer_destroy(tr);
  stage_destroy(s);
  return r;
}

static double mib(size_t bytes) { return bytes / 1048576.0; }

int bench_methods(const BenchConfig *bc, int steps, int threads, int tv_layers, int *argc,
                  char ***argv) {
  if (tv_layers > bc->L) tv_die("--tvaccine-layers %d exceeds the %d layers", tv_layers, bc->L);
  RunSetup run = {0};
  run_setup_comm(&run, argc, argv);
  run.be = run_setup_backend(BACKEND_CPU, 0, threads);
  printf("bench --methods: config %s (%d layers, batch %d x %d), LoRA r %d dropout 0.1, rho 3, "
         "tvaccine S %d, fastest of %d steps\n",
         bc->name, bc->L, bc->B, bc->T, bc->r, tv_layers, steps);
  printf("step memory = activations kept + perturbation buffers + receive buffers; the stage's "
         "fixed workspace and the weights are the same for every run (they are in the RSS)\n");
  /* T-Vaccine's cost depends on where A lies (backward stops at its lowest layer): next to
   * the sampled set, the top S layers, and layer 0 with the S-1 layers just below the top
   * two (A = {0, 5} for S = 2 of 8) or the top S-1 (A = {0, 7}). */
  int S = tv_layers, L = bc->L;
  int *top = tv_malloc((size_t)S * sizeof(int)), *low_mid = tv_malloc((size_t)S * sizeof(int));
  int *low_top = tv_malloc((size_t)S * sizeof(int));
  for (int k = 0; k < S; k++) {
    top[k] = low_top[k] = L - S + k;
    low_mid[k] = L - S - 2 > 0 ? L - S - 2 + k : k; /* small models: {0, 1, ..} */
  }
  low_mid[0] = low_top[0] = 0;
  const MethodRun runs[] = {
      {.label = "sft", .method = METHOD_SFT,
       .policy = ACTIVATIONS_RECOMPUTE, .fixed = NULL},
      {.label = "vaccine", .method = METHOD_VACCINE,
       .policy = ACTIVATIONS_RECOMPUTE, .fixed = NULL},
      {.label = "tvaccine sampled", .method = METHOD_TVACCINE,
       .policy = ACTIVATIONS_RECOMPUTE, .fixed = NULL},
      {.label = "tvaccine sampled", .method = METHOD_TVACCINE,
       .policy = ACTIVATIONS_KEEP, .fixed = NULL},
      {.label = "tvaccine 0+mid", .method = METHOD_TVACCINE,
       .policy = ACTIVATIONS_RECOMPUTE, .fixed = low_mid},
      {.label = "tvaccine 0+mid", .method = METHOD_TVACCINE,
       .policy = ACTIVATIONS_KEEP, .fixed = low_mid},
      {.label = "tvaccine 0+top", .method = METHOD_TVACCINE,
       .policy = ACTIVATIONS_RECOMPUTE, .fixed = low_top},
      {.label = "tvaccine 0+top", .method = METHOD_TVACCINE,
       .policy = ACTIVATIONS_KEEP, .fixed = low_top},
      {.label = "tvaccine top", .method = METHOD_TVACCINE,
       .policy = ACTIVATIONS_RECOMPUTE, .fixed = top},
      {.label = "tvaccine top", .method = METHOD_TVACCINE,
       .policy = ACTIVATIONS_KEEP, .fixed = top},
  };
  static const char *const policy_names[] = {"recompute", "keep", "auto"};
  MethodResult vaccine = {0};
  for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
    MethodResult r = run_method(run.comm, run.be, bc, &runs[i], steps, S);
    if (runs[i].method == METHOD_VACCINE) vaccine = r;
    size_t step_bytes = trainer_memory_step_bytes(&r.mem);
    printf("  %-16s %-9s layers %-7s step %.3f s  step memory %6.1f MiB (activations %.1f, "
           "perturbations %.1f, receive %.1f)  peak RSS %6.1f MiB",
           runs[i].label, runs[i].method == METHOD_TVACCINE ? policy_names[runs[i].policy] : "",
           r.layers, r.step_s, mib(step_bytes), mib(r.mem.activations), mib(r.mem.perturbations),
           mib(r.mem.receive), r.rss_mib);
    if (r.probes) printf("  %d probes", r.probes);
    if (runs[i].method == METHOD_TVACCINE)
      printf("  vs vaccine: time %.2fx, step memory %.2fx, RSS %.2fx", r.step_s / vaccine.step_s,
             (double)step_bytes / trainer_memory_step_bytes(&vaccine.mem),
             r.rss_mib / vaccine.rss_mib);
    printf("\n");
    fflush(stdout);
  }
  printf("workspace (fixed, every run): %.1f MiB\n", mib(vaccine.mem.workspace));
  free(top);
  free(low_mid);
  free(low_top);
  run_setup_free(&run);
  return 0;
}
