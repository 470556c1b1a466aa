/* The p2p dispatch on CPU-only machines. A "fake device" backend (the CPU backend under another
 * name, its host copies counted: tests/counted_backend.c) takes the staged path (host copies over MPI), the one a CUDA
 * build without NCCL runs: messages of several sizes posted early both ways along a chain of
 * ranks arrive intact, every byte crosses to_host / from_host exactly once, the host path
 * copies nothing, and T-Vaccine steps through the pipeline on the fake device give the
 * same losses and adapters bit for bit as on the CPU backend. Run under mpirun (3 ranks: a
 * middle stage has both neighbours). `mismatch`: a staged receive of the wrong size must end
 * in one error naming peer and tag; `disagree`: ranks whose backends take different paths
 * must end in one error naming the rank. */
#include <mpi.h>
#include <string.h>

#include "check.h"
#include "comm.h"
#include "counted_backend.h"
#include "lora.h"
#include "model.h"
#include "p2p.h"
#include "test_util.h"
#include "trainer.h"

/* ---- transfers ---- */
enum { MESSAGES = 3 };
static size_t message_floats(int i) { return 5 + 3 * (size_t)i; }
static float value(int from, int kind, int i, size_t j) {
  return (float)(1000 * from + 100 * kind + 10 * i) + (float)j * 0.25f;
}

/* Each rank posts every receive first (as the pipeline posts ahead), then sends activations
 * up and gradients down, then waits for all; returns the bytes received. */
static size_t exchange(Comm *comm, Backend *be, P2pPath path) {
  int rank = comm_rank(comm), size = comm_size(comm);
  P2p *p = p2p_create_path(comm, be, path, 2);
  p2p_reserve(p, 4 * MESSAGES);
  EXPECT(p2p_path(p) == path, "path %s", p2p_path_name(p2p_path(p)));
  float *in[2][MESSAGES] = {{0}}, *out[2][MESSAGES] = {{0}};
  P2pRequest req[4][MESSAGES];
  size_t received = 0;
  for (int k = 0; k < 2; k++)
    for (int i = 0; i < MESSAGES; i++) {
      size_t n = message_floats(i);
      in[k][i] = be->alloc(be, n * sizeof(float));
      out[k][i] = be->alloc(be, n * sizeof(float));
      for (size_t j = 0; j < n; j++) out[k][i][j] = value(rank, k, i, j);
      req[k][i] = req[2 + k][i] = P2P_NONE;
    }
  for (int i = 0; i < MESSAGES; i++) {
    size_t n = message_floats(i);
    if (rank > 0)
      req[0][i] = p2p_post_recv(p, in[0][i], n, rank - 1, P2P_TAG_ACTIVATION + 2 * i);
    if (rank + 1 < size)
      req[1][i] = p2p_post_recv(p, in[1][i], n, rank + 1, P2P_TAG_GRADIENT + 2 * i);
  }
  for (int i = 0; i < MESSAGES; i++) {
    size_t n = message_floats(i);
    if (rank + 1 < size)
      req[2][i] = p2p_post_send(p, out[0][i], n, rank + 1, P2P_TAG_ACTIVATION + 2 * i);
    if (rank > 0) req[3][i] = p2p_post_send(p, out[1][i], n, rank - 1, P2P_TAG_GRADIENT + 2 * i);
  }
  for (int r = 0; r < 4; r++)
    for (int i = MESSAGES - 1; i >= 0; i--) p2p_wait(p, &req[r][i]); /* any order */
  for (int i = 0; i < MESSAGES; i++) {
    size_t n = message_floats(i), bad = 0;
    if (rank > 0) {
      for (size_t j = 0; j < n; j++) bad += in[0][i][j] != value(rank - 1, 0, i, j);
      received += n * sizeof(float);
    }
    if (rank + 1 < size) {
      for (size_t j = 0; j < n; j++) bad += in[1][i][j] != value(rank + 1, 1, i, j);
      received += n * sizeof(float);
    }
    EXPECT(bad == 0, "rank %d, %s: message %d has %zu wrong floats", rank, p2p_path_name(path), i,
           bad);
  }
  size_t sent = p2p_bytes_sent(p);
  p2p_destroy(p);
  for (int k = 0; k < 2; k++)
    for (int i = 0; i < MESSAGES; i++) {
      be->free(be, in[k][i]);
      be->free(be, out[k][i]);
    }
  size_t want_sent = 0;
  for (int i = 0; i < MESSAGES; i++)
    want_sent += message_floats(i) * sizeof(float) * ((rank > 0) + (rank + 1 < size));
  EXPECT(sent == want_sent, "rank %d: %zu bytes sent, want %zu", rank, sent, want_sent);
  return received;
}

/* ---- the pipeline on either backend ---- */
enum { STEPS = 3, LAYERS = 4, ROWS = 4, T_LEN = 5 };

/* Losses of STEPS T-Vaccine steps (micro-batches of 1 row: 4 in flight) and rank 0's final
 * adapters, with this rank's stage on backend `be`. */
static void train(Comm *comm, Backend *be, double *losses, float *adapter, size_t *numel) {
  int rank = comm_rank(comm), size = comm_size(comm), l0, l1;
  comm_split_layers(LAYERS, size, rank, &l0, &l1);
  LlamaConfig cfg = llama_config_default(37, 24, 40, LAYERS, 4, 2);
  LoraConfig lc = lora_config_default();
  lc.r = 4, lc.dropout = 0.1f;
  Stage *s = stage_create(be, &cfg, &lc, l0, l1, ROWS, T_LEN);
  stage_init_random_weights(s, 21, 0.2f);
  lora_set_init(be, stage_lora(s), 22);
  TrainerConfig tc = {.method = METHOD_TVACCINE, .rho = 2.0, .S = 2, .K = 2, .J = 1,
                      .optim = optim_config_default(STEPS), .seed = 9};
  Trainer *tr = trainer_create(comm, s, &tc, 1);
  int32_t tokens[ROWS * T_LEN], targets[ROWS * T_LEN];
  for (int i = 0; i < ROWS * T_LEN; i++) tokens[i] = (7 * i + 3) % 37;
  for (int i = 0; i < ROWS * T_LEN; i++) targets[i] = i % T_LEN == T_LEN - 1 ? -1 : tokens[i + 1];
  Batch batch = {.tokens = tokens, .targets = targets, .B = ROWS, .T = T_LEN,
                 .n_targets = ROWS * (T_LEN - 1)};
  Batch probe = {.tokens = tokens, .targets = targets, .B = 2, .T = T_LEN,
                 .n_targets = 2 * (T_LEN - 1)};
  for (int step = 0; step < STEPS; step++) {
    StepReport r;
    trainer_step(tr, step, &batch, &probe, &r);
    losses[2 * step] = r.loss_pass1;
    losses[2 * step + 1] = r.loss;
  }
  LoraSet *lora = stage_lora(s);
  size_t per = lora->layer_numel;
  size_t local = per * (size_t)(l1 - l0);
  float *mine = tv_malloc(local * sizeof(float));
  be->to_host(be, mine, lora->params, local * sizeof(float));
  comm_gather_layers(comm, mine, per * sizeof(float), LAYERS, adapter);
  *numel = per * LAYERS;
  free(mine);
  trainer_destroy(tr);
  stage_destroy(s);
}

static int mismatch(Comm *comm) {
  CountedBackend *f = counted_backend_create("fake-device");
  P2p *p = p2p_create(comm, &f->be, 1);
  float buf[4] = {1, 2, 3, 4};
  if (comm_rank(comm) == 0) p2p_send(p, buf, 3, 1, 7);
  if (comm_rank(comm) == 1) p2p_recv(p, buf, 4, 0, 7);
  comm_barrier(comm); /* not reached on rank 1: its receive ends the run */
  p2p_destroy(p);
  comm_finalize(comm);
  return 0;
}

/* Rank 0 on the CPU, the others on the fake device: the paths differ, which must end in one
 * error naming the first rank that differs, before any transfer. */
static int disagree(Comm *comm) {
  CountedBackend *f = counted_backend_create("fake-device");
  Backend *cpu = backend_cpu_create(1);
  P2p *p = p2p_create(comm, comm_rank(comm) == 0 ? cpu : &f->be, 1);
  p2p_destroy(p); /* not reached */
  comm_finalize(comm);
  return 0;
}

int main(int argc, char **argv) {
  Comm *comm = comm_init(&argc, &argv);
  if (argc > 1 && strcmp(argv[1], "mismatch") == 0) return mismatch(comm);
  if (argc > 1 && strcmp(argv[1], "disagree") == 0) return disagree(comm);
  int rank = comm_rank(comm);

  Backend *cpu = backend_cpu_create(1);
  CountedBackend *f = counted_backend_create("fake-device");
  EXPECT(p2p_path_for(cpu) == P2P_HOST_MPI, "the CPU backend takes %s",
         p2p_path_name(p2p_path_for(cpu)));
  EXPECT(p2p_path_for(&f->be) == P2P_STAGED_MPI, "a non-CPU backend without NCCL takes %s",
         p2p_path_name(p2p_path_for(&f->be)));

  /* The host path hands the buffers to MPI: no copies. */
  exchange(comm, &f->be, P2P_HOST_MPI);
  EXPECT(f->to_host_bytes == 0 && f->from_host_bytes == 0, "rank %d: host path copied %zu / %zu",
         rank, f->to_host_bytes, f->from_host_bytes);
  /* The staged path: each sent byte leaves through to_host, each received one enters through
   * from_host, once. */
  size_t sent_before = f->to_host_bytes;
  size_t received = exchange(comm, &f->be, P2P_STAGED_MPI);
  size_t want_sent = 0;
  for (int i = 0; i < MESSAGES; i++)
    want_sent += message_floats(i) * sizeof(float) *
                 ((rank > 0) + (rank + 1 < comm_size(comm)));
  EXPECT(f->to_host_bytes - sent_before == want_sent, "rank %d: staged %zu bytes out, want %zu",
         rank, f->to_host_bytes - sent_before, want_sent);
  EXPECT(f->from_host_bytes == received, "rank %d: staged %zu bytes in, want %zu", rank,
         f->from_host_bytes, received);

  /* The pipeline drives the staged path exactly like the host one. */
  double loss_cpu[2 * STEPS], loss_fake[2 * STEPS];
  float *adapter_cpu = tv_calloc(1 << 16, sizeof(float)), *adapter_fake = tv_calloc(1 << 16, sizeof(float));
  size_t numel = 0;
  train(comm, cpu, loss_cpu, adapter_cpu, &numel);
  TV_CHECK(numel <= (1 << 16), "adapter of %zu floats", numel);
  size_t copied = f->to_host_bytes;
  train(comm, &f->be, loss_fake, adapter_fake, &numel);
  if (comm_size(comm) > 1)
    EXPECT(f->to_host_bytes > copied, "rank %d: the pipeline on the fake device staged nothing",
           rank);
  EXPECT(memcmp(loss_cpu, loss_fake, sizeof loss_cpu) == 0,
         "rank %d: losses differ: step 0 %.17g vs %.17g, last %.17g vs %.17g", rank, loss_cpu[0],
         loss_fake[0], loss_cpu[2 * STEPS - 1], loss_fake[2 * STEPS - 1]);
  if (rank == 0)
    EXPECT(memcmp(adapter_cpu, adapter_fake, numel * sizeof(float)) == 0,
           "adapters differ after %d steps", STEPS);
  free(adapter_cpu);
  free(adapter_fake);
  backend_destroy(&f->be);
  backend_destroy(cpu);
  int failed = comm_allreduce_max_int(comm, tv_test_failures);
  if (rank == 0) tv_test_report("test_p2p_paths");
  comm_finalize(comm);
  return failed ? 1 : 0;
}
