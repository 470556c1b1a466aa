/* Builds a whole-model stage from a golden file (see golden_model.h). */
#include "golden_model.h"

#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "test_util.h"

const char *const golden_target_path[LORA_NUM_TARGETS] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

void golden_put(Backend *be, float *dst, const Golden *g, const char *name, int ndim, int64_t d0,
                int64_t d1) {
  int64_t dims[2] = {d0, d1};
  const GoldenTensor *t = golden_get_shaped(g, name, GOLDEN_F32, ndim, dims);
  TV_CHECK(dst != NULL, "stage has no storage for %s", name);
  be->from_host(be, dst, t->f32, t->numel * sizeof(float));
}

Stage *golden_model_build(Backend *be, const Golden *g, const char *file, GoldenModel *out) {
  const int V = golden_i32(g, "cfg.vocab_size"), D = golden_i32(g, "cfg.hidden_size");
  const int F = golden_i32(g, "cfg.intermediate_size"), L = golden_i32(g, "cfg.num_layers");
  const int H = golden_i32(g, "cfg.num_heads"), Hkv = golden_i32(g, "cfg.num_kv_heads");
  const int Dh = golden_i32(g, "cfg.head_dim");
  LlamaConfig cfg = llama_config_default(V, D, F, L, H, Hkv);
  cfg.head_dim = Dh;
  cfg.rms_norm_eps = golden_f32(g, "cfg.rms_norm_eps");
  cfg.rope_theta = golden_f32(g, "cfg.rope_theta");
  cfg.rope_scaling = golden_i32(g, "cfg.rope_scaling") ? ROPE_SCALING_LLAMA3 : ROPE_SCALING_NONE;
  cfg.rope_factor = golden_f32(g, "cfg.rope_factor");
  cfg.rope_low_freq_factor = golden_f32(g, "cfg.rope_low_freq_factor");
  cfg.rope_high_freq_factor = golden_f32(g, "cfg.rope_high_freq_factor");
  cfg.rope_original_max_pos = golden_i32(g, "cfg.rope_original_max_pos");
  cfg.tie_word_embeddings = golden_i32(g, "cfg.tie_word_embeddings");
  cfg.attention_bias = golden_i32(g, "cfg.attention_bias");

  LoraConfig lc = lora_config_default();
  lc.r = golden_i32(g, "cfg.lora_r");
  lc.alpha = golden_f32(g, "cfg.lora_alpha");
  lc.dropout = 0.0f;
  lc.target_mask = (1u << LORA_NUM_TARGETS) - 1u;

  char msg[256];
  const char *err = llama_config_validate(&cfg, msg, sizeof msg);
  EXPECT(err == NULL, "%s: config rejected: %s", file, err ? err : "");
  const char *lerr = lora_config_validate(&lc, msg, sizeof msg);
  EXPECT(lerr == NULL, "%s: LoRA config rejected: %s", file, lerr ? lerr : "");
  if (err || lerr) tv_die("%s: invalid model in the golden file", file);

  const GoldenTensor *ids = golden_get(g, "input_ids");
  TV_CHECK(ids->dtype == GOLDEN_I32 && ids->ndim == 2, "input_ids must be int32 [B, T]");
  const int B = (int)ids->dims[0], T = (int)ids->dims[1];
  const size_t N = (size_t)B * T;
  int64_t bt[2] = {B, T};
  const GoldenTensor *labels = golden_get_shaped(g, "labels", GOLDEN_I32, 2, bt);
  printf("%s: V %d D %d F %d L %d H %d Hkv %d Dh %d rope %s tied %d bias %d r %d alpha %g, "
         "B %d T %d\n",
         file, V, D, F, L, H, Hkv, Dh, cfg.rope_scaling ? "llama3" : "plain",
         cfg.tie_word_embeddings, cfg.attention_bias, lc.r, lc.alpha, B, T);

  /* HF shift: position t predicts labels[t + 1]; the last position and -100 are ignored. */
  int32_t *targets = tv_malloc(N * sizeof *targets);
  int n_targets = 0;
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      int32_t lab = t + 1 < T ? labels->i32[(size_t)b * T + t + 1] : -100;
      targets[(size_t)b * T + t] = lab == -100 ? -1 : lab;
      n_targets += lab != -100;
    }
  TV_CHECK(n_targets > 0, "%s: no targets", file);

  Stage *s = stage_create(be, &cfg, &lc, 0, L, B, T);
  EXPECT(stage_is_first(s) && stage_is_last(s), "%s: one stage must be first and last", file);

  /* ---- frozen weights ---- */
  StageWeights *w = stage_weights(s);
  char name[160];
  golden_put(be, w->embed, g, "model.embed_tokens.weight", 2, V, D);
  golden_put(be, w->final_norm, g, "model.norm.weight", 1, D, 0);
  if (cfg.tie_word_embeddings) {
    EXPECT(golden_find(g, "lm_head.weight") == NULL, "%s: tied file has lm_head", file);
    EXPECT(w->lm_head == w->embed, "%s: tied model: lm_head must be the embedding", file);
    if (w->lm_head != w->embed) golden_put(be, w->lm_head, g, "model.embed_tokens.weight", 2, V, D);
  } else {
    EXPECT(w->lm_head != w->embed, "%s: untied model shares lm_head and embedding", file);
    golden_put(be, w->lm_head, g, "lm_head.weight", 2, V, D);
  }
  const int qd = H * Dh, kvd = Hkv * Dh;
  for (int l = 0; l < L; l++) {
    LayerWeights *lw = &w->layers[l];
#define LAYER_PUT(dst, suffix, ndim, d0, d1)                      \
  do {                                                            \
    snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix); \
    golden_put(be, dst, g, name, ndim, d0, d1);                          \
  } while (0)
    LAYER_PUT(lw->attn_norm, "input_layernorm.weight", 1, D, 0);
    LAYER_PUT(lw->mlp_norm, "post_attention_layernorm.weight", 1, D, 0);
    LAYER_PUT(lw->wq, "self_attn.q_proj.weight", 2, qd, D);
    LAYER_PUT(lw->wk, "self_attn.k_proj.weight", 2, kvd, D);
    LAYER_PUT(lw->wv, "self_attn.v_proj.weight", 2, kvd, D);
    LAYER_PUT(lw->wo, "self_attn.o_proj.weight", 2, D, qd);
    LAYER_PUT(lw->w_gate, "mlp.gate_proj.weight", 2, F, D);
    LAYER_PUT(lw->w_up, "mlp.up_proj.weight", 2, F, D);
    LAYER_PUT(lw->w_down, "mlp.down_proj.weight", 2, D, F);
    if (cfg.attention_bias) {
      EXPECT(lw->bq && lw->bk && lw->bv, "%s: layer %d has no bias storage", file, l);
      LAYER_PUT(lw->bq, "self_attn.q_proj.bias", 1, qd, 0);
      LAYER_PUT(lw->bk, "self_attn.k_proj.bias", 1, kvd, 0);
      LAYER_PUT(lw->bv, "self_attn.v_proj.bias", 1, kvd, 0);
    } else {
      EXPECT(!lw->bq && !lw->bk && !lw->bv, "%s: layer %d has biases without attention_bias",
             file, l);
    }
#undef LAYER_PUT
  }

  /* ---- LoRA A and B (B non-zero, so every gradient is non-trivial) ---- */
  const int t_in[LORA_NUM_TARGETS] = {D, D, D, qd, D, D, F};
  const int t_out[LORA_NUM_TARGETS] = {qd, kvd, kvd, D, F, F, D};
  LoraSet *ls = stage_lora(s);
  for (int l = 0; l < L; l++)
    for (int t = 0; t < LORA_NUM_TARGETS; t++) {
      LoraAdapter *ad = &ls->layers[l][t];
      EXPECT(ad->in == t_in[t] && ad->out == t_out[t],
             "%s: layer %d %s adapter is %d -> %d, expected %d -> %d", file, l,
             golden_target_path[t], ad->in, ad->out, t_in[t], t_out[t]);
      snprintf(name, sizeof name, "model.layers.%d.%s.lora_A.weight", l, golden_target_path[t]);
      golden_put(be, ad->A, g, name, 2, lc.r, t_in[t]);
      snprintf(name, sizeof name, "model.layers.%d.%s.lora_B.weight", l, golden_target_path[t]);
      golden_put(be, ad->B, g, name, 2, t_out[t], lc.r);
    }

  out->cfg = cfg;
  out->lora = lc;
  out->B = B;
  out->T = T;
  out->tokens = ids->i32;
  out->targets = targets;
  out->n_targets = n_targets;
  return s;
}
