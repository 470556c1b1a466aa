/* Private to dist/: the Comm's MPI handles, for the files that talk MPI themselves
 * (p2p.c), and the check that turns a failed MPI call into one error line. */
#ifndef TV_COMM_INTERNAL_H
#define TV_COMM_INTERNAL_H

#include <mpi.h>

#include "check.h"
#include "comm.h"

struct Comm {
  int rank, size, local_rank;
  int initialized_here;
  MPI_Comm world;
  int *split;   /* [size] layers per rank set by comm_set_layer_split, or NULL (even) */
  int split_L;  /* the layer count the split is for */
  /* The data x pipeline grid (comm_split_grid). On the world: grid = this rank's pipeline
   * communicator, owned. On a pipeline communicator: replicas = its peers holding the same
   * stage (NULL when D = 1), replica = its index, num_replicas = D. */
  Comm *grid, *replicas;
  int replica, num_replicas;
  int is_sub; /* a split of the world: MPI_Comm_free, never MPI_Finalize */
};

/* Names the call, file:line and MPI's own message, then ends every rank (abort hook). */
#define MPI_CHECK(call)                                                   \
  do {                                                                    \
    int mpi_rc_ = (call);                                                 \
    if (mpi_rc_ != MPI_SUCCESS) {                                         \
      char mpi_msg_[MPI_MAX_ERROR_STRING];                                \
      int mpi_len_ = 0;                                                   \
      MPI_Error_string(mpi_rc_, mpi_msg_, &mpi_len_);                     \
      tv_fatal_at(__FILE__, __LINE__, "%s failed: %s", #call, mpi_msg_); \
    }                                                                     \
  } while (0)

#endif
