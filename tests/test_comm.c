/* dist/comm under mpirun: the layer split covers every layer once, contiguously and
 * balanced, and the collectives sum and broadcast across ranks. */
#include <mpi.h>
#include <string.h>

#include "comm.h"
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

  int failures = tv_test_failures;
  MPI_Allreduce(MPI_IN_PLACE, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  tv_test_failures = failures;
  int rc = rank == 0 ? tv_test_report("test_comm") : (failures ? 1 : 0);
  comm_finalize(c);
  return rc;
}
