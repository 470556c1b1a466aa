/* The Backend: device memory plus the table of kernels the model is written against.
 * The CPU backend (core/cpu) is the reference; a CUDA backend fills the same table.
 *
 * Conventions for every kernel below:
 *   - all pointers are backend memory, float32, row-major, contiguous unless a
 *     leading dimension is given; the exceptions are the frozen base weights of
 *     gemm_weight and embedding_forward, typed views (f32 or bf16, tensor.h);
 *   - activation gradients are WRITTEN (=), parameter gradients ACCUMULATE (+=);
 *   - N = number of token rows (B * T), D = width, H / Hkv = query / key-value heads,
 *     Dh = head dim, F = MLP width, V = vocab, R = LoRA rank.
 */
#ifndef TV_BACKEND_H
#define TV_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

#ifdef __cplusplus /* the CUDA backend's .cu files include this header */
extern "C" {
#endif

typedef struct Backend Backend;

/* The scalars of one AdamW update, each rounded once to float from a double (see
 * optim_adamw_scalars): beta2 = 0.999 held as a float makes 1 - beta2 come out 1.3e-5
 * relative too small, so 1 - beta is passed in rather than formed by the kernel. */
typedef struct {
  float lr, weight_decay, eps;
  float beta1, beta2;
  float one_minus_beta1, one_minus_beta2;
  float bias_correction1, bias_correction2; /* 1 - beta^k, k = the block's update count */
  float grad_scale;                         /* gradients are multiplied by it first */
} AdamwScalars;

/* One causal grouped-query attention call: B sequences of T positions, H query heads in
 * groups sharing Hkv key-value heads (Hkv divides H), head dim Dh. */
typedef struct {
  int B, T, H, Hkv, Dh;
} AttnShape;

/* What an attention forward leaves for its backward: q [B,T,H,Dh], k, v [B,T,Hkv,Dh]
 * (already rotated), out [B,T,H,Dh] and lse [B,H,T]. */
typedef struct {
  const float *q, *k, *v, *out, *lse;
} AttnRecord;

/* Parameters updated by AdamW as a whole (one LoRA adapter, or all base weights of a stage
 * in full-parameter training): n floats each, backend memory. */
typedef struct {
  float *params;
  const float *grads;
  float *m, *v; /* first and second moments */
  size_t n;
} AdamwBlock;

struct Backend {
  const char *name;
  void *ctx; /* backend-private state (threads, cuBLAS handle, stream, ...) */

  /* ---- memory ---- */
  void *(*alloc)(Backend *be, size_t bytes); /* zero-filled, aligned to 64 bytes */
  void (*free)(Backend *be, void *p);
  void (*copy)(Backend *be, void *dst, const void *src, size_t bytes); /* device -> device */
  void (*to_host)(Backend *be, void *host_dst, const void *src, size_t bytes);
  void (*from_host)(Backend *be, void *dst, const void *host_src, size_t bytes);
  void (*zero)(Backend *be, void *p, size_t bytes);
  void (*sync)(Backend *be);
  void (*destroy)(Backend *be); /* frees ctx and the Backend itself */

  /* ---- dense algebra ---- */
  /* C[M,N] = alpha * op(A) op(B) + beta * C, op = transpose when trans_* != 0.
   * A is [M,K] (or [K,M] transposed) with leading dim lda, likewise B, C.
   * 14 parameters on purpose: exactly BLAS sgemm's, so every call reads like the BLAS call
   * (and cuBLAS's) it stands for. */
  void (*gemm)(Backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha,
               const float *A, int lda, const float *B, int ldb, float beta, float *C,
               int ldc);
  /* The same product with B a frozen base weight of either dtype: the GEMM of every
   * projection and of the LM head. A and C stay f32; accumulation is in f32 whatever W's
   * dtype (the CPU widens bf16 rows, the GPU feeds bf16 to its tensor cores). */
  void (*gemm_weight)(Backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha,
                      const float *A, int lda, WeightRef B, int ldb, float beta, float *C,
                      int ldc);
  void (*axpy)(Backend *be, size_t n, float alpha, const float *x, float *y); /* y += a x */
  void (*scale)(Backend *be, size_t n, float alpha, float *x);                /* x *= a   */
  /* Sum of squares of x, accumulated in double so the result does not depend on the
   * thread count (fixed-block partial sums added in order). */
  double (*sum_squares)(Backend *be, size_t n, const float *x);
  /* The same sum added (+=) to *dst, one double in backend memory, without a sync: a step
   * gathers its norms on the device and reads them back once. Same value as sum_squares. */
  void (*sum_squares_acc)(Backend *be, size_t n, const float *x, double *dst);

  /* ---- embedding ---- */
  /* out[N,D] = table[tokens[n], :], widened to f32 when the (frozen) table is bf16. Tokens
   * are validated by the caller. */
  void (*embedding_forward)(Backend *be, float *out, WeightRef table, const int32_t *tokens,
                            int N, int D);

  /* dtable[tokens[n], :] += dout[n, :] (full-parameter training of the embedding). */
  void (*embedding_backward)(Backend *be, float *dtable, const float *dout,
                             const int32_t *tokens, int N, int D);

  /* ---- RMSNorm: y = x / sqrt(mean(x^2) + eps) * w ---- */
  void (*rmsnorm_forward)(Backend *be, float *y /* [N,D] */, float *inv_rms /* [N] */,
                          const float *x /* [N,D] */, const float *w /* [D] */, int N, int D,
                          float eps);
  /* dx written; dw (may be NULL) accumulated. Nine parameters: the forward's inputs plus the
   * gradients, each a different tensor, as in the forward above. */
  void (*rmsnorm_backward)(Backend *be, float *dx, float *dw, const float *dy, const float *x,
                           const float *w, const float *inv_rms, int N, int D);

  /* ---- rotary embedding, half-split pairs (i, i + Dh/2), in place ---- */
  /* x is [B, T, nh, Dh]; position of row (b, t) is t. cos/sin are [T, Dh/2]. */
  void (*rope_forward)(Backend *be, float *x, const float *cos_t, const float *sin_t, int B,
                       int T, int nh, int Dh);
  /* The inverse rotation applied to a gradient (rotation is orthogonal). */
  void (*rope_backward)(Backend *be, float *dx, const float *cos_t, const float *sin_t, int B,
                        int T, int nh, int Dh);

  /* ---- causal grouped-query attention (AttnShape, AttnRecord above) ---- */
  /* out [B,T,H,Dh]; lse [B,H,T] = log-sum-exp of each scaled score row, kept for backward. */
  void (*attention_forward)(Backend *be, const AttnShape *shape, const float *q, const float *k,
                            const float *v, float *out, float *lse);
  /* dq written; dk, dv written (summed over the query heads of each group). */
  void (*attention_backward)(Backend *be, const AttnShape *shape, const AttnRecord *fwd,
                             const float *dout, float *dq, float *dk, float *dv);

  /* ---- attention of appended rows against a KV cache (generation, forward only) ----
   * Row i of q / out [N, H, Dh] is position pos[i] of sequence seq[i]; it attends to
   * positions 0..pos[i] of that sequence in kcache / vcache [S, Tcap, Hkv, Dh], which already
   * hold this row's own key and value. shape->B is N, shape->T is Tcap. seq, pos: int32 [N]
   * backend memory. */
  void (*attention_cached)(Backend *be, const AttnShape *shape, const float *q,
                           const float *kcache, const float *vcache, const int32_t *seq,
                           const int32_t *pos, float *out);

  /* ---- SwiGLU: out = silu(gate) * up ---- */
  void (*swiglu_forward)(Backend *be, float *out, const float *gate, const float *up, size_t n);
  void (*swiglu_backward)(Backend *be, float *dgate, float *dup, const float *dout,
                          const float *gate, const float *up, size_t n);

  /* ---- bias add over rows: y[N,C] += b[C] ---- */
  void (*add_bias)(Backend *be, float *y, const float *b, int N, int C);

  /* ---- inverted dropout with a counter-based mask ----
   * out[N,C] = x * keep / (1 - p), keep = u_i >= p for element i = (row_offset + n) * C + c
   * (row_offset places a micro-batch inside its batch), where u_i is
   * word (i % 4) of philox4x32(seed, stream, i / 4) scaled to [0, 1) with 24 bits.
   * The same (seed, stream) regenerates the same mask, so backward needs no stored mask
   * and a recomputed forward is identical. In place (out == x) is allowed. Nine parameters:
   * the mask's whole key (seed, stream, row_offset) is spelled out so no call can drop one. */
  void (*dropout)(Backend *be, float *out, const float *x, int N, int C, float p,
                  uint64_t seed, uint64_t stream, int64_t row_offset);

  /* ---- cross-entropy over non-ignored targets (target < 0 = ignored) ----
   * Returns sum_n CE_n over non-ignored rows (unscaled, double). When dlogits is not NULL
   * it receives dLoss/dlogits for loss = scale * sum_n CE_n (zero rows where ignored);
   * dlogits may equal logits (in place). */
  double (*cross_entropy)(Backend *be, const float *logits, float *dlogits,
                          const int32_t *targets, int N, int V, float scale);
  /* The same, with the unscaled sum added (+=) to *loss_sum (one double, backend memory)
   * instead of returned, so no sync is needed; loss_sum NULL: only dlogits is wanted. */
  void (*cross_entropy_acc)(Backend *be, const float *logits, float *dlogits,
                            const int32_t *targets, int N, int V, float scale, double *loss_sum);

  /* ---- AdamW, one parameter block (SPEC section 4) ----
   * p -= lr*wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
   * p -= lr * (m / bc1) / (sqrt(v / bc2) + eps), g already multiplied by grad_scale. */
  void (*adamw)(Backend *be, const AdamwBlock *block, const AdamwScalars *k);
};

/* Where a run's math happens: the `device` config key and --device option. */
typedef enum { BACKEND_CPU = 0, BACKEND_CUDA = 1, BACKEND_KIND_COUNT } BackendKind;
extern const char *const backend_kind_names[BACKEND_KIND_COUNT]; /* cpu, cuda */

/* "cpu" or "cuda" -> kind; returns 0 when the name is neither. */
int backend_kind_parse(const char *name, BackendKind *kind);
const char *backend_kind_name(BackendKind kind);
/* 1 when this build contains the CUDA backend (nvcc was found at configure time). */
int backend_cuda_built(void);
/* CUDA GPUs this process can use: 0 when the build has no CUDA backend, no driver is
 * loaded or no GPU is visible (the GPU tests then exit with ctest's skip code). */
int backend_cuda_device_count(void);
/* For transports that queue their own work beside a CUDA backend's (NCCL between pipeline
 * stages): the GPU it runs on and its stream (a cudaStream_t). -1 and NULL for any backend
 * that is not the CUDA one. */
int backend_cuda_device_of(const Backend *be);
void *backend_cuda_stream_of(const Backend *be);

/* A backend of `kind`: for BACKEND_CPU `cpu_threads` OpenMP threads (<= 0: OpenMP's
 * default), for BACKEND_CUDA GPU number `device`. Asking for CUDA from a build without it,
 * or for a GPU that is not there, is a user error (one line, exit). */
Backend *backend_create(BackendKind kind, int device, int cpu_threads);

/* The CPU reference backend (OpenBLAS + OpenMP), always built; tests use it directly. */
Backend *backend_cpu_create(int threads);
static inline void backend_destroy(Backend *be) { be->destroy(be); }

#ifdef __cplusplus
}
#endif

/* Variables the CPU backend's libraries should start with that are not set yet: the better
 * OPENBLAS_CORETYPE above, and an OpenMP wait policy (GOMP_SPINCOUNT=CPU_DEFAULT_SPINCOUNT)
 * when the user set neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT. libgomp and OpenBLAS read
 * them once, at load time, so the launcher sets them and restarts itself. Returns how many. */
#define CPU_START_ENV_MAX 2
#define CPU_DEFAULT_SPINCOUNT "1000"
typedef struct {
  const char *name, *value;
} EnvVar;
int backend_cpu_start_env(EnvVar out[CPU_START_ENV_MAX]);

#endif
