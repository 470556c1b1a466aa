/* MPI point-to-point transfers (see p2p.h). Large buffers go in chunks below INT_MAX. */
#include "p2p.h"

#include <limits.h>
#include <mpi.h>

#include "check.h"

#define CHUNK ((size_t)1 << 28)

void p2p_send(Comm *c, const float *buf, size_t n, int dest, int tag) {
  (void)c;
  for (size_t off = 0; off < n; off += CHUNK) {
    size_t len = n - off < CHUNK ? n - off : CHUNK;
    int rc = MPI_Send(buf + off, (int)len, MPI_FLOAT, dest, tag, MPI_COMM_WORLD);
    TV_CHECK(rc == MPI_SUCCESS, "MPI_Send of %zu floats to rank %d failed", len, dest);
  }
}

void p2p_recv(Comm *c, float *buf, size_t n, int src, int tag) {
  (void)c;
  for (size_t off = 0; off < n; off += CHUNK) {
    size_t len = n - off < CHUNK ? n - off : CHUNK;
    int rc = MPI_Recv(buf + off, (int)len, MPI_FLOAT, src, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    TV_CHECK(rc == MPI_SUCCESS, "MPI_Recv of %zu floats from rank %d failed", len, src);
  }
}
