/* `tvaccine bench`: times one LoRA training step (forward + backward + AdamW) on a fixed
 * model config, next to the machine's sgemm rate measured in the same run, and optionally
 * next to a reference program (the PyTorch step in bench/ref_step.py) run by this command.
 * It reports; it never fails on a timing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "backend.h"
#include "check.h"
#include "model.h"
#include "optim.h"
#include "run_setup.h"
#include "bench.h"
#include "subcommands.h"

static void bench_usage(FILE *out) {
  fprintf(out,
          "usage: tvaccine bench [--config M|S] [--steps N] [--warmup N] [--threads N]\n"
          "                      [--reference CMD] [--methods [--tvaccine-layers S]]\n"
          "                      [--ranks [--micro-batches M] [--schedule 1f1b|gpipe]\n"
          "                               [--data-parallel D]]\n"
          "                      [--set KEY=VALUE ...]\n"
          "\n"
          "Times one LoRA training step (forward + backward + AdamW, dropout 0) and prints step\n"
          "time, tokens/s, achieved GFLOP/s, the OpenBLAS sgemm rate measured in the same run and\n"
          "peak memory. Reports only: never fails on a timing.\n"
          "\n"
          "  --config M|S      M: width 512, 8 layers, 8 heads, 8 kv heads, MLP 1376, vocab 8192,\n"
          "                    256 tokens, batch 4, LoRA r 8 on all seven targets (default);\n"
          "                    S: a small config for a quick check\n"
          "  --steps N         timed steps (default 5; the median is reported, the fastest with\n"
          "                    --methods)\n"
          "  --warmup N        untimed steps first (default 1)\n"
          "  --threads N       CPU threads (default: all cores)\n"
          "  --methods         instead: alignment steps of sft, vaccine and tvaccine side by\n"
          "                    side (dist/trainer; dropout 0.1, rho 3): step time, step memory\n"
          "                    (activations kept + perturbation buffers + receive buffers) and\n"
          "                    peak RSS of each run; T-Vaccine under both activation policies\n"
          "                    (recompute, keep) with its sampled set (a probe before each timed\n"
          "                    step), layer 0 + S-1 layers below the top two ({0,5} for S 2 of\n"
          "                    8), layer 0 + the top S-1 ({0,7}) and the top S layers\n"
          "  --tvaccine-layers S  layers T-Vaccine activates in --methods / --ranks (default 2)\n"
          "  --ranks           instead: pipeline steps on the ranks mpirun started (1 thread per\n"
          "                    rank, M micro-batches of one row) of sft, vaccine, tvaccine with A\n"
          "                    the lowest S layers, layer L/2-1 + the top S-1, and the top S:\n"
          "                    step time, each rank's compute (wall and CPU seconds), wait,\n"
          "                    measured bubble, bytes sent and step memory per step, and the\n"
          "                    ideal bubble (P-1)/(M+P-1);\n"
          "                    bench/ranks.sh compares 1 and 2 ranks\n"
          "  --micro-batches M micro-batches in --ranks (default 8)\n"
          "  --schedule S      pipeline schedule in --ranks: 1f1b (default) or gpipe\n"
          "  --data-parallel D in --ranks: the ranks as D pipeline replicas of ranks / D stages,\n"
          "                    each taking a block of the M micro-batches (default 1)\n"
          "  --activations P   T-Vaccine's frozen layers in --ranks: auto (default, as align),\n"
          "                    recompute or keep\n"
          "  --activation-budget-mib N  with --activations auto: MiB of layer records a rank\n"
          "                    may keep (default 0: no limit)\n"
          "  --reference CMD   also run CMD (e.g. 'python3 bench/ref_step.py --threads 2'), which\n"
          "                    must print one JSON line with \"step_s\", and report the ratio\n"
          "\n"
          "Each option --KEY is the run-config key bench.KEY, '-' read as '_'\n"
          "(bench.tvaccine_layers; bench.methods and bench.ranks are true or false): --set\n"
          "bench.config=S and "
          "--config=S are --config S.\n");
}

/* Useful floating-point work of one step: base GEMMs forward and input-gradient backward
 * (frozen weights need no weight gradient), LoRA terms, causal attention, head. */
static double step_flops(const BenchConfig *c) {
  double N = (double)c->B * c->T, D = c->D, F = c->F, V = c->V, r = c->r;
  double Dh = (double)c->D / c->H, HD = c->H * Dh, KD = c->Hkv * Dh;
  double base = 2 * N * (D * HD + 2 * D * KD + HD * D + 3 * D * F);
  double lora_io = (D + HD) + 2 * (D + KD) + (HD + D) + 2 * (D + F) + (F + D);
  double lora_fwd = 2 * N * r * lora_io, lora_bwd = 4 * N * r * lora_io;
  double pairs = (double)c->B * c->H * c->T * (c->T + 1) / 2.0;
  double attn_fwd = 4 * pairs * Dh, attn_bwd = 10 * pairs * Dh;
  double per_layer = base + lora_fwd + attn_fwd + base + lora_bwd + attn_bwd;
  double skipped = 2 * N * D * (HD + 2 * KD); /* layer 0 needs no input gradient */
  return c->L * per_layer - skipped + 4 * N * D * V;
}

/* Best GFLOP/s of C[M,N] = A[M,K] B[N,K]^T over five trials of ~0.2 s each: the best trial
 * is the machine's rate with the least interference from other load. */
static double sgemm_rate(Backend *be, int M, int N, int K) {
  float *A = be->alloc(be, sizeof(float) * M * K), *B = be->alloc(be, sizeof(float) * N * K);
  float *C = be->alloc(be, sizeof(float) * M * N);
  /* Inputs are made on the host and copied in: backend memory may not be host-addressable. */
  size_t biggest = (size_t)(M > N ? M : N) * K;
  float *host = tv_malloc(biggest * sizeof(float));
  for (size_t i = 0; i < (size_t)M * K; i++) host[i] = (float)(i % 7) * 0.1f;
  be->from_host(be, A, host, sizeof(float) * M * K);
  for (size_t i = 0; i < (size_t)N * K; i++) host[i] = (float)(i % 5) * 0.1f;
  be->from_host(be, B, host, sizeof(float) * N * K);
  free(host);
  be->gemm(be, 0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N);
  double best = 0;
  for (int trial = 0; trial < 5; trial++) {
    int reps = 0;
    double t0 = now_s(), el;
    do {
      be->gemm(be, 0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N);
      be->sync(be); /* an asynchronous backend has finished only after a sync */
      reps++;
    } while ((el = now_s() - t0) < 0.2);
    double rate = 2.0 * M * N * K * reps / el / 1e9;
    if (rate > best) best = rate;
  }
  be->free(be, A);
  be->free(be, B);
  be->free(be, C);
  return best;
}

static double run_reference(const char *cmd) {
  printf("reference: running %s\n", cmd);
  fflush(stdout);
  FILE *p = popen(cmd, "r");
  if (!p) {
    printf("reference: could not start it\n");
    return 0;
  }
  char line[4096];
  double step = 0;
  while (fgets(line, sizeof line, p)) {
    char *k = strstr(line, "\"step_s\":");
    if (k) step = strtod(k + 9, NULL);
    if (line[0] == '{') printf("reference: %s", line);
  }
  int rc = pclose(p);
  if (rc != 0 || step <= 0) {
    printf("reference: failed (exit status %d) or printed no step_s\n", rc);
    return 0;
  }
  return step;
}

int cmd_bench(int argc, char **argv) {
  RunConfig rc;
  run_config_defaults(&rc);
  char err[RUN_CONFIG_ERR_MAX];
  int help;
  if (run_config_parse_command(&rc, "bench", argc, argv, &help, err, sizeof err))
    tv_die("%s", err);
  if (help) {
    bench_usage(stdout);
    run_config_free(&rc);
    return 0;
  }
  const BenchConfig *bc = &bench_configs[rc.bench.config];
  const int steps = rc.bench.steps, warmup = rc.bench.warmup, threads = rc.bench.threads;
  const char *reference = rc.bench.reference[0] ? rc.bench.reference : NULL;
  if (rc.bench.ranks || rc.bench.methods) {
    BenchRanksOptions ro = {.steps = steps,
                            .m = rc.bench.micro_batches,
                            .S = rc.bench.tvaccine_layers,
                            .schedule = rc.bench.schedule,
                            .D = rc.bench.data_parallel,
                            .activations = rc.bench.activations,
                            .activation_budget = (size_t)rc.bench.activation_budget_mib << 20};
    int code = rc.bench.ranks ? bench_ranks(bc, &ro, &argc, &argv)
                              : bench_methods(bc, steps, threads, rc.bench.tvaccine_layers,
                                              &argc, &argv);
    run_config_free(&rc);
    return code;
  }

  LlamaConfig cfg = llama_config_default(bc->V, bc->D, bc->F, bc->L, bc->H, bc->Hkv);
  rc.method = METHOD_SFT;
  rc.seed = 7;
  rc.threads = threads;
  rc.lora.r = bc->r;
  rc.lora.dropout = 0.0f;
  printf("bench: config %s: V %d, D %d, L %d, H %d, Hkv %d, F %d, batch %d x %d tokens, LoRA r %d\n",
         bc->name, bc->V, bc->D, bc->L, bc->H, bc->Hkv, bc->F, bc->B, bc->T, bc->r);
  RunSetup run;
  run_setup_random(&run, &rc, &cfg, bc->B, bc->T, 7, 0.02f, warmup + steps, &argc, &argv);
  Backend *be = run.be;
  Stage *stage = run.stage;
  Trainer *tr = run.trainer;
  double peak_model = sgemm_rate(be, bc->B * bc->T, bc->F, bc->D);
  double peak_square = sgemm_rate(be, 2048, 2048, 2048);
  double peak = peak_model > peak_square ? peak_model : peak_square;
  printf("sgemm: %.1f GFLOP/s at %dx%dx%d (model shape), %.1f GFLOP/s at 2048^3\n", peak_model,
         bc->B * bc->T, bc->F, bc->D, peak_square);

  size_t n = (size_t)bc->B * bc->T;
  int32_t *tokens = tv_malloc(n * sizeof(int32_t)), *targets = tv_malloc(n * sizeof(int32_t));
  int64_t counted = bench_random_batch(bc, tokens, targets);

  double *times = tv_malloc(sizeof(double) * steps);
  double loss = 0;
  for (int i = 0; i < warmup + steps; i++) {
    double t0 = now_s();
    Batch batch = {.tokens = tokens, .targets = targets, .B = bc->B, .T = bc->T, .n_targets = (size_t)counted};
    StepReport r;
    trainer_step(tr, i, &batch, NULL, &r);
    loss = r.loss;
    if (i >= warmup) times[i - warmup] = now_s() - t0;
  }
  double med = bench_median(times, steps), flops = step_flops(bc);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  StageMemory m = stage_memory(stage);
  printf("step: %.4f s median (min %.4f) over %d steps, loss %.4f\n", med, times[0], steps, loss);
  printf("throughput: %.0f tokens/s, %.1f GFLOP/s achieved = %.0f %% of the measured sgemm rate\n",
         n / med, flops / med / 1e9, 100.0 * flops / med / 1e9 / peak);
  printf("memory: peak RSS %.1f MiB; weights %.1f MiB, LoRA+grads+Adam %.1f MiB, activations %.1f "
         "MiB, workspace %.1f MiB\n",
         ru.ru_maxrss / 1024.0, m.weights / 1048576.0,
         (m.lora + m.grads + m.optimizer) / 1048576.0, m.activations / 1048576.0,
         m.workspace / 1048576.0);
  if (reference) {
    double ref = run_reference(reference);
    if (ref > 0) printf("ratio: reference step / tvaccine step = %.2fx\n", ref / med);
  }
  free(times);
  free(tokens);
  free(targets);
  run_setup_free(&run);
  run_config_free(&rc);
  return 0;
}
