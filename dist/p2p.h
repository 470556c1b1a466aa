/* Transfers of activations and gradients between neighbouring pipeline stages, as posted
 * operations completed later, so they overlap compute. A P2p owns its communicator (a
 * duplicate of the run's), so its messages never match anyone else's. Host memory over MPI;
 * a device build can add an NCCL path behind these same calls (buffers then on the device)
 * without its callers changing. */
#ifndef TV_P2P_H
#define TV_P2P_H

#include <stddef.h>

#include "comm.h"

typedef struct P2p P2p;

/* A posted transfer; P2P_NONE when there is none. */
typedef int P2pRequest;
enum { P2P_NONE = -1 };

/* Tags tell the kinds apart; the pipeline adds the micro-batch index (tag + 2 * index). */
enum { P2P_TAG_ACTIVATION = 0, P2P_TAG_GRADIENT = 1 };

/* Up to max_pending transfers may be posted and not yet waited for. Collective over the
 * ranks of c (it duplicates the communicator). */
P2p *p2p_create(Comm *c, int max_pending);
void p2p_destroy(P2p *p); /* collective too */
/* Room for max_pending transfers (never shrinks); this rank alone, with none posted. */
void p2p_reserve(P2p *p, int max_pending);

/* Post a send of n floats to `peer` / a receive of exactly n floats from `peer`. The buffer
 * must stay untouched until p2p_wait returns. One message holds fewer than 2^31 floats. */
P2pRequest p2p_post_send(P2p *p, const float *buf, size_t n, int peer, int tag);
P2pRequest p2p_post_recv(P2p *p, float *buf, size_t n, int peer, int tag);
/* Completes a posted transfer (nothing for P2P_NONE) and sets *req to P2P_NONE. A receive
 * whose message does not hold exactly the posted count is one error naming peer and tag. */
void p2p_wait(P2p *p, P2pRequest *req);

/* Blocking forms: post and wait. */
void p2p_send(P2p *p, const float *buf, size_t n, int peer, int tag);
void p2p_recv(P2p *p, float *buf, size_t n, int peer, int tag);

/* Bytes this rank has sent since p2p_create. */
size_t p2p_bytes_sent(const P2p *p);

#endif
