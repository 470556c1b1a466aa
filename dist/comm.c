/* MPI world, layer split and collectives (see comm.h). */
#include "comm.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "check.h"
#include "comm_internal.h"

/* With other ranks running, only MPI_Abort stops them all (no rank may hang). A lone rank
 * just finalises and exits, so a user's mistake ends in its one error line, not MPI's banner. */
static void abort_all_ranks(int code) {
  int up = 0, down = 0, size = 1;
  MPI_Initialized(&up);
  MPI_Finalized(&down);
  if (up && !down) {
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1) MPI_Abort(MPI_COMM_WORLD, code);
    MPI_Finalize();
  }
  exit(code);
}

/* Ranks after the first hold their error line back for a moment: a mistake in the shared
 * config or data is found by every rank, and rank 0's line and MPI_Abort come first, so it
 * prints once. A rank that alone finds an error prints it a moment later. Hooks carry no
 * context, hence this process-wide copy of the rank. */
static int report_rank = 0, report_size = 1;
static void hold_back_report(void) {
  if (report_rank == 0 || report_size == 1) return;
  struct timespec wait = {.tv_sec = 2, .tv_nsec = 0};
  nanosleep(&wait, NULL);
}

Comm *comm_init(int *argc, char ***argv) {
  Comm *c = tv_calloc(1, sizeof(Comm));
  int up = 0;
  MPI_CHECK(MPI_Initialized(&up));
  if (!up) {
    MPI_CHECK(MPI_Init(argc, argv));
    c->initialized_here = 1;
  }
  tv_set_abort_hook(abort_all_ranks);
  c->world = MPI_COMM_WORLD;
  MPI_CHECK(MPI_Comm_rank(c->world, &c->rank));
  MPI_CHECK(MPI_Comm_size(c->world, &c->size));
  report_rank = c->rank, report_size = c->size;
  tv_set_report_hook(hold_back_report);
  MPI_Comm node;
  MPI_CHECK(MPI_Comm_split_type(c->world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node));
  MPI_CHECK(MPI_Comm_rank(node, &c->local_rank));
  MPI_CHECK(MPI_Comm_free(&node));
  c->num_replicas = 1;
  return c;
}

/* A Comm over ranks of the world split by `color`, ordered by `key`. */
static Comm *split_of(Comm *world, int color, int key) {
  Comm *c = tv_calloc(1, sizeof(Comm));
  MPI_CHECK(MPI_Comm_split(world->world, color, key, &c->world));
  MPI_CHECK(MPI_Comm_rank(c->world, &c->rank));
  MPI_CHECK(MPI_Comm_size(c->world, &c->size));
  c->local_rank = world->local_rank;
  c->num_replicas = 1;
  c->is_sub = 1;
  return c;
}

static void free_sub(Comm *c) {
  if (!c) return;
  free_sub(c->replicas);
  MPI_Comm_free(&c->world);
  free(c->split);
  free(c);
}

Comm *comm_split_grid(Comm *world, int data_parallel) {
  int W = world->size, D = data_parallel;
  if (D < 1 || W % D != 0)
    tv_die("dist.data_parallel: %d replicas do not divide the %d rank(s) of this job: the "
           "ranks must form D pipelines of equal length (ranks = D x stages); set a divisor "
           "(a resumed run may change it: --set dist.data_parallel=1)", D, W);
  int P = W / D, replica = world->rank / P, stage = world->rank % P;
  free_sub(world->grid);
  Comm *pipe = split_of(world, replica, stage);
  pipe->replica = replica;
  pipe->num_replicas = D;
  Comm *peers = split_of(world, stage, replica);
  if (D > 1)
    pipe->replicas = peers;
  else
    free_sub(peers);
  world->grid = pipe;
  return pipe;
}

int comm_replica(const Comm *c) { return c->replica; }
int comm_num_replicas(const Comm *c) { return c->num_replicas > 0 ? c->num_replicas : 1; }
Comm *comm_replica_peers(Comm *c) { return c->replicas; }

void comm_finalize(Comm *c) {
  if (!c) return;
  TV_CHECK(!c->is_sub, "comm_finalize on a split of the world (the world frees it)");
  free_sub(c->grid);
  tv_set_abort_hook(NULL);
  tv_set_report_hook(NULL);
  if (c->initialized_here) MPI_Finalize();
  free(c->split);
  free(c);
}

int comm_rank(const Comm *c) { return c->rank; }
int comm_size(const Comm *c) { return c->size; }
int comm_local_rank(const Comm *c) { return c->local_rank; }

void comm_split_layers(int L, int ranks, int rank, int *l0, int *l1) {
  if (ranks < 1 || ranks > L)
    tv_die("cannot split %d decoder layers over %d ranks: every rank needs at least one layer",
           L, ranks);
  TV_CHECK(rank >= 0 && rank < ranks, "rank %d outside [0, %d)", rank, ranks);
  int base = L / ranks, extra = L % ranks;
  *l0 = rank * base + (rank < extra ? rank : extra);
  *l1 = *l0 + base + (rank < extra ? 1 : 0);
}

void comm_split_by_cost(int L, int ranks, double head_cost, int *layers_per_rank) {
  if (ranks < 1 || ranks > L)
    tv_die("cannot split %d decoder layers over %d ranks: every rank needs at least one layer",
           L, ranks);
  if (ranks == 1) {
    layers_per_rank[0] = L;
    return;
  }
  /* Layers are alike, so only the last stage's size matters; the rest split evenly. */
  int even_last = L / ranks, best = -1;
  double best_cost = 0;
  for (int k = 1; k <= L - (ranks - 1); k++) {
    int rest = L - k, biggest = (rest + ranks - 2) / (ranks - 1);
    double cost = k + head_cost > biggest ? k + head_cost : biggest;
    if (best < 0 || cost < best_cost - 1e-9 ||
        (cost < best_cost + 1e-9 && abs(k - even_last) < abs(best - even_last)))
      best = k, best_cost = cost;
  }
  int rest = L - best, others = ranks - 1;
  for (int r = 0; r < others; r++) layers_per_rank[r] = rest / others + (r < rest % others);
  layers_per_rank[ranks - 1] = best;
}

void comm_set_layer_split(Comm *c, int L, const int *layers_per_rank) {
  free(c->split);
  c->split = NULL;
  if (!layers_per_rank) return;
  int sum = 0;
  for (int r = 0; r < c->size; r++) {
    if (layers_per_rank[r] < 1) tv_die("stage %d of the layer split has %d layers; each needs one", r, layers_per_rank[r]);
    sum += layers_per_rank[r];
  }
  if (sum != L) tv_die("the layer split covers %d layers; the model has %d", sum, L);
  c->split = tv_malloc((size_t)c->size * sizeof(int));
  for (int r = 0; r < c->size; r++) c->split[r] = layers_per_rank[r];
  c->split_L = L;
}

void comm_rank_layers(const Comm *c, int L, int rank, int *l0, int *l1) {
  if (!c->split || c->split_L != L) {
    comm_split_layers(L, c->size, rank, l0, l1);
    return;
  }
  TV_CHECK(rank >= 0 && rank < c->size, "rank %d outside [0, %d)", rank, c->size);
  *l0 = 0;
  for (int r = 0; r < rank; r++) *l0 += c->split[r];
  *l1 = *l0 + c->split[rank];
}

void comm_allreduce_sum(Comm *c, double *values, int n) {
  if (n > 0) MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, values, n, MPI_DOUBLE, MPI_SUM, c->world));
}

void comm_broadcast(Comm *c, void *buf, size_t bytes, int root) {
  TV_CHECK(bytes <= (size_t)2147483647, "broadcast of %zu bytes is too large", bytes);
  MPI_CHECK(MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, c->world));
}

void comm_barrier(Comm *c) { MPI_CHECK(MPI_Barrier(c->world)); }

void comm_gather_layers(Comm *c, const void *local, size_t block_bytes, int L, void *all) {
  int *counts = tv_malloc((size_t)c->size * sizeof(int));
  int *displs = tv_malloc((size_t)c->size * sizeof(int));
  TV_CHECK(block_bytes * (size_t)L <= (size_t)2147483647, "gather of %zu bytes is too large",
           block_bytes * (size_t)L);
  for (int r = 0; r < c->size; r++) {
    int a, b;
    comm_rank_layers(c, L, r, &a, &b);
    counts[r] = (int)((size_t)(b - a) * block_bytes);
    displs[r] = (int)((size_t)a * block_bytes);
  }
  MPI_CHECK(MPI_Gatherv(local, counts[c->rank], MPI_BYTE, all, counts, displs, MPI_BYTE, 0,
                        c->world));
  free(counts);
  free(displs);
}

int comm_allreduce_max_int(Comm *c, int value) {
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_INT, MPI_MAX, c->world));
  return value;
}

int comm_first_rank_differing(Comm *c, uint64_t value) {
  uint64_t root = value;
  MPI_CHECK(MPI_Bcast(&root, 1, MPI_UINT64_T, 0, c->world));
  int first = root == value ? c->size : c->rank;
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, c->world));
  return first < c->size ? first : -1;
}
