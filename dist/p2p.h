/* Transfers of activations and gradients between neighbouring pipeline stages, as posted
 * operations completed later, so they overlap compute. A P2p owns its communicator (a
 * duplicate of the run's), so its messages never match anyone else's. Buffers are the stage
 * backend's memory; how they travel is chosen once, at creation, from the backend (P2pPath),
 * and the pipeline drives every path through these same calls. */
#ifndef TV_P2P_H
#define TV_P2P_H

#include <stddef.h>

#include "backend.h"
#include "comm.h"

typedef struct P2p P2p;

/* A posted transfer; P2P_NONE when there is none. */
typedef int P2pRequest;
enum { P2P_NONE = -1 };

/* Tags tell the kinds apart; the pipeline adds the micro-batch index (tag + 2 * index). */
enum { P2P_TAG_ACTIVATION = 0, P2P_TAG_GRADIENT = 1 };

/* How buffers travel:
 *   P2P_HOST_MPI   the backend's memory is the host's (cpu): MPI on the buffers themselves;
 *   P2P_NCCL       CUDA backend in a build with NCCL: ncclSend / ncclRecv of device buffers
 *                  on communication streams ordered after compute by CUDA events; p2p_wait
 *                  orders the backend's later work after the transfer and returns without
 *                  blocking the host. NCCL matches messages by posting order per direction
 *                  between two ranks and sends no size: it cannot check tags or counts, so
 *                  both sides must post the same sequence (the pipeline does);
 *   P2P_STAGED_MPI any other backend (CUDA without NCCL): each message is copied to a host
 *                  buffer and sent over MPI, and copied back to the device on arrival. */
typedef enum { P2P_HOST_MPI = 0, P2P_NCCL = 1, P2P_STAGED_MPI = 2, P2P_PATH_COUNT } P2pPath;
const char *p2p_path_name(P2pPath path); /* "host-mpi", "nccl", "staged-mpi" */
/* The path for buffers of backend `be` in this build. */
P2pPath p2p_path_for(const Backend *be);

/* Up to max_pending transfers may be posted and not yet waited for. Collective over the
 * ranks of c (it duplicates the communicator; NCCL: rank 0 makes the ids and broadcasts
 * them); every rank must get the same path (checked: one error naming the first rank that
 * differs). p2p_create takes p2p_path_for(be); tests force a path with p2p_create_path. */
P2p *p2p_create(Comm *c, Backend *be, int max_pending);
P2p *p2p_create_path(Comm *c, Backend *be, P2pPath path, int max_pending);
void p2p_destroy(P2p *p); /* collective too */
P2pPath p2p_path(const P2p *p);
/* Room for max_pending transfers (never shrinks); this rank alone, with none posted. */
void p2p_reserve(P2p *p, int max_pending);

/* Post a send of n floats to `peer` / a receive of exactly n floats from `peer`. The buffer
 * must stay untouched until p2p_wait returns (for NCCL: until work queued on the backend
 * after p2p_wait). One message holds fewer than 2^31 floats. A send reads what the backend
 * work queued before the post wrote. */
P2pRequest p2p_post_send(P2p *p, const float *buf, size_t n, int peer, int tag);
P2pRequest p2p_post_recv(P2p *p, float *buf, size_t n, int peer, int tag);
/* Completes a posted transfer (nothing for P2P_NONE) and sets *req to P2P_NONE: backend work
 * queued afterwards sees a receive's data and may overwrite a send's buffer. On the MPI
 * paths a receive whose message does not hold exactly the posted count is one error naming
 * peer and tag (NCCL cannot tell; see P2pPath). */
void p2p_wait(P2p *p, P2pRequest *req);

/* Blocking forms: post and wait. */
void p2p_send(P2p *p, const float *buf, size_t n, int peer, int tag);
void p2p_recv(P2p *p, float *buf, size_t n, int peer, int tag);

/* Bytes this rank has sent since p2p_create. */
size_t p2p_bytes_sent(const P2p *p);

#endif
