/* AdamW with decoupled weight decay, linear warmup + cosine schedule and global grad-norm
 * clipping, exactly as SPEC section 4 (Hugging Face Trainer's arithmetic). */
#ifndef TV_OPTIM_H
#define TV_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "bounds.h"
#include "lora.h"

typedef struct {
  float lr;            /* peak learning rate */
  double beta1, beta2;  /* double: 1 - beta2 of a float 0.999 is 1.3e-5 relative off */
  float eps;
  float weight_decay;  /* decoupled */
  double warmup_ratio; /* W = ceil(warmup_ratio * T); double as in HF, so 0.1 * 10 is 1 */
  float max_grad_norm; /* 0 disables clipping */
  int64_t total_steps; /* T */
} OptimConfig;

/* Each hyper-parameter's range: the one source of optim_config_validate and of the run
 * config's optim.* keys. */
#define OPTIM_LR_BOUNDS REAL_BOUNDS(0, 0, -1, 0)
#define OPTIM_WEIGHT_DECAY_BOUNDS REAL_BOUNDS(0, 0, -1, 0)
#define OPTIM_WARMUP_RATIO_BOUNDS REAL_BOUNDS(0, 0, 1, 0)
#define OPTIM_MAX_GRAD_NORM_BOUNDS REAL_BOUNDS(0, 0, -1, 0)
#define OPTIM_BETA_BOUNDS REAL_BOUNDS(0, 0, 1, 1)
#define OPTIM_EPSILON_BOUNDS REAL_BOUNDS(0, 1, -1, 0)

OptimConfig optim_config_default(int64_t total_steps); /* SPEC alignment defaults */
/* NULL when valid, else buf = "<key> must be <range> (got <value>)" naming the config key. */
const char *optim_config_validate(const OptimConfig *c, char *buf, size_t buflen);

/* Learning rate at 0-based optimizer step t. */
double lr_at_step(const OptimConfig *c, int64_t t);

/* min(1, clip / (sqrt(total_sq) + 1e-6)), or 1 when clipping is off. */
float optim_clip_scale(const OptimConfig *c, double total_sq);

/* The scalars of a block's k-th update (1-based, its own count) at 0-based step t: 1 - beta
 * and the bias corrections are worked out in double and rounded once. */
AdamwScalars optim_adamw_scalars(const OptimConfig *c, int64_t t, int64_t k, float grad_scale);

/* One AdamW update of one block: the single path of LoRA and full-parameter training. */
void optim_adamw_block(Backend *be, const OptimConfig *c, const AdamwBlock *b, int64_t t,
                       int64_t k, float grad_scale);

/* One AdamW update of LoRA's trainable set (lora.h) at step t with gradients multiplied by grad_scale;
 * everything else is not touched (no decay, no moments, update count unchanged). */
void optim_step(Backend *be, const OptimConfig *c, LoraSet *s, const unsigned *train, int64_t t,
                float grad_scale);

#endif
