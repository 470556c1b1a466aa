/* bf16 base weights and chunked logits in the Stage, against f32 references built here.
 * A bf16 stage must compute exactly what an f32 stage computes from the same weights rounded
 * to bf16 (widening bf16 is exact, so every GEMM input is equal): same loss, LoRA gradients,
 * recorded dLoss/da_l and KV-cache logits, bit for bit. The LM head in row chunks must give the
 * loss and gradients of the unchunked head up to float rounding.
 * A bf16 merge must be the f32 merge rounded once. (Loading, export and the refusal of full
 * training with bf16 weights: test_export.c.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "decode.h"
#include "lora.h"
#include "model.h"
#include "model_fixture.h"
#include "test_util.h"

enum { B = 2, T = 7 };

typedef struct {
  const char *name;
  void *p;
  size_t n;
} Matrix;

/* Every base matrix of a whole-model stage. */
static int list_matrices(Stage *s, Matrix *m) {
  const LlamaConfig *c = stage_config(s);
  StageWeights *w = stage_weights(s);
  size_t D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
  size_t HD = (size_t)c->num_heads * c->head_dim, KD = (size_t)c->num_kv_heads * c->head_dim;
  int n = 0;
  m[n++] = (Matrix){"embed", w->embed, V * D};
  if (w->lm_head != w->embed) m[n++] = (Matrix){"lm_head", w->lm_head, V * D};
  for (int l = 0; l < c->num_layers; l++) {
    LayerWeights *x = &w->layers[l];
    m[n++] = (Matrix){"wq", x->wq, HD * D};
    m[n++] = (Matrix){"wk", x->wk, KD * D};
    m[n++] = (Matrix){"wv", x->wv, KD * D};
    m[n++] = (Matrix){"wo", x->wo, D * HD};
    m[n++] = (Matrix){"w_gate", x->w_gate, F * D};
    m[n++] = (Matrix){"w_up", x->w_up, F * D};
    m[n++] = (Matrix){"w_down", x->w_down, D * F};
  }
  return n;
}

/* Rounds every matrix of an f32 stage to bf16 values in place, on the host (independently of
 * stage_matrix_from_host: by the shift of tensor.h's round-to-nearest-even). */
static void round_to_bf16(Stage *s) {
  Matrix m[64];
  int n = list_matrices(s, m);
  Backend *be = stage_backend(s);
  for (int i = 0; i < n; i++) {
    float *h = tv_malloc(m[i].n * sizeof(float));
    be->to_host(be, h, m[i].p, m[i].n * sizeof(float));
    for (size_t k = 0; k < m[i].n; k++) h[k] = tv_f32_from_bf16(tv_bf16_from_f32(h[k]));
    be->from_host(be, m[i].p, h, m[i].n * sizeof(float));
    free(h);
  }
}

typedef struct {
  Stage *f32, *bf16;
  Backend *be;
  LlamaConfig cfg;
  int32_t tokens[B * T], targets[B * T];
} Pair;

/* Two stages of one model: bf16, and f32 holding the same values. */
static void pair_init(Pair *p, int tied) {
  p->be = backend_cpu_create(0);
  p->cfg = llama_config_default(61, 32, 80, 3, 4, 2);
  p->cfg.tie_word_embeddings = tied;
  LoraConfig lc = lora_config_default(); /* dropout 0.1: masks must agree too */
  p->f32 = stage_create_typed(p->be, &p->cfg, &lc, 0, 3, B, T, TV_F32);
  p->bf16 = stage_create_typed(p->be, &p->cfg, &lc, 0, 3, B, T, TV_BF16);
  EXPECT(stage_weight_dtype(p->bf16) == TV_BF16 && stage_weight_dtype(p->f32) == TV_F32,
         "stage dtypes");
  stage_init_random_weights(p->f32, 11, 0.3f);
  stage_init_random_weights(p->bf16, 11, 0.3f);
  round_to_bf16(p->f32);
  lora_set_init(p->be, stage_lora(p->f32), 5);
  lora_set_init(p->be, stage_lora(p->bf16), 5);
  for (int i = 0; i < B * T; i++) {
    p->tokens[i] = (int32_t)((i * 13 + 5) % p->cfg.vocab_size);
    p->targets[i] = i % T == 0 ? -1 : (int32_t)((i * 7 + 1) % p->cfg.vocab_size);
  }
}

static void pair_free(Pair *p) {
  stage_destroy(p->f32);
  stage_destroy(p->bf16);
  backend_destroy(p->be);
}

/* Random non-zero LoRA (B too), the same in both stages. */
static void pair_random_lora(Pair *p) {
  LoraSet *a = stage_lora(p->f32), *b = stage_lora(p->bf16);
  size_t n = (size_t)p->cfg.num_layers * a->layer_numel;
  float *h = tv_malloc(n * sizeof(float));
  fill_random_normal(h, n, 77, 0.2f);
  p->be->from_host(p->be, a->params, h, n * sizeof(float));
  p->be->from_host(p->be, b->params, h, n * sizeof(float));
  free(h);
}

typedef struct {
  double loss;
  float *grads;  /* LoRA gradients [layers * layer_numel] */
  float *grad_a; /* dLoss/da_1 [B*T, D] */
} PassResult;

/* Forward + backward with every layer training, layer 1 recording dLoss/da_l. */
static PassResult run_pass(Stage *s, const Pair *p, LayerKeep keep) {
  Backend *be = p->be;
  LoraSet *ls = stage_lora(s);
  size_t n = (size_t)p->cfg.num_layers * ls->layer_numel, nd = (size_t)B * T * p->cfg.hidden_size;
  float *rec = be->alloc(be, nd * sizeof(float));
  LayerPlan lp[3];
  for (int l = 0; l < 3; l++)
    lp[l] = (LayerPlan){.keep_activations = keep, .train_targets = LORA_ALL_TARGETS};
  lp[1].record_grad_a = rec;
  PassPlan plan = {.layers = lp, .backward_stop = 0, .pass_seed = 9};
  MicroBatch mb = {.tokens = p->tokens, .targets = p->targets, .B = B, .T = T,
                   .loss_scale = 1.0f / 12};
  lora_zero_grads(be, ls, NULL);
  PassResult r;
  r.loss = stage_forward(s, &plan, &mb, NULL);
  stage_backward(s, &plan, 0, NULL, NULL);
  r.grads = tv_malloc(n * sizeof(float));
  r.grad_a = tv_malloc(nd * sizeof(float));
  be->to_host(be, r.grads, ls->grads, n * sizeof(float));
  be->to_host(be, r.grad_a, rec, nd * sizeof(float));
  be->free(be, rec);
  return r;
}

/* max |a - b| / max |b| */
static double rel_diff(const float *a, const float *b, size_t n) {
  double d = 0, m = 0;
  for (size_t i = 0; i < n; i++) {
    d = fmax(d, fabs((double)a[i] - b[i]));
    m = fmax(m, fabs((double)b[i]));
  }
  return m > 0 ? d / m : d;
}

/* rtol 0: bit for bit. Otherwise loss and gradients within rtol (relative to the largest). */
static void expect_same(const PassResult *a, const PassResult *b, size_t n, size_t nd,
                        double rtol, const char *what) {
  EXPECT(fabs(a->loss - b->loss) <= rtol * fabs(b->loss), "%s: loss %.17g vs %.17g", what,
         a->loss, b->loss);
  if (rtol == 0) {
    EXPECT(memcmp(a->grads, b->grads, n * sizeof(float)) == 0, "%s: LoRA gradients differ", what);
    EXPECT(memcmp(a->grad_a, b->grad_a, nd * sizeof(float)) == 0, "%s: dLoss/da_1 differs", what);
  } else {
    double g = rel_diff(a->grads, b->grads, n), ga = rel_diff(a->grad_a, b->grad_a, nd);
    EXPECT(g <= rtol && ga <= rtol, "%s: LoRA gradients %.3g, dLoss/da_1 %.3g apart (tol %.1g)",
           what, g, ga, rtol);
  }
}

static void pass_result_free(PassResult *r) {
  free(r->grads);
  free(r->grad_a);
}

/* KV-cache decoding (its LoRA B is zero): logits of both stages bit for bit. */
static void test_decode(Pair *p) {
  float *out[2];
  Stage *st[2] = {p->f32, p->bf16};
  size_t V = p->cfg.vocab_size;
  for (int k = 0; k < 2; k++) {
    Decoder *d = decoder_create(st[k], 2, T, 2 * T);
    int32_t seq[2 * T];
    for (int i = 0; i < 2 * T; i++) seq[i] = i / T;
    decoder_forward(d, 2 * T, seq, p->tokens, NULL);
    int rows[2] = {T - 1, 2 * T - 1};
    out[k] = tv_malloc(2 * V * sizeof(float));
    p->be->to_host(p->be, out[k], decoder_logits(d, rows, 2), 2 * V * sizeof(float));
    decoder_destroy(d);
  }
  EXPECT(memcmp(out[0], out[1], 2 * V * sizeof(float)) == 0,
         "KV-cache logits of the bf16 stage differ from the f32 stage of the same values");
  free(out[0]), free(out[1]);
}

static void test_passes(Pair *p, const char *label) {
  LoraSet *ls = stage_lora(p->f32);
  size_t n = (size_t)p->cfg.num_layers * ls->layer_numel, nd = (size_t)B * T * p->cfg.hidden_size;
  char what[96];
  /* bf16 vs f32 of the same values, both with every row's logits kept and both chunked. */
  for (int chunked = 0; chunked < 2; chunked++) {
    stage_keep_logits(p->f32, !chunked);
    stage_keep_logits(p->bf16, !chunked);
    if (chunked) stage_set_logit_chunk_rows(p->f32, 4), stage_set_logit_chunk_rows(p->bf16, 4);
    PassResult a = run_pass(p->bf16, p, LAYER_KEEP_ALL), b = run_pass(p->f32, p, LAYER_KEEP_ALL);
    snprintf(what, sizeof what, "%s: bf16 vs f32 stage (%s)", label,
             chunked ? "chunks of 4 rows" : "logits kept");
    expect_same(&a, &b, n, nd, 0, what);
    pass_result_free(&a), pass_result_free(&b);
  }
  /* Chunked (4, then 1 row) vs all rows at once on one stage, with recomputed layers. Not bit
   * for bit: OpenBLAS picks its sgemm kernel (and so the order of a dot product) by the
   * number of rows, so a head GEMM of 4 rows rounds differently from one of 14. */
  stage_keep_logits(p->bf16, 1);
  PassResult whole = run_pass(p->bf16, p, LAYER_RECOMPUTE);
  stage_keep_logits(p->bf16, 0);
  const int chunk_rows[3] = {B * T, 4, 1}; /* one chunk of every row: recomputed, bit for bit */
  for (int k = 0; k < 3; k++) {
    int rows = chunk_rows[k];
    stage_set_logit_chunk_rows(p->bf16, rows);
    PassResult c = run_pass(p->bf16, p, LAYER_RECOMPUTE);
    snprintf(what, sizeof what, "%s: chunks of %d rows vs whole", label, rows);
    expect_same(&c, &whole, n, nd, k == 0 ? 0 : 1e-5, what);
    pass_result_free(&c);
  }
  pass_result_free(&whole);
}

/* Merged bf16 = the f32 merge of the same values rounded once to bf16. The two sums may round
 * differently in the last f32 bit, which can move a rounding tie: allow rare one-ulp misses. */
static void test_merge(Pair *p, const char *label) {
  stage_merge_lora(p->f32);
  stage_merge_lora(p->bf16);
  Matrix a[64], b[64];
  int n = list_matrices(p->bf16, a);
  list_matrices(p->f32, b);
  size_t total = 0, exact = 0, far = 0;
  for (int i = 0; i < n; i++) {
    float *x = tv_malloc(a[i].n * sizeof(float)), *y = tv_malloc(a[i].n * sizeof(float));
    stage_matrix_to_host(p->bf16, x, a[i].p, a[i].n);
    p->be->to_host(p->be, y, b[i].p, b[i].n * sizeof(float));
    for (size_t k = 0; k < a[i].n; k++) {
      float want = tv_f32_from_bf16(tv_bf16_from_f32(y[k]));
      total++;
      exact += memcmp(&x[k], &want, sizeof want) == 0;
      far += !(fabsf(x[k] - y[k]) <= ldexpf(fabsf(y[k]), -8));
    }
    free(x), free(y);
  }
  EXPECT(far == 0, "%s: %zu merged bf16 weights are more than half an ulp from the f32 merge",
         label, far);
  EXPECT(exact * 1000 >= total * 999, "%s: only %zu of %zu merged bf16 weights equal the rounded "
         "f32 merge", label, exact, total);
}

int main(void) {
  for (int tied = 0; tied < 2; tied++) {
    Pair p;
    pair_init(&p, tied);
    const char *label = tied ? "tied" : "untied";
    StageMemory m16 = stage_memory(p.bf16), m32 = stage_memory(p.f32);
    /* Norms stay f32: 2 per layer and the final one, 32 wide. */
    size_t norms = (2 * 3 + 1) * 32 * sizeof(float);
    EXPECT(m16.weights - norms == (m32.weights - norms) / 2, "%s: bf16 weights %zu, f32 %zu",
           label, m16.weights, m32.weights);
    test_decode(&p);
    pair_random_lora(&p);
    test_passes(&p, label);
    test_merge(&p, label);
    pair_free(&p);
  }
  return tv_test_report("test_stage_bf16");
}
