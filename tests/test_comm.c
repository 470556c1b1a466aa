/* dist/comm under mpirun: the layer split covers every layer once, contiguously and
 * balanced, the collectives sum and broadcast across ranks, and the data x pipeline grid
 * places world rank w at stage w % P of replica w / P. */
#include <mpi.h>
#include <string.h>

#include "comm.h"
#include "replica_reduce.h"
#include "test_util.h"

int main(int argc, char **argv) {
  Comm *c = comm_init(&argc, &argv);
  int rank = comm_rank(c), size = comm_size(c);

  for (int L = size; L <= size + 9; L++) {
    int expect_l0 = 0, smallest = L, largest = 0;
    for (int r = 0; r < size; r++) {
      int l0, l1;
      comm_split_layers(L, size, r, &l0, &l1);
      EXPECT(l0 == expect_l0 && l1 > l0, "L %d rank %d: [%d, %d)", L, r, l0, l1);
      smallest = l1 - l0 < smallest ? l1 - l0 : smallest;
      largest = l1 - l0 > largest ? l1 - l0 : largest;
      expect_l0 = l1;
    }
    EXPECT(expect_l0 == L, "L %d: split ends at %d", L, expect_l0);
    EXPECT(largest - smallest <= 1, "L %d: unbalanced split %d..%d", L, smallest, largest);
  }

  /* The cost split, worked out by hand: the head counts as head_cost layers on the last
   * stage, the other stages share the rest evenly. */
  const struct {
    int L, P;
    double head;
    int want[4];
  } cost_cases[] = {
      {8, 2, 1.33, {5, 3}},     /* config M: last 3 + 1.33 = 4.33 <= 5 */
      {8, 2, 0.0, {4, 4}},      /* no head cost: the even split */
      {8, 2, 10.0, {7, 1}},     /* a huge head: one layer beside it */
      {4, 4, 3.0, {1, 1, 1, 1}}, /* one layer a stage is all there is */
      {10, 3, 0.5, {4, 3, 3}},  /* last 2 or 3 both give 4: keep the even split's 3 */
      {9, 3, 1.0, {3, 3, 3}},   /* last 2: 3 beside 4 (max 4); last 3: 4 beside 3: a tie */
      {9, 3, 2.0, {4, 3, 2}},   /* last 2: 4 beside 4; last 3: 5 beside 3 */
      {5, 1, 2.0, {5}},
  };
  for (size_t i = 0; i < sizeof cost_cases / sizeof cost_cases[0]; i++) {
    int got[4] = {0};
    comm_split_by_cost(cost_cases[i].L, cost_cases[i].P, cost_cases[i].head, got);
    EXPECT(!memcmp(got, cost_cases[i].want, (size_t)cost_cases[i].P * sizeof(int)),
           "cost split of %d layers over %d with head %g: got %d %d %d %d", cost_cases[i].L,
           cost_cases[i].P, cost_cases[i].head, got[0], got[1], got[2], got[3]);
  }
  /* A set split drives comm_rank_layers and the gather: the last rank holds one layer. */
  {
    int sizes[8], L = 0;
    for (int r = 0; r < size; r++) L += sizes[r] = r == size - 1 ? 1 : 1 + (r == 0 ? 3 : 0);
    comm_set_layer_split(c, L, sizes);
    int l0, l1;
    comm_rank_layers(c, L, rank, &l0, &l1);
    EXPECT(l1 - l0 == sizes[rank] && (rank != size - 1 || l1 == L), "rank %d: [%d, %d)", rank, l0,
           l1);
    int mine[8], all[16] = {0};
    for (int l = l0; l < l1; l++) mine[l - l0] = 100 + l;
    comm_gather_layers(c, mine, sizeof(int), L, all);
    for (int l = 0; l < L && rank == 0; l++) EXPECT(all[l] == 100 + l, "gathered layer %d = %d", l, all[l]);
    comm_set_layer_split(c, L, NULL);
  }

  double v[3] = {rank + 1.0, 0.5, rank == 0 ? 7.0 : 0.0};
  comm_allreduce_sum(c, v, 3);
  EXPECT(v[0] == size * (size + 1) / 2.0, "sum of rank+1 = %g", v[0]);
  EXPECT(v[1] == 0.5 * size, "sum of 0.5 = %g", v[1]);
  EXPECT(v[2] == 7.0, "sum of one-hot = %g", v[2]);

  char msg[16] = {0};
  if (rank == size - 1) strcpy(msg, "from the last");
  comm_broadcast(c, msg, sizeof msg, size - 1);
  EXPECT(!strcmp(msg, "from the last"), "broadcast got '%s'", msg);
  EXPECT(comm_local_rank(c) >= 0 && comm_local_rank(c) < size, "local rank %d", comm_local_rank(c));

  /* Replicas' blocks of micro-batches, by hand: contiguous, the first m mod D one longer. */
  const struct {
    int m, D, want[4][2];
  } blocks[] = {
      {3, 2, {{0, 2}, {2, 3}}},
      {1, 2, {{0, 1}, {1, 1}}}, /* fewer micro-batches than replicas: replica 1 idles */
      {8, 3, {{0, 3}, {3, 6}, {6, 8}}},
      {4, 4, {{0, 1}, {1, 2}, {2, 3}, {3, 4}}},
  };
  for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++)
    for (int r = 0; r < blocks[i].D; r++) {
      int m0, m1;
      replica_micro_range(blocks[i].m, blocks[i].D, r, &m0, &m1);
      EXPECT(m0 == blocks[i].want[r][0] && m1 == blocks[i].want[r][1],
             "%d micro-batches over %d replicas: replica %d gets [%d, %d)", blocks[i].m,
             blocks[i].D, r, m0, m1);
    }

  /* Every grid this world size allows: the pipeline holds the consecutive ranks of one
   * replica, the replica peers the ranks of one stage, and a sum over each covers them. */
  for (int D = 1; D <= size; D++) {
    if (size % D) continue;
    int P = size / D;
    Comm *pipe = comm_split_grid(c, D);
    EXPECT(comm_size(pipe) == P && comm_rank(pipe) == rank % P && comm_replica(pipe) == rank / P &&
               comm_num_replicas(pipe) == D,
           "grid %d x %d: rank %d is stage %d of %d, replica %d of %d", D, P, rank,
           comm_rank(pipe), comm_size(pipe), comm_replica(pipe), comm_num_replicas(pipe));
    double who[2] = {rank, 1};
    comm_allreduce_sum(pipe, who, 2); /* ranks of my replica: rank/P*P .. +P-1 */
    EXPECT(who[1] == P && who[0] == (rank / P * P) * (double)P + P * (P - 1) / 2.0,
           "grid %d x %d: rank %d's pipeline sums %g over %g ranks", D, P, rank, who[0], who[1]);
    Comm *peers = comm_replica_peers(pipe);
    EXPECT((D == 1) == (peers == NULL), "grid %d x %d: replica peers %s", D, P,
           peers ? "present" : "absent");
    if (peers) {
      double mine[2] = {rank, 1};
      comm_allreduce_sum(peers, mine, 2); /* ranks of my stage: rank % P + k P */
      EXPECT(mine[1] == D && mine[0] == (rank % P) * (double)D + P * D * (D - 1) / 2.0,
             "grid %d x %d: rank %d's stage peers sum %g over %g ranks", D, P, rank, mine[0],
             mine[1]);
    }
  }

  int failures = tv_test_failures;
  MPI_Allreduce(MPI_IN_PLACE, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  tv_test_failures = failures;
  int rc = rank == 0 ? tv_test_report("test_comm") : (failures ? 1 : 0);
  comm_finalize(c);
  return rc;
}
