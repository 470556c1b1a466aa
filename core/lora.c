/* LoRA adapter storage and initialisation. The forward/backward terms are applied by the
 * stage (model.c) through the backend's GEMMs; this file owns the memory layout. */
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
  LoraConfig c = {8, 1.0f, 0.1f, (1u << LORA_NUM_TARGETS) - 1};
  return c;
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

void lora_target_shape(LoraTarget t, int D, int F, int H, int Hkv, int Dh, int *in, int *out) {
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

LoraSet *lora_set_create(Backend *be, const LoraConfig *cfg, int l0, int l1, int D, int F, int H,
                         int Hkv, int Dh) {
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
    lora_target_shape(t, D, F, H, Hkv, Dh, &in, &out);
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
      lora_target_shape(t, D, F, H, Hkv, Dh, &a->in, &a->out);
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
