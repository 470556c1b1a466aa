/* MPI point-to-point transfers on the P2p's own communicator (see p2p.h). Requests live in
 * a table sized at creation, so posting never allocates. */
#include "p2p.h"

#include <limits.h>
#include <stdlib.h>

#include "comm_internal.h"

typedef struct {
  MPI_Request req;
  size_t n; /* floats posted */
  int peer, tag, receiving, busy;
} Pending;

struct P2p {
  MPI_Comm comm;
  int rank;
  Pending *pending; /* [max_pending] */
  int max_pending;
  size_t bytes_sent;
};

P2p *p2p_create(Comm *c, int max_pending) {
  TV_CHECK(max_pending >= 1, "p2p needs room for at least one transfer");
  P2p *p = tv_calloc(1, sizeof(P2p));
  MPI_CHECK(MPI_Comm_dup(c->world, &p->comm));
  /* Failures come back as codes, so the message can name the transfer. */
  MPI_CHECK(MPI_Comm_set_errhandler(p->comm, MPI_ERRORS_RETURN));
  p->rank = c->rank;
  p->max_pending = max_pending;
  p->pending = tv_calloc((size_t)max_pending, sizeof(Pending));
  return p;
}

void p2p_reserve(P2p *p, int max_pending) {
  if (max_pending <= p->max_pending) return;
  for (int i = 0; i < p->max_pending; i++)
    TV_CHECK(!p->pending[i].busy, "rank %d: p2p_reserve with transfers in flight", p->rank);
  free(p->pending);
  p->pending = tv_calloc((size_t)max_pending, sizeof(Pending));
  p->max_pending = max_pending;
}

void p2p_destroy(P2p *p) {
  if (!p) return;
  for (int i = 0; i < p->max_pending; i++) {
    P2pRequest r = i;
    if (p->pending[i].busy) p2p_wait(p, &r);
  }
  MPI_Comm_free(&p->comm);
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

static P2pRequest post(P2p *p, float *buf, size_t n, int peer, int tag, int receiving) {
  TV_CHECK(n < (size_t)INT_MAX, "rank %d: a message of %zu floats is too large for one transfer",
           p->rank, n);
  int i = 0;
  while (i < p->max_pending && p->pending[i].busy) i++;
  TV_CHECK(i < p->max_pending, "rank %d: more than %d transfers posted at once", p->rank,
           p->max_pending);
  Pending *q = &p->pending[i];
  *q = (Pending){.n = n, .peer = peer, .tag = tag, .receiving = receiving, .busy = 1};
  int rc = receiving ? MPI_Irecv(buf, (int)n, MPI_FLOAT, peer, tag, p->comm, &q->req)
                     : MPI_Isend(buf, (int)n, MPI_FLOAT, peer, tag, p->comm, &q->req);
  if (rc != MPI_SUCCESS) fail(p, q, receiving ? "posting a receive" : "posting a send", rc);
  if (!receiving) p->bytes_sent += n * sizeof(float);
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
  MPI_Status st;
  int rc = MPI_Wait(&q->req, &st);
  if (rc != MPI_SUCCESS) fail(p, q, q->receiving ? "receive" : "send", rc);
  if (q->receiving) {
    int got = 0;
    MPI_Get_count(&st, MPI_FLOAT, &got);
    if ((size_t)got != q->n)
      tv_die("rank %d: received %d floats from rank %d (tag %d), expected %zu: the ranks "
             "disagree on the micro-batch shapes", p->rank, got, q->peer, q->tag, q->n);
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
