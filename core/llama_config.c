/* Llama configuration defaults and the shape rules every reader of a model must enforce. */
#include "llama_config.h"

#include <math.h>
#include <stdio.h>

LlamaConfig llama_config_default(int vocab, int D, int F, int L, int H, int Hkv) {
  return (LlamaConfig){.vocab_size = vocab,
                       .hidden_size = D,
                       .intermediate_size = F,
                       .num_layers = L,
                       .num_heads = H,
                       .num_kv_heads = Hkv,
                       .head_dim = H > 0 ? D / H : 0,
                       .rms_norm_eps = 1e-5f,
                       .rope_theta = 10000.0f,
                       .rope_scaling = ROPE_SCALING_NONE,
                       .rope_factor = 1.0f,
                       .rope_low_freq_factor = 1.0f,
                       .rope_high_freq_factor = 4.0f,
                       .rope_original_max_pos = 8192};
}

#define REJECT(...) return (snprintf(buf, buflen, __VA_ARGS__), buf)

const char *llama_config_validate(const LlamaConfig *c, char *buf, size_t buflen) {
  /* Upper bounds keep every size product far from overflow and catch absurd files. */
  if (c->vocab_size < 2 || c->vocab_size > (1 << 24))
    REJECT("vocab_size %d is out of range [2, 16777216]", c->vocab_size);
  if (c->hidden_size < 1 || c->hidden_size > (1 << 17))
    REJECT("hidden_size %d is out of range [1, 131072]", c->hidden_size);
  if (c->intermediate_size < 1 || c->intermediate_size > (1 << 19))
    REJECT("intermediate_size %d is out of range [1, 524288]", c->intermediate_size);
  if (c->num_layers < 1 || c->num_layers > 1024)
    REJECT("num_hidden_layers %d is out of range [1, 1024]", c->num_layers);
  if (c->num_heads < 1 || c->num_heads > 4096)
    REJECT("num_attention_heads %d is out of range [1, 4096]", c->num_heads);
  if (c->num_kv_heads < 1 || c->num_kv_heads > c->num_heads)
    REJECT("num_key_value_heads %d must be in [1, num_attention_heads %d]", c->num_kv_heads,
           c->num_heads);
  if (c->num_heads % c->num_kv_heads)
    REJECT("num_key_value_heads %d does not divide num_attention_heads %d", c->num_kv_heads,
           c->num_heads);
  if (c->head_dim < 2 || c->head_dim > 4096 || c->head_dim % 2)
    REJECT("head_dim %d must be even and in [2, 4096] (hidden_size %d, num_attention_heads %d)",
           c->head_dim, c->hidden_size, c->num_heads);
  if ((long long)c->num_heads * c->head_dim > (1 << 18))
    REJECT("num_attention_heads * head_dim = %lld is too large",
           (long long)c->num_heads * c->head_dim);
  if (!(c->rms_norm_eps > 0) || !isfinite(c->rms_norm_eps))
    REJECT("rms_norm_eps must be a positive number (got %g)", c->rms_norm_eps);
  if (!(c->rope_theta > 1) || !isfinite(c->rope_theta))
    REJECT("rope_theta must be a number > 1 (got %g)", c->rope_theta);
  if (c->rope_scaling == ROPE_SCALING_LLAMA3) {
    if (!(c->rope_factor >= 1) || !isfinite(c->rope_factor))
      REJECT("rope_scaling.factor must be >= 1 (got %g)", c->rope_factor);
    if (!(c->rope_low_freq_factor > 0) || !(c->rope_high_freq_factor > c->rope_low_freq_factor))
      REJECT("rope_scaling needs 0 < low_freq_factor (%g) < high_freq_factor (%g)",
             c->rope_low_freq_factor, c->rope_high_freq_factor);
    if (c->rope_original_max_pos < 1)
      REJECT("rope_scaling.original_max_position_embeddings must be >= 1 (got %d)",
             c->rope_original_max_pos);
  } else if (c->rope_scaling != ROPE_SCALING_NONE) {
    REJECT("rope_scaling type %d is not supported (none or llama3)", (int)c->rope_scaling);
  }
  return NULL;
}

/* inv_freq_i = theta^(-2i/Dh), then the llama3 rule: long wavelengths are slowed by
 * `factor`, short ones kept, and the band between is interpolated smoothly. */
double llama_rope_inv_freq(const LlamaConfig *c, int i) {
  double f = pow((double)c->rope_theta, -2.0 * i / c->head_dim);
  if (c->rope_scaling != ROPE_SCALING_LLAMA3) return f;
  double old_ctx = c->rope_original_max_pos;
  double low_wavelen = old_ctx / c->rope_low_freq_factor;
  double high_wavelen = old_ctx / c->rope_high_freq_factor;
  double wavelen = 2.0 * 3.14159265358979323846 / f;
  if (wavelen < high_wavelen) return f;
  if (wavelen > low_wavelen) return f / c->rope_factor;
  double smooth = (old_ctx / wavelen - c->rope_low_freq_factor) /
                  (c->rope_high_freq_factor - c->rope_low_freq_factor);
  return (1.0 - smooth) * f / c->rope_factor + smooth * f;
}
