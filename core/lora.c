/* LoRA: adapter storage and initialisation, the adapter's forward / backward terms inside a
 * projection (through the backend's GEMMs), the trainable set's gradients and the merge. */
#include "lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rng.h"

static const char *const target_names[LORA_NUM_TARGETS] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

const char *lora_target_name(LoraTarget t) { return target_names[t]; }
const char *lora_target_parent(LoraTarget t) { return t <= LORA_O ? "self_attn" : "mlp"; }

LoraConfig lora_config_default(void) {
  return (LoraConfig){.r = 8, .alpha = 1.0f, .dropout = 0.1f, .target_mask = LORA_ALL_TARGETS};
}

const char *lora_config_validate(const LoraConfig *c, char *buf, size_t buflen) {
  if (c->r < 1) return snprintf(buf, buflen, "lora.r must be >= 1 (got %d)", c->r), buf;
  if (c->r > 65536) return snprintf(buf, buflen, "lora.r %d is absurdly large", c->r), buf;
  if (!isfinite(c->alpha) || c->alpha <= 0)
    return snprintf(buf, buflen, "lora.alpha must be a positive number (got %g)", c->alpha), buf;
  if (!(c->dropout >= 0 && c->dropout < 1))
    return snprintf(buf, buflen, "lora.dropout must be in [0, 1) (got %g)", c->dropout), buf;
  if (c->target_mask == 0 || c->target_mask >> LORA_NUM_TARGETS)
    return snprintf(buf, buflen, "lora.target_modules must name at least one of the seven "
                                 "projections and nothing else"), buf;
  return NULL;
}

void lora_target_shape(LoraTarget t, const LlamaConfig *model, int *in, int *out) {
  int D = model->hidden_size, F = model->intermediate_size;
  int H = model->num_heads, Hkv = model->num_kv_heads, Dh = model->head_dim;
  switch (t) {
    case LORA_Q: *in = D; *out = H * Dh; break;
    case LORA_K:
    case LORA_V: *in = D; *out = Hkv * Dh; break;
    case LORA_O: *in = H * Dh; *out = D; break;
    case LORA_GATE:
    case LORA_UP: *in = D; *out = F; break;
    default: *in = F; *out = D; break;
  }
}

LoraSet *lora_set_create(Backend *be, const LoraConfig *cfg, const LlamaConfig *model, int l0,
                         int l1) {
  LoraSet *s = tv_calloc(1, sizeof(LoraSet));
  int nl = l1 - l0, r = cfg->r;
  s->cfg = *cfg;
  s->l0 = l0;
  s->l1 = l1;
  s->layers = tv_calloc(nl > 0 ? (size_t)nl : 1, sizeof(*s->layers));
  s->steps = tv_calloc(nl > 0 ? (size_t)nl : 1, sizeof(*s->steps));
  size_t per_layer = 0;
  for (int t = 0; t < LORA_NUM_TARGETS; t++) {
    if (!(cfg->target_mask & (1u << t))) continue;
    int in, out;
    lora_target_shape(t, model, &in, &out);
    per_layer += (size_t)r * in + (size_t)out * r;
  }
  s->layer_numel = per_layer;
  size_t bytes = (size_t)nl * per_layer * sizeof(float);
  s->params = be->alloc(be, bytes);
  s->grads = be->alloc(be, bytes);
  s->m = be->alloc(be, bytes);
  s->v = be->alloc(be, bytes);
  for (int i = 0; i < nl; i++) {
    size_t off = (size_t)i * per_layer;
    for (int t = 0; t < LORA_NUM_TARGETS; t++) {
      LoraAdapter *a = &s->layers[i][t];
      if (!(cfg->target_mask & (1u << t))) continue;
      lora_target_shape(t, model, &a->in, &a->out);
      size_t na = (size_t)r * a->in, nb = (size_t)a->out * r;
      a->A = s->params + off, a->B = s->params + off + na;
      a->dA = s->grads + off, a->dB = s->grads + off + na;
      a->mA = s->m + off, a->mB = s->m + off + na;
      a->vA = s->v + off, a->vB = s->v + off + na;
      off += na + nb;
    }
  }
  return s;
}

void lora_set_destroy(Backend *be, LoraSet *s) {
  if (!s) return;
  be->free(be, s->params);
  be->free(be, s->grads);
  be->free(be, s->m);
  be->free(be, s->v);
  free(s->layers);
  free(s->steps);
  free(s);
}

void lora_set_init(Backend *be, LoraSet *s, uint64_t seed) {
  int r = s->cfg.r;
  for (int l = s->l0; l < s->l1; l++)
    for (int t = 0; t < LORA_NUM_TARGETS; t++) {
      LoraAdapter *a = &s->layers[l - s->l0][t];
      if (!a->in) continue;
      size_t na = (size_t)r * a->in;
      float *host = tv_malloc(na * sizeof(float));
      /* kaiming_uniform(a = sqrt(5)) on [r, in] has bound 1 / sqrt(in). */
      float bound = 1.0f / sqrtf((float)a->in);
      uint64_t stream = rng_stream_id(RNG_TAG_LORA_INIT, (uint32_t)l, (uint32_t)t, 0);
      for (size_t i = 0; i < na; i++)
        host[i] = (2.0f * rng_uniform_at(seed, stream, i) - 1.0f) * bound;
      be->from_host(be, a->A, host, na * sizeof(float));
      be->zero(be, a->B, (size_t)a->out * r * sizeof(float));
      free(host);
    }
  be->zero(be, s->m, (size_t)(s->l1 - s->l0) * s->layer_numel * sizeof(float));
  be->zero(be, s->v, (size_t)(s->l1 - s->l0) * s->layer_numel * sizeof(float));
  memset(s->steps, 0, (size_t)(s->l1 - s->l0) * sizeof(*s->steps));
}

float *lora_layer_params(LoraSet *s, int l) {
  TV_CHECK(l >= s->l0 && l < s->l1, "layer %d outside LoRA set [%d, %d)", l, s->l0, s->l1);
  return s->params + (size_t)(l - s->l0) * s->layer_numel;
}

float *lora_layer_grads(LoraSet *s, int l) {
  TV_CHECK(l >= s->l0 && l < s->l1, "layer %d outside LoRA set [%d, %d)", l, s->l0, s->l1);
  return s->grads + (size_t)(l - s->l0) * s->layer_numel;
}

LoraAdapter *lora_adapter(const LoraSet *s, int l, LoraTarget t) {
  LoraAdapter *a = &s->layers[l - s->l0][t];
  return a->in ? a : NULL;
}

size_t lora_adapter_numel(const LoraSet *s, const LoraAdapter *a) {
  return (size_t)s->cfg.r * a->in + (size_t)a->out * s->cfg.r;
}

/* ---- the trainable set ---------------------------------------------------------------- */

double lora_layer_grad_sum_squares(Backend *be, const LoraSet *s, int i, unsigned targets) {
  double total = 0;
  for (int t = 0; t < LORA_NUM_TARGETS; t++) {
    const LoraAdapter *a = &s->layers[i][t];
    if (a->in && ((targets >> t) & 1u))
      total += be->sum_squares(be, lora_adapter_numel(s, a), a->dA);
  }
  return total;
}

void lora_layer_grad_sum_squares_acc(Backend *be, const LoraSet *s, int i, unsigned targets,
                                     double *dst) {
  for (int t = 0; t < LORA_NUM_TARGETS; t++) {
    const LoraAdapter *a = &s->layers[i][t];
    if (a->in && ((targets >> t) & 1u)) be->sum_squares_acc(be, lora_adapter_numel(s, a), a->dA, dst);
  }
}

double lora_grad_sum_squares(Backend *be, const LoraSet *s, const unsigned *train) {
  double total = 0;
  for (int i = 0; i < s->l1 - s->l0; i++)
    total += lora_layer_grad_sum_squares(be, s, i, train ? train[i] : LORA_ALL_TARGETS);
  return total;
}

void lora_zero_grads(Backend *be, LoraSet *s, const unsigned *train) {
  for (int i = 0; i < s->l1 - s->l0; i++)
    for (int t = 0; t < LORA_NUM_TARGETS; t++) {
      LoraAdapter *a = &s->layers[i][t];
      if (a->in && lora_is_trained(train, i, t))
        be->zero(be, a->dA, lora_adapter_numel(s, a) * sizeof(float));
    }
}

/* ---- the adapter's term inside a projection ------------------------------------------- */

/* dropout(x) for target t of layer l into the scratch, or x itself when dropout is off. */
static const float *dropped(const LoraPass *p, int l, LoraTarget t, const float *x, int in) {
  float rate = p->set->cfg.dropout;
  if (rate <= 0) return x;
  p->be->dropout(p->be, p->scratch, x, p->N, in, rate, p->pass_seed,
                 rng_stream_id(RNG_TAG_DROPOUT, (uint32_t)l, (uint32_t)t, 0), p->row_offset);
  return p->scratch;
}

static float scaling_of(const LoraSet *s) { return s->cfg.alpha / (float)s->cfg.r; }

void lora_forward(const LoraPass *p, int l, LoraTarget t, const float *x, float *u, float *y) {
  const LoraAdapter *a = lora_adapter(p->set, l, t);
  if (!a) return;
  Backend *be = p->be;
  int N = p->N, r = p->set->cfg.r;
  const float *xd = dropped(p, l, t, x, a->in);
  be->gemm(be, 0, 1, N, r, a->in, 1.0f, xd, a->in, a->A, a->in, 0.0f, u, r);
  be->gemm(be, 0, 1, N, a->out, r, scaling_of(p->set), u, r, a->B, r, 1.0f, y, a->out);
}

void lora_backward(const LoraPass *p, int l, LoraTarget t, const float *dy, const float *x,
                   const float *u, float *dx, int train) {
  LoraAdapter *a = lora_adapter(p->set, l, t);
  if (!a || !(train || dx)) return;
  Backend *be = p->be;
  int N = p->N, r = p->set->cfg.r;
  float scaling = scaling_of(p->set);
  if (train) /* dB[out,r] += scaling dy^T u */
    be->gemm(be, 1, 0, a->out, r, N, scaling, dy, a->out, u, r, 1.0f, a->dB, r);
  /* du[N,r] = scaling dy B */
  be->gemm(be, 0, 0, N, r, a->out, scaling, dy, a->out, a->B, r, 0.0f, p->du, r);
  if (train) { /* dA[r,in] += du^T dropout(x) */
    const float *xd = dropped(p, l, t, x, a->in);
    be->gemm(be, 1, 0, r, a->in, N, 1.0f, p->du, r, xd, a->in, 1.0f, a->dA, a->in);
  }
  if (!dx) return;
  if (p->set->cfg.dropout <= 0) {
    be->gemm(be, 0, 0, N, a->in, r, 1.0f, p->du, r, a->A, a->in, 1.0f, dx, a->in);
  } else { /* the same mask again: dropout is its own adjoint */
    be->gemm(be, 0, 0, N, a->in, r, 1.0f, p->du, r, a->A, a->in, 0.0f, p->scratch, a->in);
    dropped(p, l, t, p->scratch, a->in);
    be->axpy(be, (size_t)N * a->in, 1.0f, p->scratch, dx);
  }
}

/* ---- merge ------------------------------------------------------------------------------ */

void lora_merge(Backend *be, LoraSet *s, int l, LoraTarget t, TvDtype dtype, void *W) {
  LoraAdapter *a = lora_adapter(s, l, t);
  if (!a) return;
  int r = s->cfg.r;
  if (dtype == TV_F32) { /* W[out, in] += scaling * B[out, r] A[r, in] */
    be->gemm(be, 0, 0, a->out, a->in, r, scaling_of(s), a->B, r, a->A, a->in, 1.0f, W, a->in);
  } else {
    /* The f32 product on the device, the sum and its one rounding on the host: a merge runs
     * once per export or generation, so a round trip costs nothing that matters. */
    size_t n = (size_t)a->out * a->in;
    float *delta = be->alloc(be, n * sizeof(float));
    be->gemm(be, 0, 0, a->out, a->in, r, scaling_of(s), a->B, r, a->A, a->in, 0.0f, delta,
             a->in);
    float *host_delta = tv_malloc(n * sizeof(float));
    uint16_t *host_w = tv_malloc(n * sizeof(uint16_t));
    be->to_host(be, host_delta, delta, n * sizeof(float));
    be->to_host(be, host_w, W, n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++)
      host_w[i] = tv_bf16_from_f32(tv_f32_from_bf16(host_w[i]) + host_delta[i]);
    be->from_host(be, W, host_w, n * sizeof(uint16_t));
    be->free(be, delta);
    free(host_delta);
    free(host_w);
  }
  be->zero(be, a->B, (size_t)a->out * r * sizeof(float));
}
