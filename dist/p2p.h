/* Point-to-point transfers of activations and gradients between neighbouring pipeline
 * stages. Host memory over MPI; a device build will move device buffers with NCCL. */
#ifndef TV_P2P_H
#define TV_P2P_H

#include <stddef.h>

#include "comm.h"

enum { P2P_TAG_ACTIVATION = 11, P2P_TAG_GRADIENT = 12 };

void p2p_send(Comm *c, const float *buf, size_t n, int dest, int tag);
void p2p_recv(Comm *c, float *buf, size_t n, int src, int tag);

#endif
