/* A step waits for the device a few times, not once per layer, target or micro-batch: on a
 * counting backend (tests/counted_backend.c) the host reads of one trainer step (copies back,
 * explicit syncs, host-returning reductions) must not grow with the number of layers or of
 * micro-batches, and stay within two per pass (the loss, then one vector of per-layer norms).
 * One rank; steps after the first (which allocates) are counted. */
#include <string.h>

#include "check.h"
#include "comm.h"
#include "counted_backend.h"
#include "lora.h"
#include "test_util.h"
#include "trainer.h"

enum { ROWS = 4, T_LEN = 5, VOCAB = 37 };

typedef struct {
  size_t reads, uploads;
} StepCount;

/* Host reads and uploads of step 1 (step 0 allocates and is not counted). */
static StepCount count_step(Comm *comm, Method method, int layers, int micro_B) {
  CountedBackend *cb = counted_backend_create("counted");
  Backend *be = &cb->be;
  LlamaConfig cfg = llama_config_default(VOCAB, 24, 40, layers, 4, 2);
  LoraConfig lc = lora_config_default();
  lc.r = 4;
  Stage *s = stage_create(be, &cfg, &lc, 0, layers, ROWS, T_LEN);
  stage_init_random_weights(s, 3, 0.2f);
  lora_set_init(be, stage_lora(s), 4);
  TrainerConfig tc = {.method = method, .rho = 2.0, .S = 2, .K = 1, .J = 1,
                      .optim = optim_config_default(4), .seed = 9};
  Trainer *tr = trainer_create(comm, s, &tc, micro_B);
  int32_t tokens[ROWS * T_LEN], targets[ROWS * T_LEN];
  for (int i = 0; i < ROWS * T_LEN; i++) tokens[i] = (5 * i + 1) % VOCAB;
  for (int i = 0; i < ROWS * T_LEN; i++) targets[i] = i % T_LEN == T_LEN - 1 ? -1 : tokens[i + 1];
  Batch batch = {.tokens = tokens, .targets = targets, .B = ROWS, .T = T_LEN,
                 .n_targets = ROWS * (T_LEN - 1)};
  StepCount c = {0};
  for (int step = 0; step < 2; step++) {
    size_t reads = counted_backend_reads(cb), uploads = cb->from_host_calls;
    StepReport r;
    trainer_step(tr, step, &batch, &batch, &r);
    c.reads = counted_backend_reads(cb) - reads;
    c.uploads = cb->from_host_calls - uploads;
    EXPECT(r.loss > 0 && r.grad_norm > 0, "step %d: loss %g, grad norm %g", step, r.loss, r.grad_norm);
  }
  trainer_destroy(tr);
  stage_destroy(s);
  backend_destroy(be);
  return c;
}

int main(int argc, char **argv) {
  Comm *comm = comm_init(&argc, &argv);
  static const Method methods[] = {METHOD_SFT, METHOD_VACCINE, METHOD_TVACCINE};
  static const char *const names[] = {"sft", "vaccine", "tvaccine"};
  static const int passes[] = {1, 2, 3}; /* T-Vaccine probes every step here (K = 1) */
  for (int m = 0; m < 3; m++) {
    StepCount small = count_step(comm, methods[m], 2, ROWS);  /* 2 layers, 1 micro-batch */
    StepCount large = count_step(comm, methods[m], 6, 1);     /* 6 layers, 4 micro-batches */
    printf("%-8s host reads per step: %zu (2 layers, 1 micro-batch), %zu (6 layers, 4 "
           "micro-batches); uploads %zu, %zu\n", names[m], small.reads, large.reads,
           small.uploads, large.uploads);
    EXPECT(small.reads == large.reads, "%s: host reads grow with layers / micro-batches: %zu -> %zu",
           names[m], small.reads, large.reads);
    EXPECT(large.reads <= (size_t)(2 * passes[m]), "%s: %zu host reads in a step of %d passes",
           names[m], large.reads, passes[m]);
  }
  int rc = tv_test_report("test_host_syncs");
  comm_finalize(comm);
  return rc;
}
