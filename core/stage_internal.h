/* Private to model.c and stage_pass.c: the Stage's memory and per-layer activation records. */
#ifndef TV_STAGE_INTERNAL_H
#define TV_STAGE_INTERNAL_H

#include "model.h"

/* What one layer's forward produces and its backward reads ([N, ...] rows). */
typedef struct {
  float *x_in;        /* [N, D] layer input (kept whenever the layer has backward) */
  float *inv1, *inv2; /* [N] RMSNorm reciprocal rms of attention and MLP norms */
  float *xn1, *xn2;   /* [N, D] normed inputs of attention and MLP */
  float *q;           /* [N, H*Dh] rotated queries */
  float *k, *v;       /* [N, Hkv*Dh] rotated keys, values */
  float *att;         /* [N, H*Dh] attention output before o_proj */
  float *lse;         /* [B, H, T] softmax log-sum-exp */
  float *h;           /* [N, D] residual stream after attention */
  float *gate, *up;   /* [N, F] MLP projections before SwiGLU */
  float *u[7];        /* [N, r] LoRA down-projections A dropout(x) per target */
} LayerActs;

/* One micro-batch in flight through the stage: its activation records in its own arena
 * region, its shape and rows, and the buffers the pipeline sends from. A slot is taken by
 * stage_forward and read by the matching stage_backward; the pipeline keeps up to m of them
 * busy at once, so every per-micro-batch buffer lives here and nothing else does. */
typedef struct {
  /* Bump allocator, reset by every forward into the slot; grown (never shrunk) by a
   * forward whose plan needs more than any before. */
  char *arena;
  size_t capacity, used;
  LayerActs *acts;       /* [l1 - l0] records of this micro-batch (pointers into arena or tmp) */
  float *x_final;        /* [N, D] last stage: input of the final norm (kept for backward) */
  float *inv_final;      /* [N] */
  float *x_final_normed; /* [N, D] final-norm output (kept only for full training) */
  float *logits;         /* [N, V] last stage, only when the stage keeps logits */
  int32_t *tokens;       /* [N] first stage: this micro-batch's tokens (backend memory) */
  int32_t *targets;      /* [N] last stage: this micro-batch's targets (backend memory) */
  float *x_out, *dx_out; /* [N, D] stage outputs, read by transfers still in flight */
  int B, T, row_offset, has_forward;
  float loss_scale;
  LoraPass lora_pass; /* the adapters' context for this micro-batch (set by stage_forward) */
} StageSlot;

struct Stage {
  Backend *be;
  LlamaConfig cfg;
  LoraConfig lora_cfg;
  int l0, l1, max_B, max_T;
  StageWeights w;
  /* f32 base weights: norms and biases, and the matrices too when w.dtype is f32 */
  float *weight_arena;
  float *weight_grads, *weight_m, *weight_v; /* full training only, shaped like the arena */
  size_t weight_bytes;
  uint16_t *matrix_arena; /* the matrices when w.dtype is bf16, else NULL */
  size_t matrix_bytes;
  LoraSet *lora;
  float *rope_cos, *rope_sin; /* [max_T, Dh/2] */

  StageSlot *slots;   /* [num_slots] */
  int num_slots;
  StageSlot *run;     /* the slot of the forward or backward now running */
  StageSlot *last_forward; /* whose logits stage_logits returns */
  size_t act_used, act_peak; /* arena bytes held by all slots now, and the peak */

  LayerActs tmp;       /* scratch record for layers that keep nothing / are recomputed */

  /* Workspace for backward and for hidden states that are not kept, shared by the slots
   * (one micro-batch computes at a time). */
  float *ping, *pong;  /* [N, D] */
  float *dh, *dxn;     /* [N, D] */
  float *dbig1, *dbig2; /* [N, max(F, H*Dh)] */
  float *dq, *dk, *dv;  /* [N, H*Dh], [N, Hkv*Dh] x2 */
  float *du;            /* [N, r] */
  float *lora_tmp;      /* [N, max(D, F, H*Dh)] dropout(x) regenerated / dropout backward */
  /* Last stage: logits (then dlogits) of one chunk of rows, [logit_rows, V], unless the
   * slots keep every row's logits; the loss accumulates on the device in loss_sum. */
  float *logit_chunk;
  int logit_rows, keep_logits;
  double *loss_sum;
  size_t workspace_bytes;
};

#endif
