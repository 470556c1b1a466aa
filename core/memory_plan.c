/* Per-stage device memory from shapes alone (see memory_plan.h). Every size here mirrors an
 * allocation of model.c / stage_pass.c / dist/trainer.c; the test compares them. */
#include "memory_plan.h"

/* The activation arena rounds each piece to 64 bytes (stage_pass.c). */
static size_t arena(size_t floats) { return (floats * sizeof(float) + 63) / 64 * 64; }

size_t memory_plan_weight_elems(const LlamaConfig *c, int l0, int l1) {
  size_t D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
  size_t HD = (size_t)c->num_heads * c->head_dim, KD = (size_t)c->num_kv_heads * c->head_dim;
  size_t per_layer = 2 * D + HD * D + 2 * KD * D + D * HD + 3 * F * D +
                     (c->attention_bias ? HD + 2 * KD : 0);
  int first = l0 == 0, last = l1 == c->num_layers;
  int embed = first || (last && c->tie_word_embeddings), head = last && !c->tie_word_embeddings;
  return per_layer * (size_t)(l1 - l0) + (embed ? V * D : 0) + (head ? V * D : 0) +
         (last ? D : 0);
}

size_t memory_plan_weight_bytes(const LlamaConfig *c, int l0, int l1, TvDtype dtype) {
  size_t D = c->hidden_size, HD = (size_t)c->num_heads * c->head_dim;
  size_t KD = (size_t)c->num_kv_heads * c->head_dim;
  size_t f32s = (2 * D + (c->attention_bias ? HD + 2 * KD : 0)) * (size_t)(l1 - l0) +
                (l1 == c->num_layers ? D : 0); /* norms and biases stay f32 (model.h) */
  size_t all = memory_plan_weight_elems(c, l0, l1);
  return (all - f32s) * tv_dtype_size(dtype) + f32s * sizeof(float);
}

size_t memory_plan_lora_layer_elems(const LlamaConfig *c, const LoraConfig *lora) {
  size_t n = 0;
  for (int t = 0; t < LORA_NUM_TARGETS; t++) {
    if (!((lora->target_mask >> t) & 1u)) continue;
    int in, out;
    lora_target_shape((LoraTarget)t, c, &in, &out);
    n += (size_t)lora->r * ((size_t)in + (size_t)out);
  }
  return n;
}

size_t memory_plan_layer_record_bytes(const LlamaConfig *c, int r, size_t N, LayerKeep keep) {
  size_t D = c->hidden_size, F = c->intermediate_size;
  size_t HD = (size_t)c->num_heads * c->head_dim, KD = (size_t)c->num_kv_heads * c->head_dim;
  size_t bytes = arena(N * D); /* the layer's input, kept whenever it has backward */
  if (keep == LAYER_RECOMPUTE) return bytes;
  int all = keep == LAYER_KEEP_ALL;
  bytes += 2 * arena(N);                             /* inv_rms of both norms */
  if (all) bytes += 2 * arena(N * D);                /* normed inputs */
  bytes += 2 * arena(N * HD) + 2 * arena(N * KD);    /* q, att; k, v */
  bytes += arena(N * (size_t)c->num_heads);          /* lse */
  bytes += arena(N * D) + 2 * arena(N * F);          /* h; gate, up */
  if (all) bytes += LORA_NUM_TARGETS * arena(N * (size_t)r); /* LoRA down-projections */
  return bytes;
}

size_t memory_plan_slot_bytes(const LlamaConfig *c, size_t N, int first, int last) {
  size_t D = c->hidden_size, V = c->vocab_size;
  (void)V;
  size_t bytes = 2 * N * D * sizeof(float); /* x_out, dx_out */
  if (last) bytes += N * sizeof(int32_t);   /* targets (logits are chunked, workspace) */
  if (first) bytes += N * sizeof(int32_t);  /* tokens */
  return bytes;
}

size_t memory_plan_workspace_bytes(const LlamaConfig *c, int r, size_t N, int first, int last) {
  size_t D = c->hidden_size, F = c->intermediate_size, H = c->num_heads;
  size_t HD = H * c->head_dim, KD = (size_t)c->num_kv_heads * c->head_dim;
  size_t wide = F > HD ? F : HD, widest = wide > D ? wide : D;
  size_t floats = 4 * N * D + 2 * N * wide + N * HD + 2 * N * KD + N * (size_t)r + N * widest;
  /* ping, pong, dh, dxn; dbig1/2; dq; dk, dv; du; lora_tmp */
  floats += 2 * N + 2 * N * D + 2 * N * HD + 2 * N * KD + N * H + N * D + 2 * N * F +
            LORA_NUM_TARGETS * N * (size_t)r; /* the scratch record */
  if (last) /* one chunk of logits (model.h) and the device loss sum */
    floats += (size_t)stage_logit_chunk_rows(N, c->vocab_size) * c->vocab_size;
  return floats * sizeof(float) + (last ? sizeof(double) : 0) +
         memory_plan_slot_bytes(c, N, first, last);
}

/* Micro-batches a stage holds at once under 1F1B: stage k of P keeps min(m, P - k). */
static int in_flight(const MemoryPlanInput *in, int stage) {
  int mb = in->micro_batch > 0 && in->micro_batch < in->batch ? in->micro_batch : in->batch;
  int m = (in->batch + mb - 1) / mb, depth = in->stages - stage;
  return m < depth ? m : depth;
}

void memory_plan_stage(const MemoryPlanInput *in, int stage, int l0, int l1,
                       StageMemoryPlan *out) {
  const LlamaConfig *c = &in->model;
  int nl = l1 - l0, first = l0 == 0, last = l1 == c->num_layers, r = in->lora.r;
  int mb = in->micro_batch > 0 && in->micro_batch < in->batch ? in->micro_batch : in->batch;
  size_t N = (size_t)mb * in->seq_len, D = c->hidden_size;
  size_t F = c->intermediate_size, HD = (size_t)c->num_heads * c->head_dim;
  *out = (StageMemoryPlan){0};
  out->weights = memory_plan_weight_bytes(c, l0, l1, in->weight_dtype);
  out->lora = 4 * memory_plan_lora_layer_elems(c, &in->lora) * (size_t)nl * sizeof(float);

  /* Layers that train keep everything; T-Vaccine's frozen layers keep what the policy says.
   * Worst placement: every sampled layer on this stage. */
  int active = in->method == METHOD_TVACCINE ? (in->S < nl ? in->S : nl) : nl;
  LayerKeep frozen = in->activations == ACTIVATIONS_RECOMPUTE ? LAYER_RECOMPUTE
                                                                : LAYER_KEEP_FOR_INPUT_GRAD;
  size_t per_micro = (size_t)active * memory_plan_layer_record_bytes(c, r, N, LAYER_KEEP_ALL) +
                     (size_t)(nl - active) * memory_plan_layer_record_bytes(c, r, N, frozen);
  if (last) per_micro += arena(N * D) + arena(N); /* final norm's input and its rms */
  out->activations = per_micro * (size_t)in_flight(in, stage);
  if (in->method != METHOD_SFT) /* one [batch rows, D] buffer per perturbed layer */
    out->perturbation = (size_t)active * (size_t)in->batch * in->seq_len * D * sizeof(float);

  out->workspace = memory_plan_workspace_bytes(c, r, N, first, last) +
                   (size_t)(in_flight(in, stage) - 1) * memory_plan_slot_bytes(c, N, first, last) +
                   2 * (size_t)in->seq_len * (c->head_dim / 2) * sizeof(float); /* rotary */
  size_t widest = F > HD ? F : HD;
  widest = widest > D ? widest : D;
  /* The largest f32 input of a bf16 weight GEMM, narrowed for the tensor cores: a layer's
   * [N, widest] or, on the last stage, a chunk of dlogits. */
  size_t narrowed = N * widest;
  if (last) {
    size_t chunk = (size_t)stage_logit_chunk_rows(N, c->vocab_size) * c->vocab_size;
    narrowed = chunk > narrowed ? chunk : narrowed;
  }
  /* x_in and dy received from the neighbours, per micro-batch in flight; the narrowed GEMM
   * input; per-row losses on the last stage. */
  out->transfer = (size_t)((first ? 0 : 1) + (last ? 0 : 1)) * N * D * sizeof(float) *
                      (size_t)in_flight(in, stage) +
                  (in->weight_dtype == TV_BF16 ? narrowed * 2 : 0) +
                  (last ? N * sizeof(double) : 0);
  out->reserve = in->reserve_bytes;
  out->total = out->weights + out->lora + out->activations + out->perturbation +
               out->workspace + out->transfer + out->reserve;
}
