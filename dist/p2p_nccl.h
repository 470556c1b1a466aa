/* The NCCL path of dist/p2p between the stages of a pipeline, without MPI (so the GPU tests,
 * built where there is no MPI, drive it too). Each direction between two neighbours is its
 * own channel: a two-rank NCCL communicator with its own stream on each side, so a receive
 * posted early (the pipeline posts them ahead) only holds back later messages of its own
 * channel, exactly like MPI's in-order matching, and never a send the other way. Compiled
 * only when TV_NCCL is on.
 * Not yet run on GPUs. A receive posted ahead is a kernel waiting on the device, so anything
 * that synchronised the whole device while one is in flight (cudaFree does) could wait for a
 * neighbour that in turn waits for this rank; the CUDA backend therefore allocates and frees
 * in stream order (cudaMallocAsync / cudaFreeAsync), also when a buffer grows mid-pass.
 * Check it on a multi-GPU run of three or more stages. */
#ifndef TV_P2P_NCCL_H
#define TV_P2P_NCCL_H

#include <stddef.h>

/* An ncclUniqueId's bytes (NCCL_UNIQUE_ID_BYTES, checked in p2p_nccl.c), so callers need
 * no NCCL header to pass ids around. */
typedef struct {
  char bytes[128];
} P2pNcclId;

/* Channels of a chain of `size` ranks: channel 2r carries rank r -> r + 1 (activations),
 * channel 2r + 1 carries r + 1 -> r (gradients). */
static inline int p2p_nccl_channel_count(int size) { return size > 1 ? 2 * (size - 1) : 0; }

/* `count` fresh ids, made by the one process that hands them out (its NCCL bootstrap serves
 * them, so it must be a rank of the chain and live until every rank has created). */
void p2p_nccl_new_ids(P2pNcclId *ids, int count);

typedef struct P2pNccl P2pNccl;

/* Rank `rank` of `size` joins its channels (ids[p2p_nccl_channel_count(size)], the same on
 * every rank) on GPU `device`, ordering transfers against `compute_stream` (a cudaStream_t:
 * the backend's). Blocks until the neighbours join too. Room for max_pending transfers. */
P2pNccl *p2p_nccl_create(int rank, int size, const P2pNcclId *ids, int device,
                         void *compute_stream, int max_pending);
void p2p_nccl_destroy(P2pNccl *x); /* waits for its transfers */
/* Room for max_pending transfers (never shrinks); none may be posted. */
void p2p_nccl_reserve(P2pNccl *x, int max_pending);

/* Queues a transfer of n floats to / from `peer` (rank +- 1) in request slot `slot`: on the
 * channel's stream, after the compute stream's work so far. `tag` only names the transfer
 * in errors (NCCL matches by order). */
void p2p_nccl_post(P2pNccl *x, int slot, float *buf, size_t n, int peer, int tag,
                   int receiving);
/* Orders the compute stream's later work after slot's transfer; the host does not wait. */
void p2p_nccl_wait(P2pNccl *x, int slot);

#endif
