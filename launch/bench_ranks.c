/* `tvaccine bench --ranks`: steps of sft, vaccine and tvaccine (A low, A mid, A high) through
 * the pipeline on however many ranks mpirun started (as D pipeline replicas with
 * --data-parallel D), m micro-batches of one row each: step time, each rank's measured bubble
 * (the step's share spent outside stage compute) against the ideal (P-1)/(m+P-1), bytes each
 * rank sends and its step memory. bench/ranks.sh runs it on 1 and 2 ranks and prints the
 * speed-ups. Reports only; never fails on a timing. */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"
#include "check.h"
#include "comm.h"
#include "replica_reduce.h"
#include "subcommands.h"
#include "trainer.h"

typedef struct {
  const char *label;
  Method method;
  const int *fixed; /* [S] fixed T-Vaccine set, or NULL */
} RankRun;

/* Per-rank figures of one run, summed into [P] vectors (replica 0's pipeline on its rank 0). */
typedef struct {
  double step_s, *compute_s, *wait_s, *bytes; /* per step */
  double *step_mem; /* activations kept + perturbation + receive buffers, peak of the steps */
  double *cpu_s;    /* CPU seconds of the rank's compute per step (no MPI polling) */
} RankResult;

static RankResult run_ranks(Comm *world, Comm *comm, Backend *be, const BenchConfig *bc,
                            const RankRun *rr, const BenchRanksOptions *o) {
  int m = o->m, S = o->S, steps = o->steps;
  int P = comm_size(comm), rank = comm_rank(comm), l0, l1;
  LlamaConfig cfg = llama_config_default(bc->V, bc->D, bc->F, bc->L, bc->H, bc->Hkv);
  /* The layer split of align (dist.split: cost): the head weighs on the last stage. */
  int *sizes = tv_malloc((size_t)P * sizeof(int));
  comm_split_by_cost(bc->L, P, pipeline_head_cost(&cfg), sizes);
  comm_set_layer_split(comm, bc->L, sizes);
  comm_rank_layers(comm, bc->L, rank, &l0, &l1);
  free(sizes);
  LoraConfig lc = lora_config_default();
  lc.r = bc->r;
  lc.dropout = 0.1f;
  Stage *s = stage_create(be, &cfg, &lc, l0, l1, 1, bc->T);
  stage_init_random_weights(s, 7, 0.02f);
  lora_set_init(be, stage_lora(s), 7);
  BenchConfig rows = *bc;
  rows.B = m; /* m micro-batches of one row */
  size_t n = (size_t)m * bc->T;
  int32_t *tokens = tv_malloc(n * sizeof(int32_t)), *targets = tv_malloc(n * sizeof(int32_t));
  Batch batch = {.tokens = tokens, .targets = targets, .B = m, .T = bc->T,
                 .n_targets = (size_t)bench_random_batch(&rows, tokens, targets)};
  TrainerConfig tc = {.method = rr->method,
                      .rho = 3.0,
                      .S = S,
                      .J = 20,
                      .K = 200,
                      .fixed_layers = rr->fixed,
                      .num_fixed = rr->fixed ? S : 0,
                      .optim = optim_config_default(steps + 1),
                      .seed = 7,
                      .activations = o->activations,
                      .activation_budget = o->activation_budget,
                      .schedule = o->schedule};
  Trainer *tr = trainer_create(comm, s, &tc, 1);
  StepReport rep;
  trainer_step(tr, 0, &batch, NULL, &rep); /* warm-up: slots and buffers grow here */
  PipelineStats before = trainer_pipeline_stats(tr);
  trainer_take_memory_peak(tr);
  comm_barrier(world);
  double t0 = now_s();
  for (int i = 1; i <= steps; i++) trainer_step(tr, i, &batch, NULL, &rep);
  double elapsed = now_s() - t0;
  PipelineStats after = trainer_pipeline_stats(tr);
  TrainerMemory mem = trainer_take_memory_peak(tr);
  RankResult r = {.compute_s = tv_calloc((size_t)P, sizeof(double)),
                  .wait_s = tv_calloc((size_t)P, sizeof(double)),
                  .bytes = tv_calloc((size_t)P, sizeof(double)),
                  .step_mem = tv_calloc((size_t)P, sizeof(double)),
                  .cpu_s = tv_calloc((size_t)P, sizeof(double))};
  r.compute_s[rank] = (after.compute_s - before.compute_s) / steps;
  r.wait_s[rank] = (after.wait_s - before.wait_s) / steps;
  r.bytes[rank] = (double)(after.bytes_sent - before.bytes_sent) / steps;
  r.step_mem[rank] = (double)trainer_memory_step_bytes(&mem);
  r.cpu_s[rank] = (after.compute_cpu_s - before.compute_cpu_s) / steps;
  comm_allreduce_sum(comm, r.compute_s, P);
  comm_allreduce_sum(comm, r.wait_s, P);
  comm_allreduce_sum(comm, r.bytes, P);
  comm_allreduce_sum(comm, r.step_mem, P);
  comm_allreduce_sum(comm, r.cpu_s, P);
  /* The step of the slowest rank of any replica is the step. */
  int W = comm_size(world);
  double slowest[1] = {0};
  double *all = tv_calloc((size_t)W, sizeof(double));
  all[comm_rank(world)] = elapsed / steps;
  comm_allreduce_sum(world, all, W);
  for (int q = 0; q < W; q++) slowest[0] = all[q] > slowest[0] ? all[q] : slowest[0];
  r.step_s = slowest[0];
  free(all);
  free(tokens);
  free(targets);
  trainer_destroy(tr);
  stage_destroy(s);
  return r;
}

int bench_ranks(const BenchConfig *bc, const BenchRanksOptions *o, int *argc, char ***argv) {
  Comm *world = comm_init(argc, argv);
  Comm *comm = comm_split_grid(world, o->D);
  Backend *be = backend_cpu_create(1);
  int P = comm_size(comm), rank = comm_rank(world), L = bc->L, S = o->S, m = o->m, D = o->D;
  if (S > L) tv_die("--tvaccine-layers %d exceeds the %d layers", S, L);
  /* A low: the lowest S layers (backward through every layer, all frozen ones in range);
   * A mid: layer L/2-1 and the top S-1 (backward skipped below L/2-1, frozen layers above it);
   * A high: the top S (backward only through the top). */
  int *low = tv_malloc((size_t)S * sizeof(int)), *mid = tv_malloc((size_t)S * sizeof(int));
  int *high = tv_malloc((size_t)S * sizeof(int));
  for (int k = 0; k < S; k++) low[k] = k, high[k] = L - S + k, mid[k] = k ? L - S + k : L / 2 - 1;
  /* A mid differs from A low and A high only when S <= L/2-1 < L-S; otherwise it is left out. */
  int has_mid = L / 2 - 1 >= S && L / 2 - 1 < L - S;
  const RankRun all_runs[] = {
      {.label = "sft", .method = METHOD_SFT},
      {.label = "vaccine", .method = METHOD_VACCINE},
      {.label = "tvaccine A low", .method = METHOD_TVACCINE, .fixed = low},
      {.label = "tvaccine A mid", .method = METHOD_TVACCINE, .fixed = mid},
      {.label = "tvaccine A high", .method = METHOD_TVACCINE, .fixed = high},
  };
  RankRun runs[5];
  int n_runs = 0;
  for (int i = 0; i < 5; i++)
    if (all_runs[i].fixed != mid || has_mid) runs[n_runs++] = all_runs[i];
  int m0, m1;
  replica_micro_range(m, D, 0, &m0, &m1); /* replica 0 runs the most micro-batches */
  double ideal = (double)(P - 1) / (m1 - m0 + P - 1);
  if (rank == 0) {
    printf("bench --ranks: config %s (%d layers, %d tokens a row), %d ranks = %d replica(s) x %d "
           "stage(s), %d micro-batches of one row (%d on replica 0), schedule %s, 1 thread per "
           "rank, S %d (A low {0..%d}",
           bc->name, L, bc->T, comm_size(world), D, P, m, m1 - m0, schedule_name(o->schedule), S,
           S - 1);
    if (has_mid) {
      printf(", A mid {%d", mid[0]);
      for (int k = 1; k < S; k++) printf(", %d", mid[k]);
      printf("}");
    }
    printf(", A high {%d..%d}), T-Vaccine's frozen layers: activations %s", L - S, L - 1,
           activation_policy_names[o->activations]);
    if (o->activations == ACTIVATIONS_AUTO && o->activation_budget)
      printf(" (budget %zu MiB)", o->activation_budget >> 20);
    printf("; mean of %d steps after one warm-up; ideal bubble %.3f; layers per stage by cost; "
           "per-rank figures of replica 0; mem = step memory (activations kept + perturbation + "
           "receive buffers); cpu = CPU seconds of the rank's compute a step (its work, whatever "
           "else the machine runs)\n",
           o->steps, ideal);
  }
  for (int i = 0; i < n_runs; i++) {
    RankResult r = run_ranks(world, comm, be, bc, &runs[i], o);
    if (rank == 0) {
      printf("RESULT ranks=%d grid=%dx%d method=\"%s\" step_s=%.4f", comm_size(world), D, P,
             runs[i].label, r.step_s);
      for (int q = 0; q < P; q++)
        printf("  rank%d: compute %.3f s wait %.3f s bubble %.3f sent %.2f MiB mem %.1f MiB "
               "cpu %.3f s", q, r.compute_s[q], r.wait_s[q], 1.0 - r.compute_s[q] / r.step_s,
               r.bytes[q] / 1048576.0, r.step_mem[q] / 1048576.0, r.cpu_s[q]);
      printf("\n");
      fflush(stdout);
    }
    free(r.compute_s);
    free(r.wait_s);
    free(r.bytes);
    free(r.step_mem);
    free(r.cpu_s);
  }
  free(low);
  free(mid);
  free(high);
  backend_destroy(be);
  comm_finalize(world);
  return 0;
}
