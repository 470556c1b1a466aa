/* LoRA adapters on the seven projections of every layer:
 * y = W x + (alpha / r) * B (A dropout(x)), A [r, in], B [out, r], base W frozen.
 * Everything LoRA is here: storage and init, the adapter's forward / backward terms inside
 * a projection, the trainable set's gradient helpers and the merge into the base weight. */
#ifndef TV_LORA_H
#define TV_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "llama_config.h"

typedef enum {
  LORA_Q = 0, LORA_K, LORA_V, LORA_O, LORA_GATE, LORA_UP, LORA_DOWN, LORA_NUM_TARGETS
} LoraTarget;

#define LORA_ALL_TARGETS 0x7fu        /* bit t = target t */
#define LORA_ATTENTION_TARGETS 0x0fu  /* q, k, v, o */
#define LORA_MLP_TARGETS 0x70u        /* gate, up, down */

/* HF module names: "q_proj", ..., "down_proj". */
const char *lora_target_name(LoraTarget t);
/* "self_attn" or "mlp". */
const char *lora_target_parent(LoraTarget t);

typedef struct {
  int r;               /* rank, >= 1 */
  float alpha;         /* scaling = alpha / r */
  float dropout;       /* in [0, 1) */
  unsigned target_mask; /* bit t set = target t adapted; all seven by default */
} LoraConfig;

LoraConfig lora_config_default(void); /* r 8, alpha 1, dropout 0.1, all seven */
const char *lora_config_validate(const LoraConfig *c, char *buf, size_t buflen);

/* One adapted projection. All pointers are backend memory. */
typedef struct {
  int in, out;
  float *A, *B;   /* [r, in], [out, r] */
  float *dA, *dB; /* gradients, same shapes */
  float *mA, *vA, *mB, *vB; /* AdamW moments */
} LoraAdapter;

/* The adapters of layers [l0, l1). Each layer's tensors (params, grads, moments) are one
 * contiguous block, so a layer can be zeroed, clipped, stepped or sent as a whole. */
typedef struct {
  LoraConfig cfg;
  int l0, l1;
  LoraAdapter (*layers)[LORA_NUM_TARGETS]; /* [l1 - l0][target]; in == 0 when not adapted */
  size_t layer_numel; /* parameters per layer (all adapted targets, A and B) */
  float *params, *grads, *m, *v; /* arenas [(l1 - l0) * layer_numel] */
  int64_t (*steps)[LORA_NUM_TARGETS]; /* [l1 - l0][target] AdamW update counts (SPEC: k per
                                        * parameter; a target is updated as a whole) */
} LoraSet;

/* in/out of each target for this model shape. */
void lora_target_shape(LoraTarget t, const LlamaConfig *model, int *in, int *out);

LoraSet *lora_set_create(Backend *be, const LoraConfig *cfg, const LlamaConfig *model, int l0,
                         int l1);
void lora_set_destroy(Backend *be, LoraSet *s);

/* SPEC init: A ~ U(-1/sqrt(in), 1/sqrt(in)) from stream (LORA_INIT, layer, target), B = 0.
 * Same numbers for a layer whatever the stage split. */
void lora_set_init(Backend *be, LoraSet *s, uint64_t seed);

float *lora_layer_params(LoraSet *s, int l); /* global layer index */
float *lora_layer_grads(LoraSet *s, int l);

/* The adapter of target t of global layer l, or NULL when t is not adapted. */
LoraAdapter *lora_adapter(const LoraSet *s, int l, LoraTarget t);
/* Floats of one adapter (A then B, adjacent in every arena: one block for AdamW). */
size_t lora_adapter_numel(const LoraSet *s, const LoraAdapter *a);

/* ---- the trainable set ----
 * Given per local layer as a bitmask of targets, train[l - l0] (1u << LoraTarget); NULL
 * means every target of every layer. */
static inline int lora_is_trained(const unsigned *train, int i, int t) {
  return !train || ((train[i] >> t) & 1u);
}
/* Sum of squared gradients over the trainable set (double). On many ranks the caller
 * allreduces these partial sums before optim_clip_scale. */
double lora_grad_sum_squares(Backend *be, const LoraSet *s, const unsigned *train);
/* The same for local layer i (0-based within the set) and the given targets. */
double lora_layer_grad_sum_squares(Backend *be, const LoraSet *s, int i, unsigned targets);
/* The same sum added (+=) to *dst, one double in backend memory, without a host sync. */
void lora_layer_grad_sum_squares_acc(Backend *be, const LoraSet *s, int i, unsigned targets,
                                     double *dst);
/* Zero the gradients of the trainable set. */
void lora_zero_grads(Backend *be, LoraSet *s, const unsigned *train);

/* ---- the adapter's term inside a projection ----
 * What one micro-batch pass needs to apply the adapters: dropout masks come from
 * (pass_seed, layer, target) at element (row_offset + n) * in + c, so a recomputed forward
 * and the backward regenerate the same masks without storing them. */
typedef struct {
  Backend *be;
  LoraSet *set;
  uint64_t pass_seed;
  int64_t row_offset; /* the micro-batch's first row within its batch */
  int N;              /* rows of the micro-batch */
  float *scratch;     /* [N, largest in] dropout(x) and the dropout backward */
  float *du;          /* [N, r] */
} LoraPass;

/* y[N,out] += (alpha/r) u B^T with u[N,r] = dropout(x) A^T written (kept for backward).
 * Nothing happens when target t of layer l is not adapted. */
void lora_forward(const LoraPass *p, int l, LoraTarget t, const float *x, float *u, float *y);

/* Backward of lora_forward for dy[N,out]: with train, dB += (alpha/r) dy^T u and
 * dA += du^T dropout(x), du = (alpha/r) dy B; when dx is not NULL it gets
 * dropout'(du A) ADDED (the caller writes the base term first). */
void lora_backward(const LoraPass *p, int l, LoraTarget t, const float *dy, const float *x,
                   const float *u, float *dx, int train);

/* W[out,in] += (alpha/r) B A for target t of layer l, then B = 0: the model computes the same
 * function and the adapter contributes nothing (A kept, as PEFT's fresh LoRA). W holds
 * `dtype` elements; a bf16 W gets bf16(W + (alpha/r) B A), the sum formed in f32. */
void lora_merge(Backend *be, LoraSet *s, int l, LoraTarget t, TvDtype dtype, void *W);

#endif
