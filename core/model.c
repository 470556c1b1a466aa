/* The Stage's lifecycle: memory layout, rotary tables, random initialisation, LoRA merge. The passes themselves are in stage_pass.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rng.h"
#include "stage_internal.h"

void stage_rope_tables(Backend *be, const LlamaConfig *cfg, int T, float **cos_out,
                       float **sin_out) {
  size_t half = (size_t)cfg->head_dim / 2, n = (size_t)T * half;
  float *cs = tv_malloc(n * sizeof(float)), *sn = tv_malloc(n * sizeof(float));
  /* Angles in double, so every position's table is as exact as float allows. */
  for (size_t t = 0; t < (size_t)T; t++)
    for (size_t i = 0; i < half; i++) {
      double ang = (double)t * llama_rope_inv_freq(cfg, (int)i);
      cs[t * half + i] = (float)cos(ang);
      sn[t * half + i] = (float)sin(ang);
    }
  *cos_out = be->alloc(be, n * sizeof(float));
  *sin_out = be->alloc(be, n * sizeof(float));
  be->from_host(be, *cos_out, cs, n * sizeof(float));
  be->from_host(be, *sin_out, sn, n * sizeof(float));
  free(cs);
  free(sn);
}

Stage *stage_create(Backend *be, const LlamaConfig *cfg, const LoraConfig *lora, int l0, int l1,
                    int max_B, int max_T) {
  return stage_create_typed(be, cfg, lora, l0, l1, max_B, max_T, TV_F32);
}

Stage *stage_create_typed(Backend *be, const LlamaConfig *cfg, const LoraConfig *lora, int l0,
                          int l1, int max_B, int max_T, TvDtype weight_dtype) {
  char msg[256];
  const char *err = llama_config_validate(cfg, msg, sizeof msg);
  if (err) tv_die("model config: %s", err);
  if ((err = lora_config_validate(lora, msg, sizeof msg))) tv_die("LoRA config: %s", err);
  if (l0 < 0 || l1 > cfg->num_layers || l0 >= l1)
    tv_die("stage layers [%d, %d) are not a non-empty range inside [0, %d)", l0, l1,
           cfg->num_layers);
  if (max_B < 1 || max_T < 1 || (long long)max_B * max_T > (1LL << 26))
    tv_die("micro-batch of %d x %d tokens is out of range", max_B, max_T);
  if (weight_dtype != TV_F32 && weight_dtype != TV_BF16)
    tv_die("base weight dtype %d is neither f32 nor bf16", (int)weight_dtype);

  Stage *s = tv_calloc(1, sizeof(Stage));
  s->be = be;
  s->cfg = *cfg;
  s->lora_cfg = *lora;
  s->l0 = l0;
  s->l1 = l1;
  s->max_B = max_B;
  s->max_T = max_T;
  int nl = l1 - l0, first = l0 == 0, last = l1 == cfg->num_layers;
  size_t D = cfg->hidden_size, F = cfg->intermediate_size, V = cfg->vocab_size;
  size_t HD = (size_t)cfg->num_heads * cfg->head_dim, KD = (size_t)cfg->num_kv_heads * cfg->head_dim;

  /* Weights: an f32 arena for norms and biases (and the matrices when f32), a bf16 arena for
   * the matrices when bf16; views into them. Layer by layer, then embedding, head, norm. */
  size_t per_layer_matrices = HD * D + 2 * KD * D + D * HD + 3 * F * D;
  size_t per_layer_f32 = 2 * D + (cfg->attention_bias ? HD + 2 * KD : 0);
  int need_embed = first || (last && cfg->tie_word_embeddings);
  int need_head = last && !cfg->tie_word_embeddings;
  size_t matrices = per_layer_matrices * nl + (need_embed ? V * D : 0) + (need_head ? V * D : 0);
  size_t f32s = per_layer_f32 * nl + (last ? D : 0);
  int bf16 = weight_dtype == TV_BF16;
  s->w.dtype = weight_dtype;
  s->weight_bytes = (f32s + (bf16 ? 0 : matrices)) * sizeof(float);
  s->weight_arena = be->alloc(be, s->weight_bytes);
  if (bf16) {
    s->matrix_bytes = matrices * sizeof(uint16_t);
    s->matrix_arena = be->alloc(be, s->matrix_bytes);
  }
  float *p = s->weight_arena;
  uint16_t *q = s->matrix_arena;
  /* F32(n) takes n floats of the f32 arena; MAT(n) n matrix elements of either arena. */
#define F32(n) (p += (n), p - (n))
#define MAT(n) (bf16 ? (void *)(q += (n), q - (n)) : (void *)F32(n))
  s->w.layers = tv_calloc((size_t)nl, sizeof(LayerWeights));
  for (int i = 0; i < nl; i++) {
    LayerWeights *lw = &s->w.layers[i];
    lw->attn_norm = F32(D);
    lw->wq = MAT(HD * D);
    lw->wk = MAT(KD * D);
    lw->wv = MAT(KD * D);
    lw->wo = MAT(D * HD);
    if (cfg->attention_bias) {
      lw->bq = F32(HD);
      lw->bk = F32(KD);
      lw->bv = F32(KD);
    }
    lw->mlp_norm = F32(D);
    lw->w_gate = MAT(F * D);
    lw->w_up = MAT(F * D);
    lw->w_down = MAT(D * F);
  }
  if (need_embed) s->w.embed = MAT(V * D);
  if (need_head) s->w.lm_head = MAT(V * D);
  if (last) {
    s->w.final_norm = F32(D);
    if (cfg->tie_word_embeddings) s->w.lm_head = s->w.embed;
  }
#undef MAT
#undef F32

  s->lora = lora_set_create(be, lora, cfg, l0, l1);

  /* Rotary tables for positions 0..max_T-1. */
  stage_rope_tables(be, cfg, max_T, &s->rope_cos, &s->rope_sin);

  /* Workspace: sized once, reused by every layer. */
  size_t N = (size_t)max_B * max_T, r = lora->r;
  size_t wide = F > HD ? F : HD, widest = wide > D ? wide : D;
  size_t ws = 0;
#define WS(ptr, n) (s->ptr = be->alloc(be, (n) * sizeof(float)), ws += (n) * sizeof(float))
  WS(ping, N * D);
  WS(pong, N * D);
  WS(dh, N * D);
  WS(dxn, N * D);
  WS(dbig1, N * wide);
  WS(dbig2, N * wide);
  WS(dq, N * HD);
  WS(dk, N * KD);
  WS(dv, N * KD);
  WS(du, N * r);
  WS(lora_tmp, N * widest);
  /* The scratch record for layers that keep nothing. */
  WS(tmp.inv1, N);
  WS(tmp.inv2, N);
  WS(tmp.xn1, N * D);
  WS(tmp.xn2, N * D);
  WS(tmp.q, N * HD);
  WS(tmp.k, N * KD);
  WS(tmp.v, N * KD);
  WS(tmp.att, N * HD);
  WS(tmp.lse, N * cfg->num_heads);
  WS(tmp.h, N * D);
  WS(tmp.gate, N * F);
  WS(tmp.up, N * F);
  for (int t = 0; t < LORA_NUM_TARGETS; t++) WS(tmp.u[t], N * r);
  if (last) {
    s->logit_rows = stage_logit_chunk_rows(N, V);
    WS(logit_chunk, (size_t)s->logit_rows * V);
    s->loss_sum = be->alloc(be, sizeof(double));
    ws += sizeof(double);
  }
#undef WS
  s->workspace_bytes = ws;
  /* One slot to start; each slot's activation arena grows to what the largest plan run in
   * it keeps (stage_forward), so memory follows the method: T-Vaccine's frozen layers never
   * reserve a full record. */
  stage_reserve_slots(s, 1);
  return s;
}

/* A slot's own buffers: its records and outputs (and logits, tokens, targets on the end
 * stages); its arena grows with the first forward that needs one. */
static void slot_init(Stage *s, StageSlot *sl) {
  Backend *be = s->be;
  size_t N = (size_t)s->max_B * s->max_T, D = s->cfg.hidden_size, V = s->cfg.vocab_size;
  *sl = (StageSlot){.acts = tv_calloc((size_t)(s->l1 - s->l0), sizeof(LayerActs))};
  sl->x_out = be->alloc(be, N * D * sizeof(float));
  sl->dx_out = be->alloc(be, N * D * sizeof(float));
  size_t bytes = 2 * N * D * sizeof(float);
  if (stage_is_last(s)) {
    if (s->keep_logits) {
      sl->logits = be->alloc(be, N * V * sizeof(float));
      bytes += N * V * sizeof(float);
    }
    sl->targets = be->alloc(be, N * sizeof(int32_t));
    bytes += N * sizeof(int32_t);
  }
  if (stage_is_first(s)) {
    sl->tokens = be->alloc(be, N * sizeof(int32_t));
    bytes += N * sizeof(int32_t);
  }
  s->workspace_bytes += bytes;
}

static void slot_free(Backend *be, StageSlot *sl) {
  void *bufs[] = {sl->arena, sl->x_out, sl->dx_out, sl->logits, sl->targets, sl->tokens};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
    if (bufs[i]) be->free(be, bufs[i]);
  free(sl->acts);
}

void stage_reserve_slots(Stage *s, int slots) {
  if (slots < 1 || slots > 4096) tv_die("%d micro-batch slots is out of range [1, 4096]", slots);
  if (slots <= s->num_slots) return;
  StageSlot *grown = tv_calloc((size_t)slots, sizeof(StageSlot));
  if (s->num_slots) memcpy(grown, s->slots, (size_t)s->num_slots * sizeof(StageSlot));
  for (int i = s->num_slots; i < slots; i++) slot_init(s, &grown[i]);
  /* The running / last-forward pointers follow their slots into the new array. */
  if (s->last_forward) s->last_forward = grown + (s->last_forward - s->slots);
  s->run = NULL;
  free(s->slots);
  s->slots = grown;
  s->num_slots = slots;
}

int stage_num_slots(const Stage *s) { return s->num_slots; }

void stage_destroy(Stage *s) {
  if (!s) return;
  Backend *be = s->be;
  float **bufs[] = {&s->ping, &s->pong, &s->dh, &s->dxn, &s->dbig1, &s->dbig2, &s->dq, &s->dk,
                    &s->dv, &s->du, &s->lora_tmp, &s->tmp.inv1,
                    &s->tmp.inv2, &s->tmp.xn1, &s->tmp.xn2, &s->tmp.q, &s->tmp.k, &s->tmp.v,
                    &s->tmp.att, &s->tmp.lse, &s->tmp.h, &s->tmp.gate, &s->tmp.up,
                    &s->rope_cos, &s->rope_sin, &s->weight_arena, &s->weight_grads,
                    &s->weight_m, &s->weight_v, &s->logit_chunk};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
    if (*bufs[i]) be->free(be, *bufs[i]);
  if (s->matrix_arena) be->free(be, s->matrix_arena);
  if (s->loss_sum) be->free(be, s->loss_sum);
  for (int t = 0; t < LORA_NUM_TARGETS; t++) be->free(be, s->tmp.u[t]);
  for (int i = 0; i < s->num_slots; i++) slot_free(be, &s->slots[i]);
  free(s->slots);
  lora_set_destroy(be, s->lora);
  free(s->w.layers);
  free(s);
}

int stage_first_layer(const Stage *s) { return s->l0; }
int stage_end_layer(const Stage *s) { return s->l1; }
int stage_is_first(const Stage *s) { return s->l0 == 0; }
int stage_is_last(const Stage *s) { return s->l1 == s->cfg.num_layers; }
const LlamaConfig *stage_config(const Stage *s) { return &s->cfg; }
StageWeights *stage_weights(Stage *s) { return &s->w; }
Backend *stage_backend(Stage *s) { return s->be; }

void stage_max_shape(const Stage *s, int *max_B, int *max_T) {
  *max_B = s->max_B;
  *max_T = s->max_T;
}
LoraSet *stage_lora(Stage *s) { return s->lora; }
const float *stage_logits(const Stage *s) {
  TV_CHECK(s->keep_logits, "stage_logits needs a stage that keeps its logits (stage_keep_logits)");
  return s->last_forward ? s->last_forward->logits : s->slots[0].logits;
}

TvDtype stage_weight_dtype(const Stage *s) { return s->w.dtype; }

int stage_logit_chunk_rows(size_t N, size_t V) {
  size_t rows = STAGE_LOGIT_CHUNK_BYTES / (V * sizeof(float));
  if (rows < 1) rows = 1;
  return (int)(rows < N ? rows : N);
}

void stage_set_logit_chunk_rows(Stage *s, int rows) {
  TV_CHECK(stage_is_last(s) && rows >= 1, "logit chunks of %d rows on a stage without the head",
           rows);
  size_t V = s->cfg.vocab_size, N = (size_t)s->max_B * s->max_T;
  if ((size_t)rows > N) rows = (int)N;
  s->workspace_bytes -= (size_t)s->logit_rows * V * sizeof(float);
  s->be->free(s->be, s->logit_chunk);
  s->logit_rows = rows;
  s->logit_chunk = s->be->alloc(s->be, (size_t)rows * V * sizeof(float));
  s->workspace_bytes += (size_t)rows * V * sizeof(float);
}

void stage_keep_logits(Stage *s, int keep) {
  keep = keep != 0;
  if (s->keep_logits == keep || !stage_is_last(s)) return;
  s->keep_logits = keep; /* from the next forward on */
  size_t bytes = (size_t)s->max_B * s->max_T * s->cfg.vocab_size * sizeof(float);
  for (int i = 0; i < s->num_slots; i++) {
    StageSlot *sl = &s->slots[i];
    if (keep) {
      sl->logits = s->be->alloc(s->be, bytes);
      s->workspace_bytes += bytes;
    } else {
      s->be->free(s->be, sl->logits);
      sl->logits = NULL;
      s->workspace_bytes -= bytes;
    }
  }
}

/* Host values are converted in pieces, so a 500 MB embedding needs no 500 MB temporary. */
#define HOST_CONVERT_ELEMS ((size_t)1 << 20)

void stage_matrix_from_host(Stage *s, void *matrix, const float *host, size_t n) {
  Backend *be = s->be;
  if (s->w.dtype == TV_F32) {
    be->from_host(be, matrix, host, n * sizeof(float));
    return;
  }
  size_t cap = n < HOST_CONVERT_ELEMS ? n : HOST_CONVERT_ELEMS;
  uint16_t *tmp = tv_malloc((cap ? cap : 1) * sizeof(uint16_t));
  for (size_t i0 = 0; i0 < n; i0 += cap) {
    size_t m = n - i0 < cap ? n - i0 : cap;
    for (size_t i = 0; i < m; i++) tmp[i] = tv_bf16_from_f32(host[i0 + i]);
    be->from_host(be, (uint16_t *)matrix + i0, tmp, m * sizeof(uint16_t));
  }
  free(tmp); /* host transfers complete before they return (backend.h) */
}

void stage_matrix_to_host(Stage *s, float *host, const void *matrix, size_t n) {
  Backend *be = s->be;
  if (s->w.dtype == TV_F32) {
    be->to_host(be, host, matrix, n * sizeof(float));
    return;
  }
  size_t cap = n < HOST_CONVERT_ELEMS ? n : HOST_CONVERT_ELEMS;
  uint16_t *tmp = tv_malloc((cap ? cap : 1) * sizeof(uint16_t));
  for (size_t i0 = 0; i0 < n; i0 += cap) {
    size_t m = n - i0 < cap ? n - i0 : cap;
    be->to_host(be, tmp, (const uint16_t *)matrix + i0, m * sizeof(uint16_t));
    for (size_t i = 0; i < m; i++) host[i0 + i] = tv_f32_from_bf16(tmp[i]);
  }
  free(tmp);
}

StageMemory stage_memory(const Stage *s) {
  StageMemory m;
  size_t lora_bytes = (size_t)(s->l1 - s->l0) * s->lora->layer_numel * sizeof(float);
  m.weights = s->weight_bytes + s->matrix_bytes;
  m.lora = lora_bytes;
  m.grads = lora_bytes;
  m.optimizer = 2 * lora_bytes;
  m.activations = s->act_peak;
  m.activation_arena = 0;
  for (int i = 0; i < s->num_slots; i++) m.activation_arena += s->slots[i].capacity;
  m.workspace = s->workspace_bytes;
  return m;
}

void stage_reset_memory_peak(Stage *s) { s->act_peak = 0; }

/* Normal(0, std) by Box-Muller from two counter-based uniforms per element, into a base
 * matrix (matrix = 1: rounded to the stage's dtype) or an f32 bias. */
static void fill_normal(Stage *s, void *dst, int matrix, size_t n, uint64_t seed,
                        uint64_t stream, float std) {
  float *host = tv_malloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) {
    uint32_t w[4];
    philox4x32(seed, stream, i, w);
    double u1 = ((double)w[0] + 1.0) / 4294967297.0, u2 = (double)w[1] / 4294967296.0;
    host[i] = (float)(std * sqrt(-2.0 * log(u1)) * cos(2.0 * 3.14159265358979323846 * u2));
  }
  if (matrix)
    stage_matrix_from_host(s, dst, host, n);
  else
    s->be->from_host(s->be, dst, host, n * sizeof(float));
  free(host);
}

static void fill_ones(Backend *be, float *dst, size_t n) {
  float *host = tv_malloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) host[i] = 1.0f;
  be->from_host(be, dst, host, n * sizeof(float));
  free(host);
}

void stage_init_random_weights(Stage *s, uint64_t seed, float std) {
  const LlamaConfig *c = &s->cfg;
  Backend *be = s->be;
  size_t D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
  size_t HD = (size_t)c->num_heads * c->head_dim, KD = (size_t)c->num_kv_heads * c->head_dim;
  uint32_t L = (uint32_t)c->num_layers;
  for (int l = s->l0; l < s->l1; l++) {
    LayerWeights *w = &s->w.layers[l - s->l0];
    void *mats[] = {w->wq, w->wk, w->wv, w->wo, w->w_gate, w->w_up, w->w_down, w->bq, w->bk, w->bv};
    size_t sizes[] = {HD * D, KD * D, KD * D, D * HD, F * D, F * D, D * F, HD, KD, KD};
    for (uint32_t j = 0; j < 10; j++) /* j < 7: the matrices, then the biases */
      if (mats[j])
        fill_normal(s, mats[j], j < 7, sizes[j], seed,
                    rng_stream_id(RNG_TAG_WEIGHTS, (uint32_t)l, j, 0), std);
    fill_ones(be, w->attn_norm, D);
    fill_ones(be, w->mlp_norm, D);
  }
  /* Embedding and head use layer ids past the last layer, so every stage that holds a copy
   * of the (tied) embedding draws the same numbers. */
  if (s->w.embed)
    fill_normal(s, s->w.embed, 1, V * D, seed, rng_stream_id(RNG_TAG_WEIGHTS, L, 0, 0), std);
  if (s->w.lm_head && s->w.lm_head != s->w.embed)
    fill_normal(s, s->w.lm_head, 1, V * D, seed, rng_stream_id(RNG_TAG_WEIGHTS, L + 1, 0, 0), std);
  if (s->w.final_norm) fill_ones(be, s->w.final_norm, D);
}

void stage_merge_lora(Stage *s) {
  for (int l = s->l0; l < s->l1; l++) {
    LayerWeights *w = &s->w.layers[l - s->l0];
    void *base[LORA_NUM_TARGETS] = {w->wq, w->wk, w->wv, w->wo, w->w_gate, w->w_up, w->w_down};
    for (int t = 0; t < LORA_NUM_TARGETS; t++)
      lora_merge(s->be, s->lora, l, t, s->w.dtype, base[t]);
  }
}

void stage_enable_full_training(Stage *s) {
  if (s->weight_grads) return;
  if (s->w.dtype != TV_F32)
    tv_die("full-parameter training needs f32 base weights, but this stage stores them as %s "
           "(set weight_dtype: f32)", tv_dtype_name(s->w.dtype));
  if (s->cfg.attention_bias)
    tv_die("full-parameter training of models with attention biases is not supported");
  s->weight_grads = s->be->alloc(s->be, s->weight_bytes);
  s->weight_m = s->be->alloc(s->be, s->weight_bytes);
  s->weight_v = s->be->alloc(s->be, s->weight_bytes);
}

void stage_zero_weight_grads(Stage *s) {
  TV_CHECK(s->weight_grads, "full training is not enabled on this stage");
  s->be->zero(s->be, s->weight_grads, s->weight_bytes);
}

size_t stage_layer_weight_numel(const Stage *s) {
  /* Full training holds f32 weights, one layer's contiguous in the f32 arena. */
  TV_CHECK(s->w.dtype == TV_F32, "full training needs f32 weights");
  return (size_t)((const float *)s->w.layers[0].w_down - s->w.layers[0].attn_norm) +
         (size_t)s->cfg.intermediate_size * s->cfg.hidden_size;
}

void stage_weight_grad_part_sums(Stage *s, double *parts) {
  TV_CHECK(s->weight_grads, "full training is not enabled on this stage");
  Backend *be = s->be;
  int L = s->cfg.num_layers;
  be->zero(be, parts, (size_t)STAGE_WEIGHT_PARTS(L) * sizeof(double));
  size_t D = s->cfg.hidden_size, VD = (size_t)s->cfg.vocab_size * D;
  size_t layer_numel = stage_layer_weight_numel(s);
  for (int l = s->l0; l < s->l1; l++)
    be->sum_squares_acc(be, layer_numel,
                        s->weight_grads + (s->w.layers[l - s->l0].attn_norm - s->weight_arena),
                        &parts[l]);
  const float *extra[3] = {s->w.embed, s->w.lm_head != s->w.embed ? s->w.lm_head : NULL,
                           s->w.final_norm};
  size_t extra_numel[3] = {VD, VD, D};
  for (int k = 0; k < 3; k++)
    if (extra[k])
      be->sum_squares_acc(be, extra_numel[k], s->weight_grads + (extra[k] - s->weight_arena),
                          &parts[L + k]);
}

AdamwBlock stage_weight_block(Stage *s) {
  TV_CHECK(s->weight_grads, "full training is not enabled on this stage");
  return (AdamwBlock){.params = s->weight_arena,
                      .grads = s->weight_grads,
                      .m = s->weight_m,
                      .v = s->weight_v,
                      .n = s->weight_bytes / sizeof(float)};
}
