/* The Llama-family model's shape and hyper-parameters (config.json's fields that the math
 * needs), their defaults and their rules. Seen by the stage, LoRA and the io readers. */
#ifndef TV_LLAMA_CONFIG_H
#define TV_LLAMA_CONFIG_H

#include <stddef.h>

typedef enum { ROPE_SCALING_NONE = 0, ROPE_SCALING_LLAMA3 = 1 } RopeScalingType;

typedef struct {
  int vocab_size;        /* V */
  int hidden_size;       /* D */
  int intermediate_size; /* F */
  int num_layers;        /* L */
  int num_heads;         /* H */
  int num_kv_heads;      /* Hkv, divides H */
  int head_dim;          /* Dh; H * Dh need not equal D (head_dim in config.json) */
  float rms_norm_eps;
  float rope_theta;
  RopeScalingType rope_scaling;
  float rope_factor;            /* llama3: factor */
  float rope_low_freq_factor;   /* llama3: low_freq_factor */
  float rope_high_freq_factor;  /* llama3: high_freq_factor */
  int rope_original_max_pos;    /* llama3: original_max_position_embeddings */
  int tie_word_embeddings;      /* LM head shares the embedding matrix */
  int attention_bias;           /* q, k, v projections carry biases (Qwen2) */
} LlamaConfig;

/* Fills defaults for a model of the given shape (theta 10000, eps 1e-5, untied, no bias). */
LlamaConfig llama_config_default(int vocab, int D, int F, int L, int H, int Hkv);

/* Checks every shape rule. Returns NULL when valid, else a static message naming the
 * field (e.g. "hidden_size 510 is not divisible by num_attention_heads 8"), written into buf. */
const char *llama_config_validate(const LlamaConfig *c, char *buf, size_t buflen);

/* Rotary frequency of pair i (0 <= i < head_dim / 2): theta^(-2i/Dh), with the llama3
 * scaling rule when the config asks for it. Stages and the KV-cache decoder build their
 * cos / sin tables from it (angle = position * frequency, in double). */
double llama_rope_inv_freq(const LlamaConfig *c, int i);

#endif
