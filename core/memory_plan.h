/* What one pipeline stage of a run holds on its device, worked out from the shapes alone (no
 * weights, no allocation): `tvaccine plan` answers "does it fit, and at what batch" with it.
 * The sizes follow the Stage's own layout (model.c, stage_pass.c) and the step of
 * dist/trainer.c; tests/test_memory_plan.c checks them against a real Stage. */
#ifndef TV_MEMORY_PLAN_H
#define TV_MEMORY_PLAN_H

#include <stddef.h>

#include "llama_config.h"
#include "lora.h"
#include "model.h"
#include "tensor.h"
#include "vaccine.h"

typedef struct {
  LlamaConfig model;
  LoraConfig lora;
  TvDtype weight_dtype;         /* frozen base weights */
  Method method;
  int S;                        /* T-Vaccine layers per step */
  ActivationPolicy activations; /* recompute or keep (auto counts as keep: its ceiling) */
  int batch, seq_len;           /* rows per step and tokens per row */
  int micro_batch;              /* rows per micro-batch (0 = batch) */
  int stages;                   /* pipeline stages (ranks) */
  size_t reserve_bytes;         /* per device: runtime context, library workspaces */
} MemoryPlanInput;

typedef struct {
  size_t weights;      /* frozen base weights of the stage's layers (+ embedding / head) */
  size_t lora;         /* adapters, their gradients and both AdamW moments (f32) */
  size_t activations;  /* activation records of the micro-batches in flight, worst case */
  size_t perturbation; /* Vaccine / T-Vaccine dLoss/da_l buffers, then e_l (f32 [N, D]) */
  size_t workspace;    /* the Stage's fixed working buffers and rotary tables */
  size_t transfer;     /* pipeline receive buffers, GEMM narrowing buffer, loss rows */
  size_t reserve;
  size_t total;
} StageMemoryPlan;

/* Base weight elements of layers [l0, l1) of a model with L layers (embedding on the first
 * stage, final norm and head on the last; a tied head is the embedding). */
size_t memory_plan_weight_elems(const LlamaConfig *c, int l0, int l1);
/* Bytes of those weights as the Stage stores them: the matrices (projections, embedding,
 * head) in `dtype`, norms and biases in f32. */
size_t memory_plan_weight_bytes(const LlamaConfig *c, int l0, int l1, TvDtype dtype);
/* LoRA parameters of one layer: r (in + out) per adapted target. */
size_t memory_plan_lora_layer_elems(const LlamaConfig *c, const LoraConfig *lora);
/* Bytes one layer's activation record takes for N rows under `keep`, its kept input
 * included: equals stage_layer_record_bytes of a Stage of this shape. */
size_t memory_plan_layer_record_bytes(const LlamaConfig *c, int r, size_t N, LayerKeep keep);
/* Bytes of one micro-batch slot's own buffers for N rows (output and input gradient; targets
 * on the last stage, tokens on the first): a stage holds one per micro-batch in
 * flight. */
size_t memory_plan_slot_bytes(const LlamaConfig *c, size_t N, int first, int last);
/* Bytes of the Stage's workspace for micro-batches of N rows with one slot: equals
 * stage_memory().workspace of a freshly created stage of this shape. */
size_t memory_plan_workspace_bytes(const LlamaConfig *c, int r, size_t N, int first, int last);

/* The stage of layers [l0, l1), index `stage` of in->stages, under the worst placement of the
 * method's sampled layers (all of min(S, layers) on this stage). */
void memory_plan_stage(const MemoryPlanInput *in, int stage, int l0, int l1,
                       StageMemoryPlan *out);

#endif
