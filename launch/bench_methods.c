/* `tvaccine bench --methods`: one alignment step of sft, vaccine and tvaccine through the
 * trainer on the same model and batch, with step time and the activation memory each keeps.
 * T-Vaccine samples its layers from a probe at step 0 (the probe step is not timed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "check.h"
#include "comm.h"
#include "subcommands.h"
#include "trainer.h"

typedef struct {
  double step_s, activation_mib;
  char layers[128];
} MethodResult;

static MethodResult run_method(Comm *comm, Backend *be, const BenchConfig *bc, Method m,
                               int steps, int tv_layers, const int *fixed) {
  LlamaConfig cfg = llama_config_default(bc->V, bc->D, bc->F, bc->L, bc->H, bc->Hkv);
  LoraConfig lc = lora_config_default();
  lc.r = bc->r;
  lc.dropout = 0.1f;
  Stage *s = stage_create(be, &cfg, &lc, 0, bc->L, bc->B, bc->T);
  stage_init_random_weights(s, 7, 0.02f);
  lora_set_init(be, stage_lora(s), 7);
  size_t n = (size_t)bc->B * bc->T;
  int32_t *tokens = tv_malloc(n * sizeof(int32_t)), *targets = tv_malloc(n * sizeof(int32_t));
  Batch batch = {.tokens = tokens, .targets = targets, .B = bc->B, .T = bc->T};
  batch.n_targets = (size_t)bench_random_batch(bc, tokens, targets);
  Batch probe = {.tokens = tokens, .targets = targets, .B = 1, .T = bc->T, .n_targets = (size_t)bc->T - 1};
  TrainerConfig tc = {0};
  tc.method = m;
  tc.rho = 3.0;
  tc.S = tv_layers, tc.J = 20, tc.K = 200;
  if (fixed) tc.fixed_layers = fixed, tc.num_fixed = tv_layers;
  tc.optim = optim_config_default(steps + 1);
  tc.seed = 7;
  Trainer *tr = trainer_create(comm, s, &tc, bc->B);
  StepReport rep;
  trainer_step(tr, 0, &batch, &probe, &rep); /* T-Vaccine probes and samples here */
  trainer_take_activation_peak(tr);
  double *times = tv_malloc((size_t)steps * sizeof(double));
  for (int i = 0; i < steps; i++) {
    double t0 = now_s();
    trainer_step(tr, 1 + i, &batch, &probe, &rep);
    times[i] = now_s() - t0;
  }
  MethodResult r;
  r.step_s = bench_median(times, steps);
  r.activation_mib = trainer_take_activation_peak(tr) / 1048576.0;
  int count;
  const int *act = trainer_active_layers(tr, &count);
  size_t off = 0;
  r.layers[0] = 0;
  if (m == METHOD_TVACCINE)
    for (int k = 0; k < count && off < sizeof r.layers - 8; k++)
      off += (size_t)snprintf(r.layers + off, sizeof r.layers - off, "%s%d", k ? "," : "", act[k]);
  else
    snprintf(r.layers, sizeof r.layers, "all");
  free(times);
  free(tokens);
  free(targets);
  trainer_destroy(tr);
  stage_destroy(s);
  return r;
}

int bench_methods(const BenchConfig *bc, int steps, int threads, int tv_layers, int *argc,
                  char ***argv) {
  if (tv_layers > bc->L) tv_die("--tvaccine-layers %d exceeds the %d layers", tv_layers, bc->L);
  Comm *comm = comm_init(argc, argv);
  Backend *be = backend_cpu_create(threads);
  printf("bench --methods: config %s (%d layers, batch %d x %d), LoRA r %d dropout 0.1, rho 3, "
         "tvaccine S %d, median of %d steps\n",
         bc->name, bc->L, bc->B, bc->T, bc->r, tv_layers, steps);
  /* T-Vaccine's cost depends on where A lies (backward stops at its lowest layer), so next to
   * the sampled set the two extremes run too: the top S layers and layer 0 + the top S-1. */
  int *top = tv_malloc((size_t)tv_layers * sizeof(int)), *low = tv_malloc((size_t)tv_layers * sizeof(int));
  for (int k = 0; k < tv_layers; k++) top[k] = low[k] = bc->L - tv_layers + k;
  low[0] = 0;
  MethodResult res[5];
  const Method ms[5] = {METHOD_SFT, METHOD_VACCINE, METHOD_TVACCINE, METHOD_TVACCINE, METHOD_TVACCINE};
  const int *sets[5] = {NULL, NULL, NULL, top, low};
  const char *labels[5] = {"sft", "vaccine", "tvaccine (sampled)", "tvaccine (top)", "tvaccine (0+top)"};
  for (int i = 0; i < 5; i++) {
    res[i] = run_method(comm, be, bc, ms[i], steps, tv_layers, sets[i]);
    printf("  %-19s step %.3f s  activations kept %6.1f MiB  layers %-8s", labels[i],
           res[i].step_s, res[i].activation_mib, res[i].layers);
    if (i >= 2)
      printf("  vs vaccine: time %.2fx, memory %.2fx", res[i].step_s / res[1].step_s,
             res[i].activation_mib / res[1].activation_mib);
    printf("\n");
    fflush(stdout);
  }
  free(top);
  free(low);
  backend_destroy(be);
  comm_finalize(comm);
  return 0;
}
