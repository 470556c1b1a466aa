/* NCCL transfers between neighbouring pipeline stages (see p2p_nccl.h): device buffers go
 * straight between GPUs; CUDA events order each transfer after the compute that produced
 * or last read its buffer, and the compute that consumes it after the transfer. */
#include "p2p_nccl.h"

#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

_Static_assert(sizeof(P2pNcclId) == sizeof(ncclUniqueId), "P2pNcclId must hold an ncclUniqueId");

#define P2P_CUDA_CHECK(call)                                                                  \
  do {                                                                                        \
    cudaError_t p2p_err_ = (call);                                                            \
    if (p2p_err_ != cudaSuccess)                                                              \
      tv_fatal_at(__FILE__, __LINE__, "CUDA: %s failed: %s", #call, cudaGetErrorString(p2p_err_)); \
  } while (0)

typedef struct {
  ncclComm_t comm;     /* two ranks: the lower neighbour is NCCL rank 0 */
  cudaStream_t stream; /* every transfer of this channel, in posting order */
} Channel;

/* A rank's channels: with the rank below and the one above, one per direction. */
enum { BELOW_UP = 0, BELOW_DOWN, ABOVE_UP, ABOVE_DOWN, CHANNELS };

typedef struct {
  cudaEvent_t produced; /* on the compute stream at posting: the buffer is ready / free */
  cudaEvent_t done;     /* on the channel's stream after the transfer */
  int channel, peer, tag, receiving;
  size_t n;
} Slot;

struct P2pNccl {
  int rank, size, device;
  cudaStream_t compute;
  Channel channels[CHANNELS]; /* comm NULL where there is none */
  Slot *slots;                /* [max_pending] */
  int max_pending;
};

static void nccl_fail(const char *what, ncclResult_t rc, ncclComm_t comm, int rank) {
  const char *last = comm ? ncclGetLastError(comm) : NULL;
  tv_die("rank %d: %s failed: %s%s%s", rank, what, ncclGetErrorString(rc),
         last && *last ? ": " : "", last && *last ? last : "");
}

void p2p_nccl_new_ids(P2pNcclId *ids, int count) {
  for (int i = 0; i < count; i++) {
    ncclResult_t rc = ncclGetUniqueId((ncclUniqueId *)&ids[i]);
    if (rc != ncclSuccess) nccl_fail("ncclGetUniqueId", rc, NULL, 0);
  }
}

static void channel_join(P2pNccl *x, Channel *ch, const P2pNcclId *id, int peer) {
  ncclUniqueId uid;
  memcpy(&uid, id, sizeof uid);
  ncclResult_t rc = ncclCommInitRank(&ch->comm, 2, uid, x->rank < peer ? 0 : 1);
  if (rc != ncclSuccess) {
    char what[96];
    snprintf(what, sizeof what, "joining the NCCL channel with rank %d (GPU %d)", peer, x->device);
    nccl_fail(what, rc, NULL, x->rank);
  }
  P2P_CUDA_CHECK(cudaStreamCreateWithFlags(&ch->stream, cudaStreamNonBlocking));
}

static void channel_leave(Channel *ch) {
  if (!ch->comm) return;
  P2P_CUDA_CHECK(cudaStreamSynchronize(ch->stream));
  ncclCommDestroy(ch->comm);
  P2P_CUDA_CHECK(cudaStreamDestroy(ch->stream));
  ch->comm = NULL;
}

static void slots_free(P2pNccl *x) {
  for (int i = 0; i < x->max_pending; i++) {
    P2P_CUDA_CHECK(cudaEventDestroy(x->slots[i].produced));
    P2P_CUDA_CHECK(cudaEventDestroy(x->slots[i].done));
  }
  free(x->slots);
}

void p2p_nccl_reserve(P2pNccl *x, int max_pending) {
  if (max_pending <= x->max_pending) return;
  slots_free(x);
  x->slots = tv_calloc((size_t)max_pending, sizeof(Slot));
  for (int i = 0; i < max_pending; i++) {
    P2P_CUDA_CHECK(cudaEventCreateWithFlags(&x->slots[i].produced, cudaEventDisableTiming));
    P2P_CUDA_CHECK(cudaEventCreateWithFlags(&x->slots[i].done, cudaEventDisableTiming));
  }
  x->max_pending = max_pending;
}

P2pNccl *p2p_nccl_create(int rank, int size, const P2pNcclId *ids, int device,
                         void *compute_stream, int max_pending) {
  TV_CHECK(size >= 2 && rank >= 0 && rank < size, "NCCL chain rank %d of %d", rank, size);
  TV_CHECK(device >= 0 && compute_stream, "rank %d: the NCCL path needs a CUDA backend", rank);
  P2pNccl *x = tv_calloc(1, sizeof(P2pNccl));
  x->rank = rank, x->size = size, x->device = device;
  x->compute = (cudaStream_t)compute_stream;
  P2P_CUDA_CHECK(cudaSetDevice(device)); /* the backend's GPU: NCCL binds to the current one */
  /* Lower channels first on every rank: rank r waits for r - 1 only, which waits for r - 2,
   * down to rank 0, which has none below, so the joins cannot wait in a circle. */
  if (rank > 0) {
    channel_join(x, &x->channels[BELOW_UP], &ids[2 * (rank - 1)], rank - 1);
    channel_join(x, &x->channels[BELOW_DOWN], &ids[2 * (rank - 1) + 1], rank - 1);
  }
  if (rank + 1 < size) {
    channel_join(x, &x->channels[ABOVE_UP], &ids[2 * rank], rank + 1);
    channel_join(x, &x->channels[ABOVE_DOWN], &ids[2 * rank + 1], rank + 1);
  }
  p2p_nccl_reserve(x, max_pending);
  return x;
}

void p2p_nccl_destroy(P2pNccl *x) {
  if (!x) return;
  for (int c = 0; c < CHANNELS; c++) channel_leave(&x->channels[c]);
  slots_free(x);
  free(x);
}

/* Sends up and receives from below travel on the "up" channels; the rest on "down". */
static int channel_of(const P2pNccl *x, int peer, int receiving) {
  if (peer == x->rank + 1 && x->rank + 1 < x->size) return receiving ? ABOVE_DOWN : ABOVE_UP;
  if (peer == x->rank - 1 && x->rank > 0) return receiving ? BELOW_UP : BELOW_DOWN;
  tv_die("rank %d: NCCL transfers go to a neighbour stage only, not to rank %d", x->rank, peer);
}

void p2p_nccl_post(P2pNccl *x, int slot, float *buf, size_t n, int peer, int tag,
                   int receiving) {
  TV_CHECK(slot >= 0 && slot < x->max_pending, "rank %d: NCCL request slot %d", x->rank, slot);
  int c = channel_of(x, peer, receiving);
  Channel *ch = &x->channels[c];
  Slot *s = &x->slots[slot];
  *s = (Slot){.produced = s->produced, .done = s->done, .channel = c, .peer = peer,
              .tag = tag, .receiving = receiving, .n = n};
  /* A send reads what compute wrote; a receive overwrites what compute may still read. */
  P2P_CUDA_CHECK(cudaEventRecord(s->produced, x->compute));
  P2P_CUDA_CHECK(cudaStreamWaitEvent(ch->stream, s->produced, 0));
  int nccl_peer = x->rank < peer ? 1 : 0;
  ncclResult_t rc = receiving ? ncclRecv(buf, n, ncclFloat, nccl_peer, ch->comm, ch->stream)
                              : ncclSend(buf, n, ncclFloat, nccl_peer, ch->comm, ch->stream);
  if (rc != ncclSuccess) {
    char what[128];
    snprintf(what, sizeof what, "NCCL %s of %zu floats %s rank %d (tag %d)",
             receiving ? "receive" : "send", n, receiving ? "from" : "to", peer, tag);
    nccl_fail(what, rc, ch->comm, x->rank);
  }
  P2P_CUDA_CHECK(cudaEventRecord(s->done, ch->stream));
}

void p2p_nccl_wait(P2pNccl *x, int slot) {
  TV_CHECK(slot >= 0 && slot < x->max_pending, "rank %d: NCCL request slot %d", x->rank, slot);
  Slot *s = &x->slots[slot];
  Channel *ch = &x->channels[s->channel];
  /* A peer that failed shows up here as an asynchronous error rather than a hang later. */
  ncclResult_t async = ncclSuccess;
  ncclResult_t rc = ncclCommGetAsyncError(ch->comm, &async);
  if (rc != ncclSuccess) nccl_fail("ncclCommGetAsyncError", rc, ch->comm, x->rank);
  if (async != ncclSuccess && async != ncclInProgress) {
    char what[128];
    snprintf(what, sizeof what, "NCCL %s of %zu floats %s rank %d (tag %d)",
             s->receiving ? "receive" : "send", s->n, s->receiving ? "from" : "to", s->peer, s->tag);
    nccl_fail(what, async, ch->comm, x->rank);
  }
  P2P_CUDA_CHECK(cudaStreamWaitEvent(x->compute, s->done, 0));
}
