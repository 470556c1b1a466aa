/* One micro-batch through a stage, in one of its slots: forward and backward of the
 * decoder layers under a PassPlan (record dLoss/da_l, add e_l, keep or recompute, train or freeze, stop early).
 * Shapes: N = B*T rows, D width, HD = H*Dh, KD = Hkv*Dh, F MLP width, r LoRA rank. */
#include <string.h>

#include "check.h"
#include "stage_internal.h"

/* Arena bytes of one piece: every piece starts on a 64-byte boundary. */
static size_t arena_bytes(size_t floats) { return (floats * sizeof(float) + 63) / 64 * 64; }

/* Takes from the running slot's arena; the stage counts what all slots hold together. */
static float *act_take(Stage *s, size_t floats) {
  StageSlot *sl = s->run;
  size_t bytes = arena_bytes(floats);
  TV_CHECK(sl->used + bytes <= sl->capacity, "activation arena overflow (%zu + %zu > %zu)",
           sl->used, bytes, sl->capacity);
  float *p = (float *)(sl->arena + sl->used);
  sl->used += bytes;
  s->act_used += bytes;
  if (s->act_used > s->act_peak) s->act_peak = s->act_used;
  return p;
}

/* Gradient of a base weight: the gradient arena mirrors the f32 weight arena (full training
 * needs f32 weights, stage_enable_full_training). */
static float *grad_of(const Stage *s, const void *w) {
  return s->weight_grads + ((const float *)w - s->weight_arena);
}

/* y[N,out] = x W^T (+ bias) + the adapter's term (lora_forward, which keeps A->u[t]). */
static void proj_forward(Stage *s, int l, LoraTarget t, LayerActs *A, float *y, const float *x,
                         const void *W, const float *bias) {
  Backend *be = s->be;
  int N = s->run->B * s->run->T, in, out;
  lora_target_shape(t, &s->cfg, &in, &out);
  be->gemm_weight(be, 0, 1, N, out, in, 1.0f, x, in, stage_weight_ref(&s->w, W), in, 0.0f, y,
                  out);
  if (bias) be->add_bias(be, y, bias, N, out);
  lora_forward(&s->run->lora_pass, l, t, x, A->u[t], y);
}

/* What proj_backward reads and where it writes: dy of the output, the forward's input x and
 * base weight W; dx (NULL when not needed) is written, or added to with accumulate. */
typedef struct {
  const float *dy, *x;
  const void *W;
  float *dx;
  int accumulate;
} ProjGrad;

/* Backward of proj_forward: dx = dy W + the adapter's input gradient; the base weight's
 * gradient in full-parameter training, the adapter's when the plan trains target t. */
static void proj_backward(Stage *s, const PassPlan *plan, int l, LoraTarget t,
                          const LayerActs *A, const ProjGrad *g) {
  Backend *be = s->be;
  int N = s->run->B * s->run->T, in, out;
  int train = (int)((plan->layers[l - s->l0].train_targets >> t) & 1u);
  lora_target_shape(t, &s->cfg, &in, &out);
  if (plan->train_base) /* dW[out,in] += dy^T x: the base weight sees x without dropout */
    be->gemm(be, 1, 0, out, in, N, 1.0f, g->dy, out, g->x, in, 1.0f, grad_of(s, g->W), in);
  if (g->dx)
    be->gemm_weight(be, 0, 0, N, in, out, 1.0f, g->dy, out, stage_weight_ref(&s->w, g->W), in,
                    g->accumulate ? 1.0f : 0.0f, g->dx, in);
  lora_backward(&s->run->lora_pass, l, t, g->dy, g->x, A->u[t], g->dx, train);
}

/* y = h + MLP(norm(h)), h = x + a_l (+ e_l), a_l = o_proj(Attn(norm(x))). A->x_in is set. */
static void layer_forward(Stage *s, const PassPlan *plan, int l, LayerActs *A, float *y, int B,
                          int T) {
  Backend *be = s->be;
  const LlamaConfig *c = &s->cfg;
  const LayerWeights *w = &s->w.layers[l - s->l0];
  const LayerPlan *lp = &plan->layers[l - s->l0];
  int N = B * T, D = c->hidden_size, F = c->intermediate_size;
  be->rmsnorm_forward(be, A->xn1, A->inv1, A->x_in, w->attn_norm, N, D, c->rms_norm_eps);
  proj_forward(s, l, LORA_Q, A, A->q, A->xn1, w->wq, w->bq);
  proj_forward(s, l, LORA_K, A, A->k, A->xn1, w->wk, w->bk);
  proj_forward(s, l, LORA_V, A, A->v, A->xn1, w->wv, w->bv);
  be->rope_forward(be, A->q, s->rope_cos, s->rope_sin, B, T, c->num_heads, c->head_dim);
  be->rope_forward(be, A->k, s->rope_cos, s->rope_sin, B, T, c->num_kv_heads, c->head_dim);
  AttnShape shape = {
      .B = B, .T = T, .H = c->num_heads, .Hkv = c->num_kv_heads, .Dh = c->head_dim};
  be->attention_forward(be, &shape, A->q, A->k, A->v, A->att, A->lse);
  /* a_l goes straight into h, then the residual and the perturbation are added. */
  proj_forward(s, l, LORA_O, A, A->h, A->att, w->wo, NULL);
  if (lp->perturb) /* the batch's e_l, at this micro-batch's rows */
    be->axpy(be, (size_t)N * D, 1.0f, lp->perturb + (size_t)s->run->row_offset * D, A->h);
  be->axpy(be, (size_t)N * D, 1.0f, A->x_in, A->h);
  be->rmsnorm_forward(be, A->xn2, A->inv2, A->h, w->mlp_norm, N, D, c->rms_norm_eps);
  proj_forward(s, l, LORA_GATE, A, A->gate, A->xn2, w->w_gate, NULL);
  proj_forward(s, l, LORA_UP, A, A->up, A->xn2, w->w_up, NULL);
  float *act = s->dbig1; /* [N, F], rebuilt in backward */
  be->swiglu_forward(be, act, A->gate, A->up, (size_t)N * F);
  proj_forward(s, l, LORA_DOWN, A, y, act, w->w_down, NULL);
  be->axpy(be, (size_t)N * D, 1.0f, A->h, y);
}

/* dy = dLoss/dy of the layer output. dx (NULL when not needed) gets dLoss/dx_in. */
static void layer_backward(Stage *s, const PassPlan *plan, int l, const LayerActs *A,
                           const float *dy, float *dx, int B, int T) {
  Backend *be = s->be;
  const LlamaConfig *c = &s->cfg;
  const LayerWeights *w = &s->w.layers[l - s->l0];
  const LayerPlan *lp = &plan->layers[l - s->l0];
  int N = B * T, D = c->hidden_size, F = c->intermediate_size;
  unsigned train = lp->train_targets;

  /* MLP branch: dh = dy + norm2'(gate'/up'(swiglu'(down'(dy)))). */
  float *act = s->dbig2;
  be->swiglu_forward(be, act, A->gate, A->up, (size_t)N * F);
  proj_backward(s, plan, l, LORA_DOWN, A,
                &(ProjGrad){.dy = dy, .x = act, .W = w->w_down, .dx = s->dbig1});
  be->swiglu_backward(be, s->dbig1, s->dbig2, s->dbig1, A->gate, A->up, (size_t)N * F);
  proj_backward(s, plan, l, LORA_GATE, A,
                &(ProjGrad){.dy = s->dbig1, .x = A->xn2, .W = w->w_gate, .dx = s->dxn});
  proj_backward(s, plan, l, LORA_UP, A,
                &(ProjGrad){.dy = s->dbig2, .x = A->xn2, .W = w->w_up, .dx = s->dxn, .accumulate = 1});
  float *dnorm2 = plan->train_base ? grad_of(s, w->mlp_norm) : NULL;
  be->rmsnorm_backward(be, s->dh, dnorm2, s->dxn, A->h, w->mlp_norm, A->inv2, N, D);
  be->axpy(be, (size_t)N * D, 1.0f, dy, s->dh);

  /* h = x + a_l + e_l, so dLoss/da_l = dLoss/dh. */
  if (lp->record_grad_a) /* the batch's buffer, at this micro-batch's rows */
    be->copy(be, lp->record_grad_a + (size_t)s->run->row_offset * D, s->dh,
             (size_t)N * D * sizeof(float));
  if (lp->grad_a_sum_squares) be->sum_squares_acc(be, (size_t)N * D, s->dh, lp->grad_a_sum_squares);
  /* Nothing below a_l is wanted from this layer: no attention LoRA to train, no dx. */
  if (!(train & LORA_ATTENTION_TARGETS) && !dx && !plan->train_base) return;

  float *datt = s->dbig1;
  proj_backward(s, plan, l, LORA_O, A,
                &(ProjGrad){.dy = s->dh, .x = A->att, .W = w->wo, .dx = datt});
  AttnShape shape = {
      .B = B, .T = T, .H = c->num_heads, .Hkv = c->num_kv_heads, .Dh = c->head_dim};
  AttnRecord fwd = {.q = A->q, .k = A->k, .v = A->v, .out = A->att, .lse = A->lse};
  be->attention_backward(be, &shape, &fwd, datt, s->dq, s->dk, s->dv);
  be->rope_backward(be, s->dq, s->rope_cos, s->rope_sin, B, T, c->num_heads, c->head_dim);
  be->rope_backward(be, s->dk, s->rope_cos, s->rope_sin, B, T, c->num_kv_heads, c->head_dim);
  float *dxn = dx ? s->dxn : NULL;
  proj_backward(s, plan, l, LORA_Q, A,
                &(ProjGrad){.dy = s->dq, .x = A->xn1, .W = w->wq, .dx = dxn});
  proj_backward(s, plan, l, LORA_K, A,
                &(ProjGrad){.dy = s->dk, .x = A->xn1, .W = w->wk, .dx = dxn, .accumulate = 1});
  proj_backward(s, plan, l, LORA_V, A,
                &(ProjGrad){.dy = s->dv, .x = A->xn1, .W = w->wv, .dx = dxn, .accumulate = 1});
  if (!dx) return;
  float *dnorm1 = plan->train_base ? grad_of(s, w->attn_norm) : NULL;
  be->rmsnorm_backward(be, dx, dnorm1, s->dxn, A->x_in, w->attn_norm, A->inv1, N, D);
  be->axpy(be, (size_t)N * D, 1.0f, s->dh, dx);
}

/* Arena bytes of a layer's record without its input (take_layer_record's pieces). */
static size_t layer_record_arena_bytes(const Stage *s, size_t N, LayerKeep keep) {
  if (keep == LAYER_RECOMPUTE) return 0;
  const LlamaConfig *c = &s->cfg;
  size_t D = c->hidden_size, F = c->intermediate_size, r = s->lora_cfg.r;
  size_t HD = (size_t)c->num_heads * c->head_dim, KD = (size_t)c->num_kv_heads * c->head_dim;
  int all = keep == LAYER_KEEP_ALL;
  size_t b = 2 * arena_bytes(N) + 2 * arena_bytes(N * HD) + 2 * arena_bytes(N * KD) +
             arena_bytes(N * c->num_heads) + arena_bytes(N * D) + 2 * arena_bytes(N * F);
  if (all) b += 2 * arena_bytes(N * D);
  for (int t = 0; t < LORA_NUM_TARGETS && all; t++)
    if (s->lora->layers[0][t].in) b += arena_bytes(N * r);
  return b;
}

size_t stage_layer_record_bytes(const Stage *s, size_t N, LayerKeep keep) {
  return arena_bytes(N * s->cfg.hidden_size) + layer_record_arena_bytes(s, N, keep);
}

/* Arena bytes stage_forward takes for `plan` at N rows: the same act_take calls, counted
 * (stage_forward checks the two agree after every forward). */
static size_t forward_arena_bytes(const Stage *s, const PassPlan *plan, size_t N) {
  size_t D = s->cfg.hidden_size, total = 0;
  int bstop = plan->backward_stop, last = stage_is_last(s);
  if (bstop <= s->l0) total += arena_bytes(N * D);
  for (int l = s->l0; l < s->l1; l++) {
    int has_backward = l >= bstop;
    if (has_backward)
      total += layer_record_arena_bytes(s, N, plan->layers[l - s->l0].keep_activations);
    if (l + 1 < s->l1 ? l + 1 >= bstop : last && has_backward) total += arena_bytes(N * D);
  }
  if (last && s->l1 - 1 >= bstop)
    total += arena_bytes(N) + (plan->train_base ? arena_bytes(N * D) : 0);
  return total;
}

/* The layer's record in the arena. Under LAYER_KEEP_FOR_INPUT_GRAD the normed inputs and
 * the LoRA down-projections (read only by weight and LoRA gradients) go to scratch. */
static void take_layer_record(Stage *s, LayerActs *A, int N, LayerKeep keep) {
  const LlamaConfig *c = &s->cfg;
  size_t D = c->hidden_size, F = c->intermediate_size, r = s->lora_cfg.r;
  size_t HD = (size_t)c->num_heads * c->head_dim, KD = (size_t)c->num_kv_heads * c->head_dim;
  int all = keep == LAYER_KEEP_ALL;
  A->inv1 = act_take(s, N);
  A->inv2 = act_take(s, N);
  A->xn1 = all ? act_take(s, N * D) : s->tmp.xn1;
  A->xn2 = all ? act_take(s, N * D) : s->tmp.xn2;
  A->q = act_take(s, N * HD);
  A->k = act_take(s, N * KD);
  A->v = act_take(s, N * KD);
  A->att = act_take(s, N * HD);
  A->lse = act_take(s, (size_t)N * c->num_heads);
  A->h = act_take(s, N * D);
  A->gate = act_take(s, N * F);
  A->up = act_take(s, N * F);
  for (int t = 0; t < LORA_NUM_TARGETS; t++)
    A->u[t] = !s->lora->layers[0][t].in ? NULL : all ? act_take(s, N * r) : s->tmp.u[t];
}

static float *other(Stage *s, const float *p) { return p == s->ping ? s->pong : s->ping; }

static void check_ids(const int32_t *ids, int n, int V, int allow_negative, const char *what) {
  for (int i = 0; i < n; i++)
    if (ids[i] >= V || (ids[i] < 0 && !allow_negative))
      tv_die("%s[%d] = %d is outside the vocabulary [0, %d)", what, i, ids[i], V);
}

/* Rows per chunk of the head: all N when the slot keeps its logits (one GEMM, as they are
 * stored whole anyway), else the stage's chunk. */
static int logit_rows(const Stage *s, int N) {
  return s->keep_logits || s->logit_rows > N ? N : s->logit_rows;
}

/* Logits [n, V] of rows r0 .. r0 + n of the slot's micro-batch from its final-normed state xnf:
 * into the slot's kept logits, or the stage's chunk buffer. */
static float *head_logits(Stage *s, StageSlot *sl, const float *xnf, int r0, int n) {
  size_t V = s->cfg.vocab_size, D = s->cfg.hidden_size;
  float *lg = s->keep_logits ? sl->logits + (size_t)r0 * V : s->logit_chunk;
  s->be->gemm_weight(s->be, 0, 1, n, (int)V, (int)D, 1.0f, xnf + (size_t)r0 * D, (int)D,
                     stage_weight_ref(&s->w, s->w.lm_head), (int)D, 0.0f, lg, (int)V);
  return lg;
}

/* Last stage, backward from the loss: per chunk of rows, dlogits (in place over the logits,
 * recomputed unless kept), then dh = dlogits W_head, and in full training
 * dHead += dlogits^T xnf (the embedding's gradient when tied). */
static void head_backward(Stage *s, const PassPlan *plan, StageSlot *sl) {
  Backend *be = s->be;
  const LlamaConfig *c = &s->cfg;
  int N = sl->B * sl->T, D = c->hidden_size, V = c->vocab_size;
  const float *xnf = sl->x_final_normed; /* kept in full training */
  if (!plan->train_base && !s->keep_logits) { /* rebuilt: it lived in workspace */
    be->rmsnorm_forward(be, s->tmp.xn1, s->tmp.inv1, sl->x_final, s->w.final_norm, N, D,
                        c->rms_norm_eps);
    xnf = s->tmp.xn1;
  }
  int rows = logit_rows(s, N);
  for (int r0 = 0; r0 < N; r0 += rows) {
    int n = N - r0 < rows ? N - r0 : rows;
    float *lg = s->keep_logits ? sl->logits + (size_t)r0 * V : head_logits(s, sl, xnf, r0, n);
    /* The loss is not wanted again (NULL sum): dlogits only. */
    be->cross_entropy_acc(be, lg, lg, sl->targets + r0, n, V, sl->loss_scale, NULL);
    be->gemm_weight(be, 0, 0, n, D, V, 1.0f, lg, V, stage_weight_ref(&s->w, s->w.lm_head), D,
                    0.0f, s->dh + (size_t)r0 * D, D);
    if (plan->train_base)
      be->gemm(be, 1, 0, V, D, n, 1.0f, lg, V, xnf + (size_t)r0 * D, D, 1.0f,
               grad_of(s, s->w.lm_head), D);
  }
}

double stage_forward(Stage *s, const PassPlan *plan, const MicroBatch *mb, float **x_out) {
  Backend *be = s->be;
  const LlamaConfig *c = &s->cfg;
  TV_CHECK(plan && plan->layers, "stage_forward needs a plan with one entry per layer");
  TV_CHECK(!plan->train_base || (s->weight_grads && plan->backward_stop <= 0) || plan->backward_stop >= s->l1,
           "a full-training pass needs stage_enable_full_training and backward_stop 0");
  int B = mb->B, T = mb->T, row_offset = mb->row_offset;
  const int32_t *tokens = mb->tokens, *targets = mb->targets;
  TV_CHECK(B >= 1 && B <= s->max_B && T >= 1 && T <= s->max_T,
           "micro-batch %d x %d exceeds the stage's %d x %d", B, T, s->max_B, s->max_T);
  TV_CHECK(mb->slot >= 0 && mb->slot < s->num_slots, "micro-batch slot %d outside the stage's %d",
           mb->slot, s->num_slots);
  int N = B * T, D = c->hidden_size, first = stage_is_first(s), last = stage_is_last(s);
  int bstop = plan->backward_stop;
  StageSlot *sl = &s->slots[mb->slot];
  s->run = s->last_forward = sl;
  sl->B = B, sl->T = T, sl->row_offset = row_offset, sl->loss_scale = mb->loss_scale;
  sl->lora_pass = (LoraPass){.be = be,
                            .set = s->lora,
                            .pass_seed = plan->pass_seed,
                            .row_offset = row_offset,
                            .N = N,
                            .scratch = s->lora_tmp,
                            .du = s->du};
  s->act_used -= sl->used;
  sl->used = 0;
  sl->has_forward = 1;
  /* Grow the slot's arena when this plan keeps more than any before; the records of the
   * slot's previous micro-batch are dead (its backward has run, or it had none). */
  size_t need = forward_arena_bytes(s, plan, (size_t)N);
  if (need > sl->capacity) {
    if (sl->arena) be->free(be, sl->arena);
    sl->arena = be->alloc(be, need);
    sl->capacity = need;
  }

  /* A layer's input is kept in the arena when the layer will run backward; otherwise
   * hidden states bounce between the ping and pong workspace buffers. */
  float *cur = s->ping;
  if (bstop <= s->l0) cur = act_take(s, (size_t)N * D);
  if (first) {
    check_ids(tokens, N, c->vocab_size, 0, "input token");
    be->from_host(be, sl->tokens, tokens, (size_t)N * sizeof(int32_t));
    be->embedding_forward(be, cur, stage_weight_ref(&s->w, s->w.embed), sl->tokens, N, D);
  } else {
    TV_CHECK(mb->x_in, "a stage after the first needs its input hidden state");
    be->copy(be, cur, mb->x_in, (size_t)N * D * sizeof(float));
  }

  for (int l = s->l0; l < s->l1; l++) {
    const LayerPlan *lp = &plan->layers[l - s->l0];
    LayerActs *A = &sl->acts[l - s->l0];
    int has_backward = l >= bstop;
    TV_CHECK(lp->keep_activations != LAYER_KEEP_FOR_INPUT_GRAD ||
                 (!lp->train_targets && !plan->train_base),
             "layer %d keeps only its input-gradient record but trains", l);
    if (has_backward && lp->keep_activations != LAYER_RECOMPUTE) {
      take_layer_record(s, A, N, lp->keep_activations);
    } else {
      *A = s->tmp; /* recomputed in backward, or never needed */
    }
    A->x_in = cur;
    float *dest;
    if (l + 1 < s->l1)
      dest = l + 1 >= bstop ? act_take(s, (size_t)N * D) : other(s, cur);
    else if (last)
      dest = has_backward ? act_take(s, (size_t)N * D) : other(s, cur);
    else
      dest = sl->x_out;
    layer_forward(s, plan, l, A, dest, B, T);
    cur = dest;
  }

  if (!last) {
    TV_CHECK(sl->used == need, "activation arena: took %zu bytes, planned %zu", sl->used, need);
    if (x_out) *x_out = cur;
    return 0.0;
  }
  /* Final norm, head, loss. The normed state is only an input of the frozen head's GEMM,
   * so it lives in workspace; x_final and its rms are kept for backward. */
  sl->x_final = cur;
  sl->inv_final = s->l1 - 1 >= bstop ? act_take(s, (size_t)N) : s->tmp.inv1;
  /* Full training needs the normed state again for the head's weight gradient. */
  float *xnf = plan->train_base && s->l1 - 1 >= bstop ? act_take(s, (size_t)N * D) : s->tmp.xn1;
  sl->x_final_normed = xnf;
  TV_CHECK(sl->used == need, "activation arena: took %zu bytes, planned %zu", sl->used, need);
  be->rmsnorm_forward(be, xnf, sl->inv_final, cur, s->w.final_norm, N, D, c->rms_norm_eps);
  if (x_out) *x_out = NULL;
  if (targets) {
    check_ids(targets, N, c->vocab_size, 1, "target token");
    be->from_host(be, sl->targets, targets, (size_t)N * sizeof(int32_t));
  } else if (!s->keep_logits) {
    return 0.0; /* neither a loss nor logits wanted */
  }
  /* The loss sums on the device over the chunks: into the micro-batch's own sum when the
   * caller gave one (read back once per pass), else into the stage's, read back here. */
  double *loss_dst = mb->loss_sum ? mb->loss_sum : s->loss_sum;
  if (!mb->loss_sum) be->zero(be, s->loss_sum, sizeof(double));
  int rows = logit_rows(s, N);
  for (int r0 = 0; r0 < N; r0 += rows) {
    int n = N - r0 < rows ? N - r0 : rows;
    float *lg = head_logits(s, sl, xnf, r0, n);
    if (targets)
      be->cross_entropy_acc(be, lg, NULL, sl->targets + r0, n, c->vocab_size, 1.0f, loss_dst);
  }
  if (!targets || mb->loss_sum) return 0.0;
  double sum;
  be->to_host(be, &sum, s->loss_sum, sizeof sum);
  return sum * mb->loss_scale;
}

void stage_backward(Stage *s, const PassPlan *plan, int slot, const float *dy_in, float **dx_out) {
  Backend *be = s->be;
  const LlamaConfig *c = &s->cfg;
  TV_CHECK(slot >= 0 && slot < s->num_slots, "micro-batch slot %d outside the stage's %d", slot,
           s->num_slots);
  StageSlot *sl = &s->slots[slot];
  TV_CHECK(sl->has_forward, "stage_backward of slot %d without a matching stage_forward", slot);
  sl->has_forward = 0;
  s->run = sl;
  int B = sl->B, T = sl->T, N = B * T, D = c->hidden_size;
  int bstop = plan->backward_stop;
  if (dx_out) *dx_out = NULL;
  if (bstop >= s->l1) { /* no layer of this stage runs backward; the slot kept nothing */
    s->act_used -= sl->used;
    sl->used = 0;
    return;
  }

  const float *dy = dy_in;
  if (stage_is_last(s)) {
    /* Through the frozen head, chunk by chunk, and the final norm. */
    head_backward(s, plan, sl);
    float *dfinal = plan->train_base ? grad_of(s, s->w.final_norm) : NULL;
    be->rmsnorm_backward(be, s->ping, dfinal, s->dh, sl->x_final, s->w.final_norm, sl->inv_final,
                         N, D);
    dy = s->ping;
  }
  TV_CHECK(dy, "a stage before the last needs the gradient of its output");

  int lowest = bstop > s->l0 ? bstop : s->l0;
  for (int l = s->l1 - 1; l >= lowest; l--) {
    const LayerPlan *lp = &plan->layers[l - s->l0];
    LayerActs *A = &sl->acts[l - s->l0];
    if (lp->keep_activations == LAYER_RECOMPUTE) {
      /* Rebuild the record from the kept input; dropout masks and e_l come out the same. */
      float *x_saved = A->x_in;
      *A = s->tmp;
      A->x_in = x_saved;
      layer_forward(s, plan, l, A, s->dxn, B, T);
    }
    /* The input gradient is needed by the layer below, or by the stage below. */
    float *dx = NULL;
    if (l > bstop) {
      if (l > s->l0)
        dx = dy == s->ping ? s->pong : s->ping;
      else if (!stage_is_first(s))
        dx = sl->dx_out;
    } else if (plan->train_base && l == 0) {
      dx = sl->dx_out; /* the embedding's gradient */
    }
    layer_backward(s, plan, l, A, dy, dx, B, T);
    dy = dx;
  }
  if (plan->train_base && stage_is_first(s) && bstop <= s->l0)
    be->embedding_backward(be, grad_of(s, s->w.embed), sl->dx_out, sl->tokens, N, D);
  if (dx_out && !stage_is_first(s) && bstop < s->l0) *dx_out = sl->dx_out;
  /* The slot's records are dead now: the next forward into it may take them. */
  s->act_used -= sl->used;
  sl->used = 0;
}
