/* Same seed, same data => the same losses and adapters bit for bit whatever the number of
 * ranks, the number of micro-batches in flight and the schedule (SPEC sections 6-7). Run as:
 * test_trainer_mpi write FILE (reference, one rank) and mpirun -np N test_trainer_mpi compare
 * FILE [D]; with D, the N ranks are D pipeline replicas of N / D stages (dist.data_parallel),
 * each taking a block of the micro-batches, and every replica must hold the one-rank adapter. Every method runs with 1, 2, 3, 4 and 8 micro-batches; on several ranks both 1F1B
 * and GPipe are compared with the one-rank run. T-Vaccine probes, resamples (so some passes
 * leave lower ranks forward-only) and uses dropout, exercising the norm allreduces too; the
 * reference recomputes frozen layers, the compared runs recompute, keep or auto (by
 * micro-batch size), which must not change a bit. */
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "comm.h"
#include "lora.h"
#include "model_fixture.h"
#include "replica_reduce.h"
#include "test_util.h"
#include "trainer.h"

#define STEPS 3
#define L 4
#define ROWS 8 /* batch rows */
#define T_LEN 6

static const Method methods[] = {METHOD_SFT, METHOD_VACCINE, METHOD_TVACCINE};
static const int micro_rows[] = {8, 4, 3, 2, 1}; /* 1, 2, 3, 4 and 8 micro-batches */
enum { N_METHODS = 3, N_MICRO = 5 };

typedef struct {
  /* per step: unperturbed loss, loss, perturbation norm N, gradient norm; then the last
   * probe's n_l: every double the ranks reduce, compared bit for bit */
  double losses[4 * STEPS + L];
  float *adapter; /* [L * per] on rank 0, allocated by the first run */
  size_t per;     /* LoRA parameters per layer */
  int wrong_buffers, wrong_slots;
  int replicas_differ; /* some replica's adapter differs from replica 0's */
} Outcome;

/* FNV-1a of the bytes: replicas compare adapters by digest. */
static uint64_t digest_of(const void *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ull;
  return h;
}

/* STEPS steps of one method at micro_B rows per micro-batch under `schedule`. */
static void run_case(Comm *comm, Method method, int micro_B, PipelineSchedule schedule,
                     ActivationPolicy activations, Outcome *out) {
  int rank = comm_rank(comm), size = comm_size(comm), l0, l1;
  comm_split_layers(L, size, rank, &l0, &l1);
  LlamaConfig cfg = llama_config_default(41, 32, 48, L, 4, 2);
  LoraConfig lc = lora_config_default();
  lc.r = 4, lc.alpha = 8, lc.dropout = 0.1f;
  Fixture f;
  fixture_init(&f, &cfg, &lc, l0, l1, ROWS, T_LEN, 12);
  TrainerConfig tc = {.method = method,
                      .rho = 2.0,
                      .S = 2,
                      .K = 2,
                      .J = 1,
                      .optim = optim_config_default(STEPS),
                      .seed = 5,
                      .activations = activations,
                      .schedule = schedule};
  Trainer *tr = trainer_create(comm, f.stage, &tc, micro_B);
  Batch batch = {.tokens = f.tokens, .targets = f.targets, .B = f.B, .T = f.T};
  for (int i = 0; i < f.B * f.T; i++) batch.n_targets += f.targets[i] >= 0;
  /* the probe batch: the first two rows */
  Batch probe = {.tokens = f.tokens, .targets = f.targets, .B = 2, .T = f.T};
  for (int i = 0; i < 2 * f.T; i++) probe.n_targets += f.targets[i] >= 0;
  for (int s = 0; s < STEPS; s++) {
    StepReport r;
    trainer_step(tr, s, &batch, &probe, &r);
    out->losses[4 * s] = r.loss_pass1;
    out->losses[4 * s + 1] = r.loss;
    out->losses[4 * s + 2] = r.perturb_norm;
    out->losses[4 * s + 3] = r.grad_norm;
  }
  memcpy(out->losses + 4 * STEPS, trainer_probe_norms(tr), L * sizeof(double));
  /* dLoss/da_l buffers exist only on the rank that owns a layer of the current A, and only
   * for those layers (every layer for vaccine, none for sft); stages receive activations / gradients only when there are several. */
  int count, wrong = 0;
  const int *act = trainer_active_layers(tr, &count);
  for (int l = l0; l < l1; l++) {
    int in_a = 0;
    for (int k = 0; k < count; k++) in_a |= act[k] == l;
    wrong |= (trainer_perturbation(tr, l) != NULL) != (in_a && method != METHOD_SFT);
  }
  TrainerMemory mem = trainer_take_memory_peak(tr);
  wrong |= size > 1 ? mem.receive == 0 : mem.receive != 0;
  out->wrong_buffers = comm_allreduce_max_int(comm, wrong);
  /* A rank holds the micro-batches its schedule keeps in flight, no more: 1F1B at most
   * (stages - rank), GPipe all m. */
  int m_all = (ROWS + micro_B - 1) / micro_B, m0, m1;
  replica_micro_range(m_all, comm_num_replicas(comm), comm_replica(comm), &m0, &m1);
  int m = m1 - m0, want = schedule == SCHEDULE_GPIPE ? m : size - rank;
  if (want > m) want = m;
  if (want < 1) want = 1; /* a replica given no micro-batch keeps the stage's first slot */
  out->wrong_slots = comm_allreduce_max_int(comm, stage_num_slots(f.stage) != want);

  /* Gather every layer's LoRA block on rank 0, in layer order. */
  size_t per = out->per = stage_lora(f.stage)->layer_numel;
  if (!out->adapter) out->adapter = tv_malloc((size_t)L * per * sizeof(float));
  comm_gather_layers(comm, stage_lora(f.stage)->params, per * sizeof(float), L, out->adapter);
  /* Stage 0 of every replica holds its replica's whole adapter: all must be replica 0's. */
  Comm *peers = comm_replica_peers(comm);
  out->replicas_differ = 0;
  if (peers && rank == 0)
    out->replicas_differ =
        comm_first_rank_differing(peers, digest_of(out->adapter, (size_t)L * per * sizeof(float))) >= 0;
  trainer_destroy(tr);
  fixture_free(&f);
}

int main(int argc, char **argv) {
  Comm *world = comm_init(&argc, &argv);
  TV_CHECK((argc == 3 || argc == 4) && (!strcmp(argv[1], "write") || !strcmp(argv[1], "compare")),
           "usage: test_trainer_mpi write|compare FILE [data_parallel]");
  Comm *comm = argc == 4 ? comm_split_grid(world, atoi(argv[3])) : world;
  int writing = !strcmp(argv[1], "write"), rank = comm_rank(comm), size = comm_size(comm);
  int replicas = comm_num_replicas(comm), replica = comm_replica(comm);
  Outcome got = {0}, ref = {0};
  FILE *fp = NULL;
  if (rank == 0 && replica == 0) {
    fp = fopen(argv[2], writing ? "wb" : "rb");
    TV_CHECK(fp, "cannot open %s%s", argv[2], writing ? "" : " (run the 'write' test first)");
  }
  int n_schedules = writing || size == 1 ? 1 : 2;
  for (int mi = 0; mi < N_METHODS; mi++)
    for (int bi = 0; bi < N_MICRO; bi++) {
      for (int si = 0; si < n_schedules; si++) {
        PipelineSchedule sched = si ? SCHEDULE_GPIPE : SCHEDULE_1F1B;
        ActivationPolicy act = writing ? ACTIVATIONS_RECOMPUTE : (ActivationPolicy)(bi % 3);
        run_case(comm, methods[mi], micro_rows[bi], sched, act, &got);
        if (rank != 0 || replica != 0) continue;
        size_t per = got.per;
        if (!writing && si == 0) {
          if (!ref.adapter) ref.adapter = tv_malloc((size_t)L * per * sizeof(float));
          TV_CHECK(fread(ref.losses, sizeof ref.losses, 1, fp) == 1 &&
                       fread(ref.adapter, sizeof(float), (size_t)L * per, fp) == (size_t)L * per,
                   "short reference file %s", argv[2]);
        }
        const char *what = method_name(methods[mi]);
        int m = (ROWS + micro_rows[bi] - 1) / micro_rows[bi];
        if (writing) {
          fwrite(got.losses, sizeof got.losses, 1, fp);
          fwrite(got.adapter, sizeof(float), (size_t)L * per, fp);
          continue;
        }
        for (int i = 0; i < 4 * STEPS + L; i++)
          EXPECT(got.losses[i] == ref.losses[i], "%s, %d x %d ranks, %d micro-batches, %s, "
                 "activations %s: reduced value %d (per step: loss 1, loss 2, N, grad norm; then "
                 "n_l) = %.17g, one rank %.17g", what, replicas, size, m, schedule_name(sched),
                 activation_policy_names[act], i, got.losses[i], ref.losses[i]);
        EXPECT(!memcmp(got.adapter, ref.adapter, (size_t)L * per * sizeof(float)),
               "%s, %d x %d ranks, %d micro-batches, %s, activations %s: adapters differ from "
               "the one-rank run", what, replicas, size, m, schedule_name(sched),
               activation_policy_names[act]);
        EXPECT(!got.replicas_differ, "%s, %d x %d ranks, %d micro-batches, %s: the replicas' "
               "adapters differ", what, replicas, size, m, schedule_name(sched));
        EXPECT(!got.wrong_buffers, "%s, %d ranks: a rank holds a perturbation buffer for a "
               "layer outside its part of A (or lacks one), or its receive buffers are wrong",
               what, size);
        EXPECT(!got.wrong_slots, "%s, %d ranks, %d micro-batches, %s: a rank holds more (or "
               "fewer) micro-batch slots than its schedule keeps in flight", what, size, m,
               schedule_name(sched));
      }
    }
  int rc = 0;
  if (rank == 0 && replica == 0) {
    fclose(fp);
    if (writing)
      printf("wrote the one-rank reference: %d methods x %d micro-batch sizes\n", N_METHODS,
             N_MICRO);
    else
      rc = tv_test_report("test_trainer_mpi");
  }
  MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
  free(got.adapter);
  free(ref.adapter);
  comm_finalize(world);
  return rc;
}
