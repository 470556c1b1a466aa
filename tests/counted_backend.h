/* The CPU backend under another name, counting what reaches the host: tests use it as a
 * "device" whose memory the host is not meant to touch (the staged p2p path) and to count a
 * step's host syncs (every call that makes a GPU backend wait: results copied back, host
 * reductions, uploads, explicit syncs). */
#ifndef TV_COUNTED_BACKEND_H
#define TV_COUNTED_BACKEND_H

#include <stddef.h>

#include "backend.h"

typedef struct {
  Backend be; /* first: a CountedBackend * is a Backend * */
  Backend *cpu;
  size_t to_host_bytes, from_host_bytes;
  size_t to_host_calls, from_host_calls, sync_calls;
  size_t host_reductions; /* sum_squares and cross_entropy, which return a double */
} CountedBackend;

/* The CPU backend (one thread) named `name`; backend_destroy frees both. */
CountedBackend *counted_backend_create(const char *name);
/* Host reads that stall a device: to_host, sync and host reductions (uploads not counted). */
size_t counted_backend_reads(const CountedBackend *c);

#endif
