/* AdamW, the warmup + cosine schedule and global-norm clipping over a LoRA set. */
#include "optim.h"

#include <math.h>
#include <stdio.h>

#include "check.h"

OptimConfig optim_config_default(int64_t total_steps) {
  return (OptimConfig){.lr = 1e-3f,
                       .beta1 = 0.9,
                       .beta2 = 0.999,
                       .eps = 1e-8f,
                       .weight_decay = 0.1f,
                       .warmup_ratio = 0.1,
                       .max_grad_norm = 1.0f,
                       .total_steps = total_steps};
}

const char *optim_config_validate(const OptimConfig *c, char *buf, size_t buflen) {
  if (!(c->lr >= 0) || !isfinite(c->lr))
    return snprintf(buf, buflen, "lr must be a finite number >= 0 (got %g)", c->lr), buf;
  if (!(c->beta1 >= 0 && c->beta1 < 1))
    return snprintf(buf, buflen, "adam_beta1 must be in [0, 1) (got %g)", c->beta1), buf;
  if (!(c->beta2 >= 0 && c->beta2 < 1))
    return snprintf(buf, buflen, "adam_beta2 must be in [0, 1) (got %g)", c->beta2), buf;
  if (!(c->eps > 0)) return snprintf(buf, buflen, "adam_epsilon must be > 0 (got %g)", c->eps), buf;
  if (!(c->weight_decay >= 0) || !isfinite(c->weight_decay))
    return snprintf(buf, buflen, "weight_decay must be >= 0 (got %g)", c->weight_decay), buf;
  if (!(c->warmup_ratio >= 0 && c->warmup_ratio <= 1))
    return snprintf(buf, buflen, "warmup_ratio must be in [0, 1] (got %g)", c->warmup_ratio), buf;
  if (isnan(c->max_grad_norm))
    return snprintf(buf, buflen, "max_grad_norm must be a number"), buf;
  if (c->total_steps < 1)
    return snprintf(buf, buflen, "total steps must be >= 1 (got %lld)", (long long)c->total_steps),
           buf;
  return NULL;
}

double lr_at_step(const OptimConfig *c, int64_t t) {
  int64_t T = c->total_steps;
  int64_t W = (int64_t)ceil(c->warmup_ratio * (double)T);
  if (t < W) return (double)c->lr * (double)t / (double)(W > 1 ? W : 1);
  double progress = (double)(t - W) / (double)(T - W > 1 ? T - W : 1);
  double f = 0.5 * (1.0 + cos(3.14159265358979323846 * progress));
  return (double)c->lr * (f > 0 ? f : 0);
}

float optim_clip_scale(const OptimConfig *c, double total_sq) {
  if (!(c->max_grad_norm > 0)) return 1.0f;
  double scale = c->max_grad_norm / (sqrt(total_sq) + 1e-6);
  return scale < 1.0 ? (float)scale : 1.0f;
}

AdamwScalars optim_adamw_scalars(const OptimConfig *c, int64_t t, int64_t k, float grad_scale) {
  return (AdamwScalars){.lr = (float)lr_at_step(c, t),
                        .weight_decay = c->weight_decay,
                        .eps = c->eps,
                        .beta1 = (float)c->beta1,
                        .beta2 = (float)c->beta2,
                        .one_minus_beta1 = (float)(1.0 - c->beta1),
                        .one_minus_beta2 = (float)(1.0 - c->beta2),
                        .bias_correction1 = (float)(1.0 - pow(c->beta1, (double)k)),
                        .bias_correction2 = (float)(1.0 - pow(c->beta2, (double)k)),
                        .grad_scale = grad_scale};
}

void optim_adamw_block(Backend *be, const OptimConfig *c, const AdamwBlock *b, int64_t t,
                       int64_t k, float grad_scale) {
  AdamwScalars scalars = optim_adamw_scalars(c, t, k, grad_scale);
  be->adamw(be, b, &scalars);
}

void optim_step(Backend *be, const OptimConfig *c, LoraSet *s, const unsigned *train, int64_t t,
                float grad_scale) {
  for (int i = 0; i < s->l1 - s->l0; i++)
    for (int tg = 0; tg < LORA_NUM_TARGETS; tg++) {
      LoraAdapter *a = &s->layers[i][tg];
      if (!a->in || !lora_is_trained(train, i, tg)) continue;
      /* A and B of an adapter are adjacent in every arena, so the adapter is one block. */
      AdamwBlock block = {
          .params = a->A, .grads = a->dA, .m = a->mA, .v = a->vA, .n = lora_adapter_numel(s, a)};
      optim_adamw_block(be, c, &block, t, ++s->steps[i][tg], grad_scale);
    }
}
