/* core_step (the single-stage step the GPU tests and bench_gpu drive, without MPI) against
 * dist/trainer on one rank, on the CPU: sft, vaccine and T-Vaccine (probe every step), same
 * weights, adapters, batches and seeds. The losses, and the adapters after each step, must
 * be bit-identical: the two run the same kernels in the same order, so any difference is a
 * step that does something else (another dropout stream, sampling draw, clipping or order). */
#include <string.h>

#include "check.h"
#include "core_step.h"
#include "model_fixture.h"
#include "test_util.h"
#include "trainer.h"

static void compare(Comm *comm, Method m) {
  LlamaConfig cfg = llama_config_default(41, 32, 48, 4, 4, 2);
  LoraConfig lc = lora_config_default();
  lc.r = 4, lc.alpha = 8, lc.dropout = 0.1f;
  Fixture a, b;
  fixture_init(&a, &cfg, &lc, 0, 4, 4, 8, 12);
  fixture_init(&b, &cfg, &lc, 0, 4, 4, 8, 12);
  TrainerConfig tc = {.method = m, .rho = 2.0, .S = 2, .J = 1, .K = 1,
                      .optim = optim_config_default(10), .seed = 5};
  Trainer *tr = trainer_create(comm, a.stage, &tc, a.B);
  CoreStepConfig cc = {.method = m, .S = 2, .rho = 2.0, .activations = tc.activations,
                       .freeze_scope = tc.freeze_scope, .optim = tc.optim, .seed = 5};
  CoreTrainer *ct = core_trainer_create(b.stage, &cc);
  Batch batch = {.tokens = a.tokens, .targets = a.targets, .B = a.B, .T = a.T};
  for (int i = 0; i < a.B * a.T; i++) batch.n_targets += a.targets[i] >= 0;
  MicroBatch mb = {.tokens = b.tokens, .targets = b.targets, .B = b.B, .T = b.T,
                   .loss_scale = 1.0f / (float)batch.n_targets};
  size_t n = fixture_lora_numel(&a);
  float *pa = tv_malloc(n * sizeof(float)), *pb = tv_malloc(n * sizeof(float));
  for (int step = 0; step < 3; step++) {
    StepReport r;
    trainer_step(tr, step, &batch, &batch, &r);
    double loss = core_trainer_step(ct, step, &mb, &mb);
    EXPECT(loss == r.loss, "%s step %d: core_step loss %.17g, trainer %.17g", method_name(m),
           step, loss, r.loss);
    fixture_get_lora_params(&a, pa);
    fixture_get_lora_params(&b, pb);
    EXPECT(memcmp(pa, pb, n * sizeof(float)) == 0, "%s step %d: adapters differ", method_name(m),
           step);
  }
  free(pa), free(pb);
  core_trainer_destroy(ct);
  trainer_destroy(tr);
  fixture_free(&a);
  fixture_free(&b);
}

int main(int argc, char **argv) {
  Comm *comm = comm_init(&argc, &argv);
  compare(comm, METHOD_SFT);
  compare(comm, METHOD_VACCINE);
  compare(comm, METHOD_TVACCINE);
  int rc = tv_test_report("test_core_step");
  comm_finalize(comm);
  return rc;
}
