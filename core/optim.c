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
  const struct {
    const char *key;
    double value;
    RealBounds bounds;
  } checks[] = {
      {.key = "lr", .value = c->lr, .bounds = OPTIM_LR_BOUNDS},
      {.key = "weight_decay", .value = c->weight_decay, .bounds = OPTIM_WEIGHT_DECAY_BOUNDS},
      {.key = "warmup_ratio", .value = c->warmup_ratio, .bounds = OPTIM_WARMUP_RATIO_BOUNDS},
      {.key = "max_grad_norm", .value = c->max_grad_norm, .bounds = OPTIM_MAX_GRAD_NORM_BOUNDS},
      {.key = "adam_beta1", .value = c->beta1, .bounds = OPTIM_BETA_BOUNDS},
      {.key = "adam_beta2", .value = c->beta2, .bounds = OPTIM_BETA_BOUNDS},
      {.key = "adam_epsilon", .value = c->eps, .bounds = OPTIM_EPSILON_BOUNDS},
  };
  for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++)
    if (!real_bounds_hold(&checks[i].bounds, checks[i].value)) {
      char range[48];
      real_bounds_text(&checks[i].bounds, range, sizeof range);
      snprintf(buf, buflen, "%s must be %s (got %g)", checks[i].key, range, checks[i].value);
      return buf;
    }
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
