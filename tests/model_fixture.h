/* Shared set-up for model-level tests: a small random Llama stage with non-zero LoRA B
 * (so every LoRA gradient is non-trivial), random tokens/targets, plans and host copies. */
#ifndef TV_MODEL_FIXTURE_H
#define TV_MODEL_FIXTURE_H

#include <stdint.h>

#include "backend.h"
#include "model.h"

typedef struct {
  Backend *be;
  LlamaConfig cfg;
  LoraConfig lora;
  Stage *stage;
  int B, T;
  int32_t *tokens, *targets; /* [B*T] host */
  float loss_scale;
  const float *x_in;         /* input of a non-first stage, used when a call passes NULL */
  LayerPlan *layer_plans;    /* [stage layers] */
  PassPlan plan;
} Fixture;

/* Layers [l0, l1) of cfg; random base weights and LoRA (A and B) from seed. */
void fixture_init(Fixture *f, const LlamaConfig *cfg, const LoraConfig *lora, int l0, int l1,
                  int B, int T, uint64_t seed);
void fixture_free(Fixture *f);

/* Plan: every layer keeps activations and trains, backward to layer 0, no records. */
void fixture_plan_full(Fixture *f);

/* Forward + backward of the stage with the fixture's plan; x_in for non-first stages,
 * dy for non-last stages. Returns the loss (last stage) or 0. */
double fixture_pass(Fixture *f, const float *x_in, const float *dy, float **dx_out);
double fixture_forward_only(Fixture *f, const float *x_in);

/* Host copies of the whole LoRA parameter / gradient arena ([layers * layer_numel]). */
size_t fixture_lora_numel(Fixture *f);
void fixture_get_lora_grads(Fixture *f, float *host);
void fixture_get_lora_params(Fixture *f, float *host);
void fixture_set_lora_params(Fixture *f, const float *host);
void fixture_zero_grads(Fixture *f);

/* Random normal fill from a seed (Box-Muller over the counter RNG). */
void fill_random_normal(float *x, size_t n, uint64_t seed, float std);

#endif
