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
  char msg[256];
  const char *err = llama_config_validate(cfg, msg, sizeof msg);
  if (err) tv_die("model config: %s", err);
  if ((err = lora_config_validate(lora, msg, sizeof msg))) tv_die("LoRA config: %s", err);
  if (l0 < 0 || l1 > cfg->num_layers || l0 >= l1)
    tv_die("stage layers [%d, %d) are not a non-empty range inside [0, %d)", l0, l1,
           cfg->num_layers);
  if (max_B < 1 || max_T < 1 || (long long)max_B * max_T > (1LL << 26))
    tv_die("micro-batch of %d x %d tokens is out of range", max_B, max_T);

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

  /* Weights: one arena, views into it. */
  size_t per_layer = 2 * D + HD * D + 2 * KD * D + D * HD + 3 * F * D +
                     (cfg->attention_bias ? HD + 2 * KD : 0);
  int need_embed = first || (last && cfg->tie_word_embeddings);
  int need_head = last && !cfg->tie_word_embeddings;
  size_t total = per_layer * nl + (need_embed ? V * D : 0) + (need_head ? V * D : 0) +
                 (last ? D : 0);
  s->weight_bytes = total * sizeof(float);
  s->weight_arena = be->alloc(be, s->weight_bytes);
  float *p = s->weight_arena;
#define TAKE(n) (p += (n), p - (n))
  s->w.layers = tv_calloc((size_t)nl, sizeof(LayerWeights));
  for (int i = 0; i < nl; i++) {
    LayerWeights *lw = &s->w.layers[i];
    lw->attn_norm = TAKE(D);
    lw->wq = TAKE(HD * D);
    lw->wk = TAKE(KD * D);
    lw->wv = TAKE(KD * D);
    lw->wo = TAKE(D * HD);
    if (cfg->attention_bias) {
      lw->bq = TAKE(HD);
      lw->bk = TAKE(KD);
      lw->bv = TAKE(KD);
    }
    lw->mlp_norm = TAKE(D);
    lw->w_gate = TAKE(F * D);
    lw->w_up = TAKE(F * D);
    lw->w_down = TAKE(D * F);
  }
  if (need_embed) s->w.embed = TAKE(V * D);
  if (need_head) s->w.lm_head = TAKE(V * D);
  if (last) {
    s->w.final_norm = TAKE(D);
    if (cfg->tie_word_embeddings) s->w.lm_head = s->w.embed;
  }
#undef TAKE

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
    sl->logits = be->alloc(be, N * V * sizeof(float));
    sl->targets = be->alloc(be, N * sizeof(int32_t));
    bytes += N * V * sizeof(float) + N * sizeof(int32_t);
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
                    &s->weight_m, &s->weight_v};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
    if (*bufs[i]) be->free(be, *bufs[i]);
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
  return s->last_forward ? s->last_forward->logits : s->slots[0].logits;
}

StageMemory stage_memory(const Stage *s) {
  StageMemory m;
  size_t lora_bytes = (size_t)(s->l1 - s->l0) * s->lora->layer_numel * sizeof(float);
  m.weights = s->weight_bytes;
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

/* Normal(0, std) by Box-Muller from two counter-based uniforms per element. */
static void fill_normal(Backend *be, float *dst, size_t n, uint64_t seed, uint64_t stream,
                        float std) {
  float *host = tv_malloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) {
    uint32_t w[4];
    philox4x32(seed, stream, i, w);
    double u1 = ((double)w[0] + 1.0) / 4294967297.0, u2 = (double)w[1] / 4294967296.0;
    host[i] = (float)(std * sqrt(-2.0 * log(u1)) * cos(2.0 * 3.14159265358979323846 * u2));
  }
  be->from_host(be, dst, host, n * sizeof(float));
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
    float *mats[] = {w->wq, w->wk, w->wv, w->wo, w->w_gate, w->w_up, w->w_down, w->bq, w->bk, w->bv};
    size_t sizes[] = {HD * D, KD * D, KD * D, D * HD, F * D, F * D, D * F, HD, KD, KD};
    for (uint32_t j = 0; j < 10; j++)
      if (mats[j])
        fill_normal(be, mats[j], sizes[j], seed, rng_stream_id(RNG_TAG_WEIGHTS, (uint32_t)l, j, 0),
                    std);
    fill_ones(be, w->attn_norm, D);
    fill_ones(be, w->mlp_norm, D);
  }
  /* Embedding and head use layer ids past the last layer, so every stage that holds a copy
   * of the (tied) embedding draws the same numbers. */
  if (s->w.embed) fill_normal(be, s->w.embed, V * D, seed, rng_stream_id(RNG_TAG_WEIGHTS, L, 0, 0), std);
  if (s->w.lm_head && s->w.lm_head != s->w.embed)
    fill_normal(be, s->w.lm_head, V * D, seed, rng_stream_id(RNG_TAG_WEIGHTS, L + 1, 0, 0), std);
  if (s->w.final_norm) fill_ones(be, s->w.final_norm, D);
}

void stage_merge_lora(Stage *s) {
  for (int l = s->l0; l < s->l1; l++) {
    LayerWeights *w = &s->w.layers[l - s->l0];
    float *base[LORA_NUM_TARGETS] = {w->wq, w->wk, w->wv, w->wo, w->w_gate, w->w_up, w->w_down};
    for (int t = 0; t < LORA_NUM_TARGETS; t++) lora_merge(s->be, s->lora, l, t, base[t]);
  }
}

void stage_enable_full_training(Stage *s) {
  if (s->weight_grads) return;
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
  return (size_t)(s->w.layers[0].w_down - s->w.layers[0].attn_norm) +
         (size_t)s->cfg.intermediate_size * s->cfg.hidden_size;
}

void stage_weight_grad_part_sums(Stage *s, double *parts) {
  TV_CHECK(s->weight_grads, "full training is not enabled on this stage");
  int L = s->cfg.num_layers;
  memset(parts, 0, (size_t)STAGE_WEIGHT_PARTS(L) * sizeof(double));
  size_t D = s->cfg.hidden_size, VD = (size_t)s->cfg.vocab_size * D;
  size_t layer_numel = stage_layer_weight_numel(s);
  for (int l = s->l0; l < s->l1; l++)
    parts[l] = s->be->sum_squares(s->be, layer_numel,
                                  s->weight_grads + (s->w.layers[l - s->l0].attn_norm - s->weight_arena));
  const float *extra[3] = {s->w.embed, s->w.lm_head != s->w.embed ? s->w.lm_head : NULL,
                           s->w.final_norm};
  size_t extra_numel[3] = {VD, VD, D};
  for (int k = 0; k < 3; k++)
    if (extra[k])
      parts[L + k] = s->be->sum_squares(s->be, extra_numel[k],
                                        s->weight_grads + (extra[k] - s->weight_arena));
}

AdamwBlock stage_weight_block(Stage *s) {
  TV_CHECK(s->weight_grads, "full training is not enabled on this stage");
  return (AdamwBlock){.params = s->weight_arena,
                      .grads = s->weight_grads,
                      .m = s->weight_m,
                      .v = s->weight_v,
                      .n = s->weight_bytes / sizeof(float)};
}
