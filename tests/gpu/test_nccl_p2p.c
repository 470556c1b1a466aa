/* The NCCL path between pipeline stages (dist/p2p_nccl.c) on a GPU machine without MPI: two
 * forked processes, ranks 0 and 1 of a chain on GPUs 0 and 1, the ncclUniqueIds passed
 * through a pipe as rank 0 of a run would broadcast them. Rank 0 sends activations up, rank 1
 * copies each one it receives into a gradient and sends it down; every receive is posted
 * before any send, as the pipeline posts ahead (one stream for both directions would
 * deadlock here: the alarm turns a hang into a failure). The compute stream is kept busy
 * before each producer, each receive buffer is overwritten with a sentinel just before its
 * receive is posted, and each sent buffer is zeroed right after its wait: a transfer not
 * ordered after compute by its event, or compute not ordered after a transfer, shows up as
 * sentinel or zero floats. Exits 77 (ctest's skip) without two GPUs: NCCL refuses two ranks
 * of one communicator on one GPU ("Duplicate GPU detected"). The parent touches no CUDA:
 * a process that has initialised CUDA cannot fork children that use it. */
#include <cuda_runtime_api.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "p2p_nccl.h"

enum { MESSAGES = 3, HANG_S = 120 };
#define FLOATS ((size_t)1 << 20) /* 4 MiB a message */
#define BUSY_BYTES ((size_t)256 << 20)
#define BUSY_ROUNDS 16 /* memsets queued ahead of each producer: milliseconds of compute */

#define CHECK_CUDA(call)                                                                  \
  do {                                                                                    \
    cudaError_t e_ = (call);                                                              \
    if (e_ != cudaSuccess) {                                                              \
      fprintf(stderr, "rank %d: %s failed: %s\n", rank, #call, cudaGetErrorString(e_));   \
      return 1;                                                                           \
    }                                                                                     \
  } while (0)

static float pattern(int i, size_t j) { return (float)(i + 1) * 0.5f + (float)(j % 4099); }

static int keep_busy(int rank, void *busy, cudaStream_t s) {
  for (int k = 0; k < BUSY_ROUNDS; k++) CHECK_CUDA(cudaMemsetAsync(busy, k, BUSY_BYTES, s));
  return 0;
}

static int read_all(int fd, void *buf, size_t bytes) {
  for (size_t got = 0; got < bytes;) {
    ssize_t n = read(fd, (char *)buf + got, bytes - got);
    if (n <= 0) return -1;
    got += (size_t)n;
  }
  return 0;
}

/* One rank's side; returns its exit code. */
static int run_rank(int rank, int pipe_read, int pipe_write) {
  alarm(HANG_S);
  close(rank == 0 ? pipe_read : pipe_write); /* rank 1 sees end-of-file if rank 0 dies */
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices < 2) {
    if (rank == 0)
      printf("test_nccl_p2p: skipped (needs 2 GPUs, %d visible: NCCL refuses two ranks of one "
             "communicator on one GPU)\n", devices);
    return 77;
  }
  CHECK_CUDA(cudaSetDevice(rank));
  cudaStream_t compute;
  CHECK_CUDA(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
  P2pNcclId ids[2];
  if (rank == 0) {
    p2p_nccl_new_ids(ids, p2p_nccl_channel_count(2));
    if (write(pipe_write, ids, sizeof ids) != (ssize_t)sizeof ids) return 1;
  } else if (read_all(pipe_read, ids, sizeof ids) != 0) {
    fprintf(stderr, "rank 1: no ids from rank 0\n");
    return 1;
  }
  P2pNccl *x = p2p_nccl_create(rank, 2, ids, rank, compute, 2 * MESSAGES);

  size_t bytes = FLOATS * sizeof(float);
  float *host = NULL, *pat[MESSAGES], *in[MESSAGES], *out[MESSAGES];
  void *busy = NULL;
  CHECK_CUDA(cudaMallocHost((void **)&host, bytes));
  CHECK_CUDA(cudaMalloc(&busy, BUSY_BYTES));
  for (int i = 0; i < MESSAGES; i++) {
    CHECK_CUDA(cudaMallocHost((void **)&pat[i], bytes));
    for (size_t j = 0; j < FLOATS; j++) pat[i][j] = pattern(i, j);
    CHECK_CUDA(cudaMalloc((void **)&in[i], bytes));
    CHECK_CUDA(cudaMalloc((void **)&out[i], bytes));
  }
  int peer = 1 - rank, failures = 0;
  /* Slots 0 .. MESSAGES-1 receive, the next MESSAGES send. Every receive first, each behind
   * compute that writes a sentinel into its buffer. Tags as the pipeline's (2i activation,
   * 2i + 1 gradient); NCCL does not see them. */
  for (int i = 0; i < MESSAGES; i++) {
    if (keep_busy(rank, busy, compute)) return 1;
    CHECK_CUDA(cudaMemsetAsync(in[i], 0xff, bytes, compute)); /* NaN sentinel */
    p2p_nccl_post(x, i, in[i], FLOATS, peer, 2 * i + (rank == 0), 1);
  }
  for (int i = 0; i < MESSAGES; i++) {
    if (rank == 0) { /* the producer: an upload queued behind busy compute */
      if (keep_busy(rank, busy, compute)) return 1;
      CHECK_CUDA(cudaMemcpyAsync(out[i], pat[i], bytes, cudaMemcpyHostToDevice, compute));
    } else { /* the gradient is the activation received: consumer and producer at once */
      p2p_nccl_wait(x, i);
      if (keep_busy(rank, busy, compute)) return 1;
      CHECK_CUDA(cudaMemcpyAsync(out[i], in[i], bytes, cudaMemcpyDeviceToDevice, compute));
    }
    p2p_nccl_post(x, MESSAGES + i, out[i], FLOATS, peer, 2 * i + rank, 0);
    p2p_nccl_wait(x, MESSAGES + i);
    CHECK_CUDA(cudaMemsetAsync(out[i], 0, bytes, compute)); /* only after the send is done */
  }
  if (rank == 0) /* rank 1 waited for its receives above */
    for (int i = 0; i < MESSAGES; i++) p2p_nccl_wait(x, i);
  for (int i = 0; i < MESSAGES; i++) {
    CHECK_CUDA(cudaMemcpyAsync(host, in[i], bytes, cudaMemcpyDeviceToHost, compute));
    CHECK_CUDA(cudaStreamSynchronize(compute));
    size_t bad = 0, first = FLOATS;
    for (size_t j = 0; j < FLOATS; j++)
      if (host[j] != pattern(i, j)) {
        bad++;
        if (first == FLOATS) first = j;
      }
    if (bad) {
      fprintf(stderr, "rank %d: message %d from rank %d: %zu of %zu floats wrong (first at %zu: "
              "%g, want %g)\n", rank, i, peer, bad, FLOATS, first, host[first], pattern(i, first));
      failures++;
    }
  }
  p2p_nccl_destroy(x);
  for (int i = 0; i < MESSAGES; i++) {
    cudaFree(in[i]);
    cudaFree(out[i]);
    cudaFreeHost(pat[i]);
  }
  cudaFree(busy);
  cudaFreeHost(host);
  cudaStreamDestroy(compute);
  printf("test_nccl_p2p: rank %d: %d of %d messages intact\n", rank, MESSAGES - failures, MESSAGES);
  return failures ? 1 : 0;
}

int main(void) {
  if (!backend_cuda_built()) {
    printf("test_nccl_p2p: skipped (built without the CUDA backend)\n");
    return 77;
  }
  int fds[2];
  if (pipe(fds) != 0) return 1;
  pid_t kids[2];
  for (int r = 0; r < 2; r++) {
    fflush(stdout);
    kids[r] = fork();
    if (kids[r] < 0) return 1;
    if (kids[r] == 0) {
      int code = run_rank(r, fds[0], fds[1]);
      fflush(stdout); /* _exit does not flush */
      _exit(code);
    }
  }
  close(fds[0]);
  close(fds[1]);
  int codes[2];
  for (int r = 0; r < 2; r++) {
    int st = 0;
    waitpid(kids[r], &st, 0);
    if (WIFSIGNALED(st)) {
      fprintf(stderr, "test_nccl_p2p: rank %d %s\n", r,
              WTERMSIG(st) == SIGALRM ? "hung (a transfer never completed)" : "crashed");
      if (r == 0) kill(kids[1], SIGKILL);
      codes[r] = 1;
    } else {
      codes[r] = WEXITSTATUS(st);
    }
  }
  if (codes[0] == 77 && codes[1] == 77) return 77;
  int ok = codes[0] == 0 && codes[1] == 0;
  printf("test_nccl_p2p: %s\n", ok ? "passed" : "FAILED");
  return ok ? 0 : 1;
}
