/* LoRA adapters on the seven projections of every layer:
 * y = W x + (alpha / r) * B (A dropout(x)), A [r, in], B [out, r], base W frozen. */
#ifndef TV_LORA_H
#define TV_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

typedef enum {
  LORA_Q = 0, LORA_K, LORA_V, LORA_O, LORA_GATE, LORA_UP, LORA_DOWN, LORA_NUM_TARGETS
} LoraTarget;

#define LORA_ALL_TARGETS 0x7fu        /* bit t = target t */
#define LORA_ATTENTION_TARGETS 0x0fu  /* q, k, v, o */
#define LORA_MLP_TARGETS 0x70u        /* gate, up, down */

/* HF module names: "q_proj", ..., "down_proj". */
const char *lora_target_name(LoraTarget t);
/* "self_attn" or "mlp". */
const char *lora_target_parent(LoraTarget t);

typedef struct {
  int r;               /* rank, >= 1 */
  float alpha;         /* scaling = alpha / r */
  float dropout;       /* in [0, 1) */
  unsigned target_mask; /* bit t set = target t adapted; all seven by default */
} LoraConfig;

LoraConfig lora_config_default(void); /* r 8, alpha 1, dropout 0.1, all seven */
const char *lora_config_validate(const LoraConfig *c, char *buf, size_t buflen);

/* One adapted projection. All pointers are backend memory. */
typedef struct {
  int in, out;
  float *A, *B;   /* [r, in], [out, r] */
  float *dA, *dB; /* gradients, same shapes */
  float *mA, *vA, *mB, *vB; /* AdamW moments */
} LoraAdapter;

/* The adapters of layers [l0, l1). Each layer's tensors (params, grads, moments) are one
 * contiguous block, so a layer can be zeroed, clipped, stepped or sent as a whole. */
typedef struct {
  LoraConfig cfg;
  int l0, l1;
  LoraAdapter (*layers)[LORA_NUM_TARGETS]; /* [l1 - l0][target]; in == 0 when not adapted */
  size_t layer_numel; /* parameters per layer (all adapted targets, A and B) */
  float *params, *grads, *m, *v; /* arenas [(l1 - l0) * layer_numel] */
  int64_t (*steps)[LORA_NUM_TARGETS]; /* [l1 - l0][target] AdamW update counts (SPEC: k per
                                        * parameter; a target is updated as a whole) */
} LoraSet;

/* in/out of each target for this model shape. */
void lora_target_shape(LoraTarget t, int D, int F, int H, int Hkv, int Dh, int *in, int *out);

LoraSet *lora_set_create(Backend *be, const LoraConfig *cfg, int l0, int l1, int D, int F, int H,
                         int Hkv, int Dh);
void lora_set_destroy(Backend *be, LoraSet *s);

/* SPEC init: A ~ U(-1/sqrt(in), 1/sqrt(in)) from stream (LORA_INIT, layer, target), B = 0.
 * Same numbers for a layer whatever the stage split. */
void lora_set_init(Backend *be, LoraSet *s, uint64_t seed);

float *lora_layer_params(LoraSet *s, int l); /* global layer index */
float *lora_layer_grads(LoraSet *s, int l);

#endif
