/* Same seed, same data => the same losses and adapters bit for bit whatever the number of
 * ranks (SPEC sections 6-7). Run as: test_trainer_mpi write FILE (reference, one rank) and
 * mpirun -np N test_trainer_mpi compare FILE. T-Vaccine with probing, resampling, dropout and
 * two micro-batches exercises the pipeline, the norm allreduces and the shared sampling. */
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "comm.h"
#include "lora.h"
#include "model_fixture.h"
#include "test_util.h"
#include "trainer.h"

#define STEPS 4
#define L 4

int main(int argc, char **argv) {
  Comm *comm = comm_init(&argc, &argv);
  TV_CHECK(argc == 3 && (!strcmp(argv[1], "write") || !strcmp(argv[1], "compare")),
           "usage: test_trainer_mpi write|compare FILE");
  int writing = !strcmp(argv[1], "write"), rank = comm_rank(comm), size = comm_size(comm);
  int l0, l1;
  comm_split_layers(L, size, rank, &l0, &l1);

  LlamaConfig cfg = llama_config_default(41, 32, 48, L, 4, 2);
  LoraConfig lc = lora_config_default();
  lc.r = 4, lc.alpha = 8, lc.dropout = 0.1f;
  Fixture f;
  fixture_init(&f, &cfg, &lc, l0, l1, 4, 8, 12);
  TrainerConfig tc = {0};
  tc.method = METHOD_TVACCINE;
  tc.rho = 2.0, tc.S = 2, tc.K = 2, tc.J = 1;
  tc.optim = optim_config_default(STEPS);
  tc.seed = 5;
  Trainer *tr = trainer_create(comm, f.stage, &tc, 2);
  Batch batch = {.tokens = f.tokens, .targets = f.targets, .B = f.B, .T = f.T};
  for (int i = 0; i < f.B * f.T; i++) batch.n_targets += f.targets[i] >= 0;
  /* the probe batch: the first two rows */
  Batch probe = {.tokens = f.tokens, .targets = f.targets, .B = 2, .T = f.T};
  for (int i = 0; i < 2 * f.T; i++) probe.n_targets += f.targets[i] >= 0;

  double losses[2 * STEPS];
  for (int s = 0; s < STEPS; s++) {
    StepReport r;
    trainer_step(tr, s, &batch, &probe, &r);
    losses[2 * s] = r.loss_pass1;
    losses[2 * s + 1] = r.loss;
  }
  /* dLoss/da_l buffers exist only on the rank that owns a layer of the current A, and only
   * for those layers; stages receive activations / gradients only when there are several. */
  int count, wrong_buffers = 0;
  const int *act = trainer_active_layers(tr, &count);
  for (int l = l0; l < l1; l++) {
    int in_a = 0;
    for (int k = 0; k < count; k++) in_a |= act[k] == l;
    wrong_buffers |= (trainer_perturbation(tr, l) != NULL) != in_a;
  }
  TrainerMemory mem = trainer_take_memory_peak(tr);
  wrong_buffers |= size > 1 ? mem.receive == 0 : mem.receive != 0;
  wrong_buffers = comm_allreduce_max_int(comm, wrong_buffers);

  /* Gather every layer's LoRA block on rank 0, in layer order. */
  size_t per = stage_lora(f.stage)->layer_numel, mine = (size_t)(l1 - l0) * per;
  float *all = tv_malloc((size_t)L * per * sizeof(float));
  int *counts = tv_malloc(size * sizeof(int)), *displs = tv_malloc(size * sizeof(int));
  for (int r = 0; r < size; r++) {
    int a, b;
    comm_split_layers(L, size, r, &a, &b);
    counts[r] = (int)((size_t)(b - a) * per);
    displs[r] = (int)((size_t)a * per);
  }
  MPI_Gatherv(stage_lora(f.stage)->params, (int)mine, MPI_FLOAT, all, counts, displs, MPI_FLOAT,
              0, MPI_COMM_WORLD);
  int rc = 0;
  if (rank == 0) {
    if (writing) {
      FILE *fp = fopen(argv[2], "wb");
      TV_CHECK(fp, "cannot write %s", argv[2]);
      fwrite(losses, sizeof losses, 1, fp);
      fwrite(all, sizeof(float), (size_t)L * per, fp);
      fclose(fp);
      printf("wrote the %d-rank reference: loss %.9g\n", size, losses[2 * STEPS - 1]);
    } else {
      FILE *fp = fopen(argv[2], "rb");
      TV_CHECK(fp, "cannot read %s (run the 'write' test first)", argv[2]);
      double ref_losses[2 * STEPS];
      float *ref = tv_malloc((size_t)L * per * sizeof(float));
      TV_CHECK(fread(ref_losses, sizeof ref_losses, 1, fp) == 1 &&
                   fread(ref, sizeof(float), (size_t)L * per, fp) == (size_t)L * per,
               "short reference file %s", argv[2]);
      fclose(fp);
      for (int i = 0; i < 2 * STEPS; i++)
        EXPECT(losses[i] == ref_losses[i], "%d ranks: loss %d = %.17g, one rank %.17g", size, i,
               losses[i], ref_losses[i]);
      EXPECT(!memcmp(all, ref, (size_t)L * per * sizeof(float)),
             "%d ranks: adapters differ from the one-rank run", size);
      EXPECT(!wrong_buffers, "%d ranks: a rank holds a perturbation buffer for a layer outside "
             "its part of A (or lacks one), or its receive buffers are wrong", size);
      free(ref);
      rc = tv_test_report("test_trainer_mpi");
    }
  }
  MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
  free(all);
  free(counts);
  free(displs);
  trainer_destroy(tr);
  fixture_free(&f);
  comm_finalize(comm);
  return rc;
}
