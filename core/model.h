/* The Llama-family model as pipeline stages: a Stage owns decoder layers [l0, l1), plus the
 * embedding when l0 == 0 and the final norm, LM head and loss when l1 == L.
 * stage_forward / stage_backward run one micro-batch under a per-layer PassPlan, in one of
 * the stage's micro-batch slots, so a pipeline can hold several micro-batches at once. */
#ifndef TV_MODEL_H
#define TV_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "llama_config.h"
#include "lora.h"

/* Letters: B batch rows of the micro-batch, T time, N = B*T, D width, H heads,
 * Hkv kv heads, Dh head dim, F MLP width, V vocab, L layers. */

/* Frozen base weights of one decoder layer, HF layout [out, in]. The seven projection
 * matrices are stored in the stage's weight dtype (StageWeights.dtype: f32 or bf16); norms and
 * biases are always f32 (they are tiny and the norm kernels read f32). */
typedef struct {
  float *attn_norm; /* [D] input_layernorm */
  void *wq;         /* [H*Dh, D] */
  void *wk;         /* [Hkv*Dh, D] */
  void *wv;         /* [Hkv*Dh, D] */
  void *wo;         /* [D, H*Dh] */
  float *bq, *bk, *bv; /* [H*Dh], [Hkv*Dh], [Hkv*Dh] when attention_bias, else NULL */
  float *mlp_norm;  /* [D] post_attention_layernorm */
  void *w_gate;     /* [F, D] */
  void *w_up;       /* [F, D] */
  void *w_down;     /* [D, F] */
} LayerWeights;

typedef struct {
  TvDtype dtype;     /* of every matrix: projections, embedding, LM head */
  void *embed;       /* [V, D] first stage, or last stage when tied */
  float *final_norm; /* [D] last stage */
  void *lm_head;     /* [V, D] last stage; == embed when tied */
  LayerWeights *layers; /* [l1 - l0] */
} StageWeights;

/* A matrix of the stage as a GEMM / embedding operand. */
static inline WeightRef stage_weight_ref(const StageWeights *w, const void *matrix) {
  WeightRef r;
  r.dtype = w->dtype;
  r.data = matrix;
  return r;
}

/* What a layer in the backward range keeps from forward for its backward. Every choice
 * gives identical numbers; they trade memory against a second forward of the layer. */
typedef enum {
  LAYER_RECOMPUTE = 0,     /* keep only the layer input; rerun the layer in backward */
  LAYER_KEEP_ALL = 1,      /* keep everything, GEMM inputs for weight / LoRA gradients too */
  /* keep only what the input gradient needs: no normed inputs and no LoRA down-projections,
   * which only weight and LoRA gradients read. Valid for a layer that trains nothing. */
  LAYER_KEEP_FOR_INPUT_GRAD = 2,
} LayerKeep;

/* What one pass does with each layer of the stage. Index by (l - l0). */
typedef struct {
  /* dLoss/da_l is written here during backward when not NULL: caller memory [rows, D] for
   * the whole batch; a micro-batch writes its rows, from its row_offset on. */
  float *record_grad_a;
  /* ||dLoss/da_l||^2 of each micro-batch is added here (+=) during backward when not NULL:
   * the T-Vaccine probe's norms without a [N, D] buffer. One double in backend memory, so
   * the sum stays on the device until the caller reads all layers' back at once. */
  double *grad_a_sum_squares;
  /* Added to a_l in forward when not NULL: constant caller memory [rows, D] for the whole
   * batch, read from the micro-batch's row_offset on. */
  const float *perturb;
  LayerKeep keep_activations;
  /* Bitmask of the LoRA targets (1u << LoraTarget) whose gradients this pass accumulates;
   * 0 = the layer is frozen (no weight-gradient work), LORA_ALL_TARGETS = all seven. */
  unsigned train_targets;
} LayerPlan;

typedef struct {
  LayerPlan *layers; /* [l1 - l0] */
  /* Backward runs for layers >= backward_stop only; layers below it keep nothing in forward
   * and get no gradient work. backward_stop >= l1 on a stage: no backward in that stage
   * (but the stage still forwards). Use a huge value for forward-only passes. */
  int backward_stop;
  /* The forward of this pass: dropout stream id mixes in pass_seed, so two passes of one
   * step draw different masks while a recompute inside a pass draws the same ones. */
  uint64_t pass_seed;
  /* Full-parameter training: accumulate gradients of every base weight the backward reaches
   * (projections, norms, embedding, head) into the stage's weight gradients. Needs
   * stage_enable_full_training and backward_stop 0. Used to pretrain base models. */
  int train_base;
} PassPlan;

typedef struct Stage Stage;

/* A stage of layers [l0, l1) for micro-batches of up to max_B rows of max_T tokens, with
 * one micro-batch slot. Allocates weights (zero), LoRA, gradients and workspace on the
 * backend; each slot's activation arena grows with the plans it runs. */
Stage *stage_create(Backend *be, const LlamaConfig *cfg, const LoraConfig *lora, int l0, int l1,
                    int max_B, int max_T);
/* The same with the base matrices stored as `weight_dtype` (stage_create: f32). bf16 halves
 * the weights' memory; every pass computes as if the f32 weights had been rounded to bf16. */
Stage *stage_create_typed(Backend *be, const LlamaConfig *cfg, const LoraConfig *lora, int l0,
                          int l1, int max_B, int max_T, TvDtype weight_dtype);
void stage_destroy(Stage *s);
/* Room for `slots` micro-batches in flight at once (never shrinks). Each slot holds its own
 * records, outputs, and on the end stages its tokens, targets and logits. Not while a
 * forward awaits its backward. */
void stage_reserve_slots(Stage *s, int slots);
int stage_num_slots(const Stage *s);

int stage_first_layer(const Stage *s);
int stage_end_layer(const Stage *s); /* l1 */
int stage_is_first(const Stage *s);
int stage_is_last(const Stage *s);
const LlamaConfig *stage_config(const Stage *s);
Backend *stage_backend(Stage *s);
void stage_max_shape(const Stage *s, int *max_B, int *max_T);
StageWeights *stage_weights(Stage *s);
LoraSet *stage_lora(Stage *s);

/* Rotary cos / sin tables [T, head_dim / 2] in backend memory for positions 0..T-1 (angles in
 * double): the stage's and the KV-cache decoder's, so both rotate alike. */
void stage_rope_tables(Backend *be, const LlamaConfig *cfg, int T, float **cos_out,
                       float **sin_out);

TvDtype stage_weight_dtype(const Stage *s);

/* Host f32 values into / out of one base matrix of the stage (n elements of a StageWeights
 * matrix): rounded to nearest even when the stage stores bf16, widened (exactly) on the way
 * out. Loaders, exporters and tests go through these, never through the raw bytes. */
void stage_matrix_from_host(Stage *s, void *matrix, const float *host, size_t n);
void stage_matrix_to_host(Stage *s, float *host, const void *matrix, size_t n);

/* Random base weights (normal(0, std), norms = 1) from the counter RNG; for tests, demos
 * and benchmarks. Deterministic per (seed, global layer), independent of the stage split. */
void stage_init_random_weights(Stage *s, uint64_t seed, float std);

/* One micro-batch of a pass: the rows a stage forwards at once (B <= max_B, T <= max_T).
 * The pipeline schedule keeps one of these per micro-batch in flight. */
typedef struct {
  const int32_t *tokens;  /* [B, T] host: the input of the first stage (validated < V) */
  const float *x_in;      /* [B*T, D] backend memory: the input of every later stage */
  const int32_t *targets; /* [B, T] host: last stage's next-token ids, < 0 ignored; NULL = no
                             loss (e.g. logits only) */
  int B, T;
  /* Index of this micro-batch's first token row (sequence row * T) within the whole batch,
   * so the dropout streams and therefore the masks do not depend on the split into
   * micro-batches, and the layer plans' record_grad_a / perturb are read at these rows. */
  int row_offset;
  int slot; /* the stage slot that holds this micro-batch until its backward, < num_slots */
  float loss_scale; /* the last stage returns loss_scale * sum CE (1 / targets of the batch) */
  /* When not NULL (one double, backend memory), the last stage adds the unscaled sum CE here
   * instead of returning it (stage_forward returns 0): no host sync per micro-batch. */
  double *loss_sum;
} MicroBatch;

/* One micro-batch forward into slot mb->slot (whose previous micro-batch is dropped). The
 * first stage reads mb->tokens, the others mb->x_in (free again on return). The last stage
 * returns the scaled loss; the others return 0 and leave the output hidden state at *x_out
 * (the slot's [B*T, D], valid until the next forward into the slot). */
double stage_forward(Stage *s, const PassPlan *plan, const MicroBatch *mb, float **x_out);

/* Backward of the last stage_forward into `slot` (same plan). dy_in: gradient of this
 * stage's output (ignored on the last stage, which starts from the loss; free again on
 * return). LoRA gradients accumulate (+=) into the LoRA set's gradients for the targets in
 * train_targets; dLoss/da_l is written for layers with record_grad_a. When the stage below
 * needs a gradient (not the first stage and backward_stop < l0), *dx_out points at it (the
 * slot's [B*T, D], valid until the next backward of the slot); otherwise NULL. */
void stage_backward(Stage *s, const PassPlan *plan, int slot, const float *dy_in, float **dx_out);

/* Full-parameter training: allocates gradients and AdamW moments shaped like the weights.
 * Needs f32 weights: a bf16 stage is refused with one error line (AdamW updates of 1e-3
 * relative would vanish in bf16's 8-bit mantissa). */
void stage_enable_full_training(Stage *s);
void stage_zero_weight_grads(Stage *s);
/* Squared L2 norms of this stage's weight gradients by part, so ranks can add them in one
 * order whatever the split: parts[l] for each local decoder layer l, parts[L] the embedding,
 * parts[L + 1] the untied LM head, parts[L + 2] the final norm (L = num_layers); parts this
 * stage does not hold are 0. parts has STAGE_WEIGHT_PARTS(L) entries, in backend memory (the
 * sums stay on the device; the caller reads them back once). */
#define STAGE_WEIGHT_PARTS(L) ((L) + 3)
/* Floats of one decoder layer's base weights: a contiguous run of the arena that starts at
 * its attn_norm (so a rank's layers are one run from stage_weights(s)->layers[0].attn_norm). */
size_t stage_layer_weight_numel(const Stage *s);
void stage_weight_grad_part_sums(Stage *s, double *parts);
/* Every base weight with its gradient and moments, as one AdamW block (optim_adamw_block). */
AdamwBlock stage_weight_block(Stage *s);

/* Folds every adapter into its base weight, W += (alpha / r) B A (a bf16 W: the sum is formed
 * in f32 and rounded once to bf16), and sets B = 0 so the
 * stage computes the same function with the LoRA term contributing nothing (A is kept, so
 * training can resume from a zero-B adapter exactly as PEFT's fresh LoRA does). */
void stage_merge_lora(Stage *s);

/* The LM head and its cross-entropy run in chunks of rows, so the last stage never holds
 * [B*T, V] f32 logits (256 MB at 10 x 200 tokens of a 32000 vocabulary) but one chunk of at
 * most STAGE_LOGIT_CHUNK_BYTES; backward recomputes each chunk's logits (one more head GEMM).
 * Results do not depend on the chunk size, but for the loss's summation order (double). */
#define STAGE_LOGIT_CHUNK_BYTES ((size_t)32 << 20)
/* Rows of logits one chunk holds for micro-batches of N rows of a vocabulary of V. */
int stage_logit_chunk_rows(size_t N, size_t V);
/* Tests: a chunk of `rows` rows instead (>= 1; reallocates the chunk buffer). */
void stage_set_logit_chunk_rows(Stage *s, int rows);
/* keep = 1: keep the logits of every row of each forward (generation without a KV cache,
 * tests), [max_B*max_T, V] per slot, and backward reuses them instead of recomputing chunks;
 * keep = 0 (the default) frees them. From the next forward on; not between a forward and
 * its backward. */
void stage_keep_logits(Stage *s, int keep);

/* Logits [B*T, V] of the last forward on the last stage (backend memory), for a stage that
 * keeps them (stage_keep_logits). Valid between stage_forward and stage_backward, which
 * overwrites them with dLoss/dlogits. */
const float *stage_logits(const Stage *s);

/* Bytes held on the stage's backend, by class. */
typedef struct {
  size_t weights, lora, grads, optimizer;
  size_t activations; /* peak bytes kept for backward (all slots) since the last reset */
  size_t activation_arena; /* bytes the slots' arenas hold: what the largest plans kept */
  size_t workspace;   /* fixed per-layer working buffers, the same for every plan */
} StageMemory;
StageMemory stage_memory(const Stage *s);
void stage_reset_memory_peak(Stage *s);
/* Arena bytes one layer's activation record (its kept input included) takes for a
 * micro-batch of N rows under `keep`: what auto activation policies weigh against a budget. */
size_t stage_layer_record_bytes(const Stage *s, size_t N, LayerKeep keep);

#endif
