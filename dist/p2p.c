/* Point-to-point transfers on the P2p's own communicator (see p2p.h): the dispatcher and the
 * two MPI paths (host buffers, and device buffers staged through host copies); the NCCL
 * path lives in p2p_nccl.c. Requests live in a table sized at creation, so posting never
 * allocates (staging buffers grow on the first pass of a shape only). */
#include "p2p.h"

#include <limits.h>
#include <stdlib.h>

#include "comm_internal.h"
#ifdef TV_HAVE_NCCL
#include "p2p_nccl.h"
#endif

typedef struct {
  MPI_Request req;
  size_t n; /* floats posted */
  int peer, tag, receiving, busy;
  float *device_dst;  /* staged receive: where the message goes on arrival */
  float *host;        /* staged: the message's host copy */
  size_t host_floats; /* its capacity */
} Pending;

struct P2p {
  MPI_Comm comm;
  int rank, size;
  P2pPath path;
  Backend *be;
  Pending *pending; /* [max_pending] */
  int max_pending;
  size_t bytes_sent;
#ifdef TV_HAVE_NCCL
  struct P2pNccl *nccl; /* P2P_NCCL only */
#endif
};

static const char *const path_names[P2P_PATH_COUNT] = {"host-mpi", "nccl", "staged-mpi"};

const char *p2p_path_name(P2pPath path) {
  return (unsigned)path < P2P_PATH_COUNT ? path_names[path] : "?";
}

P2pPath p2p_path_for(const Backend *be) {
  BackendKind kind;
  if (backend_kind_parse(be->name, &kind) && kind == BACKEND_CPU) return P2P_HOST_MPI;
#ifdef TV_HAVE_NCCL
  if (backend_cuda_stream_of(be)) return P2P_NCCL;
#endif
  return P2P_STAGED_MPI;
}

#ifdef TV_HAVE_NCCL
static void nccl_join(P2p *p) {
  int count = p2p_nccl_channel_count(p->size);
  P2pNcclId *ids = tv_calloc((size_t)count, sizeof(P2pNcclId));
  if (p->rank == 0) p2p_nccl_new_ids(ids, count);
  MPI_CHECK(MPI_Bcast(ids, count * (int)sizeof(P2pNcclId), MPI_BYTE, 0, p->comm));
  p->nccl = p2p_nccl_create(p->rank, p->size, ids, backend_cuda_device_of(p->be),
                            backend_cuda_stream_of(p->be), p->max_pending);
  free(ids);
}
#endif

P2p *p2p_create_path(Comm *c, Backend *be, P2pPath path, int max_pending) {
  TV_CHECK(max_pending >= 1, "p2p needs room for at least one transfer");
  TV_CHECK((unsigned)path < P2P_PATH_COUNT, "unknown p2p path %d", (int)path);
  P2p *p = tv_calloc(1, sizeof(P2p));
  MPI_CHECK(MPI_Comm_dup(c->world, &p->comm));
  /* Failures come back as codes, so the message can name the transfer. */
  MPI_CHECK(MPI_Comm_set_errhandler(p->comm, MPI_ERRORS_RETURN));
  p->rank = c->rank;
  p->size = c->size;
  p->path = path;
  p->be = be;
  p->max_pending = max_pending;
  p->pending = tv_calloc((size_t)max_pending, sizeof(Pending));
  /* NCCL on some ranks and MPI on others would never match: say which rank differs. */
  int differs = comm_first_rank_differing(c, (uint64_t)path);
  if (differs >= 0)
    tv_die("pipeline ranks disagree on how to move buffers: rank %d differs from rank 0 "
           "(rank %d uses %s); every rank needs the same device", differs, p->rank,
           p2p_path_name(path));
  if (path == P2P_NCCL) {
#ifdef TV_HAVE_NCCL
    if (p->size > 1) nccl_join(p);
#else
    tv_die("the NCCL pipeline path was asked for, but this tvaccine was built without NCCL "
           "(configure with TV_CUDA on where nccl.h and libnccl are found)");
#endif
  }
  return p;
}

P2p *p2p_create(Comm *c, Backend *be, int max_pending) {
  return p2p_create_path(c, be, p2p_path_for(be), max_pending);
}

P2pPath p2p_path(const P2p *p) { return p->path; }

static void free_staging(P2p *p) {
  for (int i = 0; i < p->max_pending; i++) free(p->pending[i].host);
}

void p2p_reserve(P2p *p, int max_pending) {
  if (max_pending <= p->max_pending) return;
  for (int i = 0; i < p->max_pending; i++)
    TV_CHECK(!p->pending[i].busy, "rank %d: p2p_reserve with transfers in flight", p->rank);
  free_staging(p);
  free(p->pending);
  p->pending = tv_calloc((size_t)max_pending, sizeof(Pending));
  p->max_pending = max_pending;
#ifdef TV_HAVE_NCCL
  if (p->nccl) p2p_nccl_reserve(p->nccl, max_pending);
#endif
}

void p2p_destroy(P2p *p) {
  if (!p) return;
  for (int i = 0; i < p->max_pending; i++) {
    P2pRequest r = i;
    if (p->pending[i].busy) p2p_wait(p, &r);
  }
#ifdef TV_HAVE_NCCL
  p2p_nccl_destroy(p->nccl);
#endif
  MPI_Comm_free(&p->comm);
  free_staging(p);
  free(p->pending);
  free(p);
}

static void fail(const P2p *p, const Pending *q, const char *what, int rc) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  tv_die("rank %d: %s of %zu floats %s rank %d (tag %d) failed: %s", p->rank, what, q->n,
         q->receiving ? "from" : "to", q->peer, q->tag, msg);
}

/* The staged path's host copy of request q, grown to n floats (first pass of a shape). */
static float *staging(Pending *q, size_t n) {
  if (n > q->host_floats) {
    free(q->host);
    q->host = tv_malloc(n * sizeof(float));
    q->host_floats = n;
  }
  return q->host;
}

static P2pRequest post(P2p *p, float *buf, size_t n, int peer, int tag, int receiving) {
  TV_CHECK(n < (size_t)INT_MAX, "rank %d: a message of %zu floats is too large for one transfer",
           p->rank, n);
  int i = 0;
  while (i < p->max_pending && p->pending[i].busy) i++;
  TV_CHECK(i < p->max_pending, "rank %d: more than %d transfers posted at once", p->rank,
           p->max_pending);
  Pending *q = &p->pending[i];
  q->n = n, q->peer = peer, q->tag = tag, q->receiving = receiving, q->busy = 1;
  q->device_dst = NULL;
  if (!receiving) p->bytes_sent += n * sizeof(float);
#ifdef TV_HAVE_NCCL
  if (p->path == P2P_NCCL) {
    p2p_nccl_post(p->nccl, i, buf, n, peer, tag, receiving);
    return i;
  }
#endif
  float *wire = buf;
  if (p->path == P2P_STAGED_MPI) {
    wire = staging(q, n);
    /* to_host returns once the backend's work so far (the producer) has finished. */
    if (receiving)
      q->device_dst = buf;
    else
      p->be->to_host(p->be, wire, buf, n * sizeof(float));
  }
  int rc = receiving ? MPI_Irecv(wire, (int)n, MPI_FLOAT, peer, tag, p->comm, &q->req)
                     : MPI_Isend(wire, (int)n, MPI_FLOAT, peer, tag, p->comm, &q->req);
  if (rc != MPI_SUCCESS) fail(p, q, receiving ? "posting a receive" : "posting a send", rc);
  return i;
}

P2pRequest p2p_post_send(P2p *p, const float *buf, size_t n, int peer, int tag) {
  /* MPI_Isend takes a non-const buffer in old headers; it only reads it. */
  return post(p, (float *)buf, n, peer, tag, 0);
}

P2pRequest p2p_post_recv(P2p *p, float *buf, size_t n, int peer, int tag) {
  return post(p, buf, n, peer, tag, 1);
}

void p2p_wait(P2p *p, P2pRequest *req) {
  if (*req == P2P_NONE) return;
  TV_CHECK(*req >= 0 && *req < p->max_pending && p->pending[*req].busy,
           "rank %d: waiting for a transfer that was never posted", p->rank);
  Pending *q = &p->pending[*req];
#ifdef TV_HAVE_NCCL
  if (p->path == P2P_NCCL) {
    p2p_nccl_wait(p->nccl, *req);
    q->busy = 0;
    *req = P2P_NONE;
    return;
  }
#endif
  MPI_Status st;
  int rc = MPI_Wait(&q->req, &st);
  if (rc != MPI_SUCCESS) fail(p, q, q->receiving ? "receive" : "send", rc);
  if (q->receiving) {
    int got = 0;
    MPI_Get_count(&st, MPI_FLOAT, &got);
    if ((size_t)got != q->n)
      tv_die("rank %d: received %d floats from rank %d (tag %d), expected %zu: the ranks "
             "disagree on the micro-batch shapes", p->rank, got, q->peer, q->tag, q->n);
    /* from_host returns with the data in place, before any consumer is queued. */
    if (q->device_dst) p->be->from_host(p->be, q->device_dst, q->host, q->n * sizeof(float));
  }
  q->busy = 0;
  *req = P2P_NONE;
}

void p2p_send(P2p *p, const float *buf, size_t n, int peer, int tag) {
  P2pRequest r = p2p_post_send(p, buf, n, peer, tag);
  p2p_wait(p, &r);
}

void p2p_recv(P2p *p, float *buf, size_t n, int peer, int tag) {
  P2pRequest r = p2p_post_recv(p, buf, n, peer, tag);
  p2p_wait(p, &r);
}

size_t p2p_bytes_sent(const P2p *p) { return p->bytes_sent; }
