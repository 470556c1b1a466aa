/* Finite-difference check of a whole model's gradients: every LoRA tensor of a 2-layer GQA
 * model, the gradient a stage hands to the stage below (input gradient), and the recorded
 * dLoss/da_l (via the perturbation hook, which adds to a_l exactly).
 * The model runs in float32, so each check is a directional derivative along the gradient
 * itself with a step sized to move the loss by ~1e-3 relative: float32 rounding of the loss
 * (~1e-7 relative) then contributes ~1e-4 and curvature ~1e-3, well inside the 1e-2
 * tolerance, while a wrong backward (missing term, wrong scale) is off by far more. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lora.h"
#include "model_fixture.h"
#include "stage_internal.h"
#include "test_util.h"

static double dot(const float *a, const float *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
  return s;
}

/* Directional check of LoRA gradients, one (layer, target, A|B) block at a time. */
static void check_lora_blocks(Fixture *f, const char *label) {
  size_t n = fixture_lora_numel(f);
  float *theta = tv_malloc(n * sizeof(float)), *grad = tv_malloc(n * sizeof(float));
  float *probe = tv_malloc(n * sizeof(float));
  fixture_get_lora_params(f, theta);
  fixture_zero_grads(f);
  double loss = fixture_pass(f, NULL, NULL, NULL);
  fixture_get_lora_grads(f, grad);
  LoraSet *ls = stage_lora(f->stage);
  double worst = 0;
  for (int i = 0; i < ls->l1 - ls->l0; i++)
    for (int t = 0; t < LORA_NUM_TARGETS; t++) {
      LoraAdapter *a = &ls->layers[i][t];
      if (!a->in) continue;
      for (int which = 0; which < 2; which++) {
        float *p = which ? a->B : a->A;
        size_t off = (size_t)(p - ls->params), len = which ? (size_t)a->out * ls->cfg.r
                                                            : (size_t)ls->cfg.r * a->in;
        double gnorm = sqrt(dot(grad + off, grad + off, len));
        EXPECT(gnorm > 0, "%s layer %d %s %s gradient is zero", label, ls->l0 + i,
               lora_target_name(t), which ? "B" : "A");
        if (gnorm == 0) continue;
        double eps = 1e-3 * fabs(loss) / gnorm;
        double lp, lm;
        for (int sign = 1; sign >= -1; sign -= 2) {
          memcpy(probe, theta, n * sizeof(float));
          for (size_t k = 0; k < len; k++) probe[off + k] += (float)(sign * eps * grad[off + k] / gnorm);
          fixture_set_lora_params(f, probe);
          double l = fixture_forward_only(f, NULL);
          if (sign > 0) lp = l; else lm = l;
        }
        double fd = (lp - lm) / (2 * eps);
        double rel = fabs(fd - gnorm) / gnorm;
        if (rel > worst) worst = rel;
        char what[128];
        snprintf(what, sizeof what, "%s layer %d %s.lora_%s", label, ls->l0 + i,
                 lora_target_name(t), which ? "B" : "A");
        EXPECT_CLOSE(fd, gnorm, 1e-2, 0, what);
      }
    }
  fixture_set_lora_params(f, theta);
  printf("%s: worst relative error of LoRA directional derivatives %.2e\n", label, worst);
  free(theta);
  free(grad);
  free(probe);
}

/* dLoss/da_l recorded by backward against the loss change from perturbing a_l. */
static void check_grad_a(Fixture *f, const char *label) {
  int nl = stage_end_layer(f->stage) - stage_first_layer(f->stage);
  size_t nd = (size_t)f->B * f->T * f->cfg.hidden_size;
  float **g = tv_malloc(nl * sizeof(float *));
  for (int i = 0; i < nl; i++) {
    g[i] = f->be->alloc(f->be, nd * sizeof(float));
    f->layer_plans[i].record_grad_a = g[i];
  }
  double loss = fixture_pass(f, NULL, NULL, NULL);
  float *e = f->be->alloc(f->be, nd * sizeof(float));
  for (int i = 0; i < nl; i++) {
    f->layer_plans[i].record_grad_a = NULL;
  }
  for (int i = 0; i < nl; i++) {
    double gnorm = sqrt(dot(g[i], g[i], nd));
    double eps = 1e-3 * fabs(loss) / gnorm, l[2];
    for (int s = 0; s < 2; s++) {
      for (size_t k = 0; k < nd; k++) e[k] = (float)((s ? -eps : eps) * g[i][k] / gnorm);
      f->layer_plans[i].perturb = e;
      l[s] = fixture_forward_only(f, NULL);
      f->layer_plans[i].perturb = NULL;
    }
    char what[64];
    snprintf(what, sizeof what, "%s dLoss/da_%d", label, stage_first_layer(f->stage) + i);
    EXPECT_CLOSE((l[0] - l[1]) / (2 * eps), gnorm, 1e-2, 0, what);
  }
  for (int i = 0; i < nl; i++) f->be->free(f->be, g[i]);
  f->be->free(f->be, e);
  free(g);
}

/* A middle stage [1, 3) of a 3-layer model: the gradient of its input hidden state. */
static void check_input_grad(void) {
  LlamaConfig cfg = llama_config_default(41, 24, 40, 3, 4, 2);
  LoraConfig lc = lora_config_default();
  lc.r = 3, lc.alpha = 6, lc.dropout = 0;
  Fixture f;
  fixture_init(&f, &cfg, &lc, 1, 3, 2, 6, 11);
  size_t nd = (size_t)f.B * f.T * cfg.hidden_size;
  float *x = f.be->alloc(f.be, nd * sizeof(float)), *probe = f.be->alloc(f.be, nd * sizeof(float));
  fill_random_normal(x, nd, 5, 1.0f);
  f.x_in = x;
  float *dx = NULL;
  double loss = fixture_pass(&f, x, NULL, &dx);
  EXPECT(dx != NULL, "a middle stage must return the gradient of its input");
  if (dx) {
    float *d = tv_malloc(nd * sizeof(float));
    memcpy(d, dx, nd * sizeof(float));
    double gnorm = sqrt(dot(d, d, nd)), eps = 1e-3 * fabs(loss) / gnorm, l[2];
    for (int s = 0; s < 2; s++) {
      for (size_t k = 0; k < nd; k++) probe[k] = x[k] + (float)((s ? -eps : eps) * d[k] / gnorm);
      l[s] = fixture_forward_only(&f, probe);
    }
    EXPECT_CLOSE((l[0] - l[1]) / (2 * eps), gnorm, 1e-2, 0, "input gradient of stage [1,3)");
    /* and along a random direction, which exercises every component, not only large ones */
    float *v = tv_malloc(nd * sizeof(float));
    fill_random_normal(v, nd, 77, 1.0f);
    double vn = sqrt(dot(v, v, nd)), want = dot(d, v, nd) / vn;
    eps = 1e-3 * fabs(loss) / gnorm;
    for (int s = 0; s < 2; s++) {
      for (size_t k = 0; k < nd; k++) probe[k] = x[k] + (float)((s ? -eps : eps) * v[k] / vn);
      l[s] = fixture_forward_only(&f, probe);
    }
    EXPECT_CLOSE((l[0] - l[1]) / (2 * eps), want, 3e-2, 3e-3 * gnorm,
                 "input gradient along a random direction");
    free(v);
    free(d);
  }
  check_lora_blocks(&f, "stage [1,3)");
  f.be->free(f.be, x);
  f.be->free(f.be, probe);
  fixture_free(&f);
}

typedef struct {
  const char *name;
  float *p;
  size_t n;
} WeightBlock;

/* Full-parameter training: directional derivative along the gradient of every base weight
 * block (embedding, head, norms, each projection of each layer). */
static void check_base_grads(Fixture *f, const char *label) {
  Stage *s = f->stage;
  stage_enable_full_training(s);
  stage_zero_weight_grads(s);
  f->plan.train_base = 1;
  double loss = fixture_pass(f, NULL, NULL, NULL);
  f->plan.train_base = 0;
  size_t total = s->weight_bytes / sizeof(float);
  float *grad = tv_malloc(total * sizeof(float)), *saved = tv_malloc(total * sizeof(float));
  memcpy(grad, s->weight_grads, total * sizeof(float));
  memcpy(saved, s->weight_arena, total * sizeof(float));
  StageWeights *w = stage_weights(s);
  const LlamaConfig *c = &f->cfg;
  size_t D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
  size_t HD = (size_t)c->num_heads * c->head_dim, KD = (size_t)c->num_kv_heads * c->head_dim;
  WeightBlock blocks[64];
  int nb = 0;
  blocks[nb++] = (WeightBlock){.name = "embed", .p = w->embed, .n = V * D};
  if (w->lm_head != w->embed)
    blocks[nb++] = (WeightBlock){.name = "lm_head", .p = w->lm_head, .n = V * D};
  blocks[nb++] = (WeightBlock){.name = "final_norm", .p = w->final_norm, .n = D};
  for (int l = 0; l < c->num_layers && nb < 60; l++) {
    LayerWeights *lw = &w->layers[l];
    blocks[nb++] = (WeightBlock){.name = "attn_norm", .p = lw->attn_norm, .n = D};
    blocks[nb++] = (WeightBlock){.name = "wq", .p = lw->wq, .n = HD * D};
    blocks[nb++] = (WeightBlock){.name = "wk", .p = lw->wk, .n = KD * D};
    blocks[nb++] = (WeightBlock){.name = "wv", .p = lw->wv, .n = KD * D};
    blocks[nb++] = (WeightBlock){.name = "wo", .p = lw->wo, .n = D * HD};
    blocks[nb++] = (WeightBlock){.name = "mlp_norm", .p = lw->mlp_norm, .n = D};
    blocks[nb++] = (WeightBlock){.name = "w_gate", .p = lw->w_gate, .n = F * D};
    blocks[nb++] = (WeightBlock){.name = "w_up", .p = lw->w_up, .n = F * D};
    blocks[nb++] = (WeightBlock){.name = "w_down", .p = lw->w_down, .n = D * F};
  }
  double worst = 0;
  for (int b = 0; b < nb; b++) {
    size_t off = (size_t)(blocks[b].p - s->weight_arena), n = blocks[b].n;
    double gnorm = sqrt(dot(grad + off, grad + off, n));
    EXPECT(gnorm > 0, "%s %s: zero gradient", label, blocks[b].name);
    if (gnorm == 0) continue;
    double eps = 1e-3 * fabs(loss) / gnorm, l2[2];
    for (int sg = 0; sg < 2; sg++) {
      memcpy(s->weight_arena, saved, total * sizeof(float));
      for (size_t k = 0; k < n; k++) s->weight_arena[off + k] += (float)((sg ? -eps : eps) * grad[off + k] / gnorm);
      l2[sg] = fixture_forward_only(f, NULL);
    }
    double fd = (l2[0] - l2[1]) / (2 * eps), rel = fabs(fd - gnorm) / gnorm;
    if (rel > worst) worst = rel;
    char what[96];
    snprintf(what, sizeof what, "%s base weight %s (block %d)", label, blocks[b].name, b);
    EXPECT_CLOSE(fd, gnorm, 1e-2, 0, what);
  }
  memcpy(s->weight_arena, saved, total * sizeof(float));
  printf("%s: worst relative error of base-weight directional derivatives %.2e\n", label, worst);
  free(grad);
  free(saved);
}

int main(void) {
  /* Whole 2-layer model with GQA (4 query heads sharing 2 kv heads), untied head. */
  LlamaConfig cfg = llama_config_default(37, 32, 48, 2, 4, 2);
  LoraConfig lc = lora_config_default();
  lc.r = 4, lc.alpha = 8, lc.dropout = 0;
  Fixture f;
  fixture_init(&f, &cfg, &lc, 0, 2, 2, 7, 3);
  check_lora_blocks(&f, "2-layer GQA");
  check_grad_a(&f, "2-layer GQA");
  check_base_grads(&f, "2-layer GQA");
  fixture_free(&f);

  /* Tied embeddings, attention bias, one kv head, head_dim != D / H, and dropout on:
   * the loss is a fixed function for a fixed pass_seed, so FD still applies. */
  cfg = llama_config_default(29, 24, 36, 2, 3, 1);
  cfg.head_dim = 10;
  cfg.tie_word_embeddings = 1;
  cfg.attention_bias = 1;
  lc.dropout = 0.2f;
  fixture_init(&f, &cfg, &lc, 0, 2, 3, 5, 9);
  check_lora_blocks(&f, "tied+bias+dropout");
  check_grad_a(&f, "tied+bias+dropout");
  fixture_free(&f);
  /* full training: tied embeddings (head and embedding gradients meet), dropout on */
  cfg.attention_bias = 0;
  fixture_init(&f, &cfg, &lc, 0, 2, 3, 5, 19);
  check_base_grads(&f, "tied+dropout");
  fixture_free(&f);

  check_input_grad();
  return tv_test_report("test_model_gradcheck");
}
