/* PEFT LoRA adapter folders (SPEC section 9): adapter_config.json + adapter_model.safetensors
 * read and written so Hugging Face PEFT loads them unchanged. A rank reads or writes just its
 * layers [l0, l1); host arrays use the LoraSet arena layout, so gathered layers write as one. */
#ifndef TV_PEFT_H
#define TV_PEFT_H

#include <stddef.h>

#include "lora.h"
#include "model.h"
#include "safetensors.h"

typedef struct {
  LoraConfig lora;        /* r, lora_alpha, lora_dropout, target_modules as a mask */
  char base_model[1024];  /* base_model_name_or_path; "" for null */
} PeftConfig;

/* Parses adapter_config.json text. Accepts what PEFT writes: target_modules as a list of
 * module names or one string (a regex matched in full, or "all-linear"), resolved against a
 * model of num_layers layers; extra fields are ignored unless they change the math (DoRA,
 * rsLoRA, rank_pattern, modules_to_save, ...), which are refused. NULL on success, else
 * err = "label: field: problem". Never exits. */
const char *peft_config_parse(const char *json, size_t len, const char *label, int num_layers,
                              PeftConfig *out, char *err, size_t errlen);
/* adapter_config.json text (malloc'd) with the fields PEFT's LoraConfig expects. */
char *peft_config_to_json(const PeftConfig *c);
/* dir/adapter_config.json; dies with one line naming the file and field. */
PeftConfig peft_read_config(const char *dir, int num_layers);

/* Floats per layer in the LoraSet layout: for each adapted target in q..down order, A
 * [r, in] then B [out, r]. Equals LoraSet.layer_numel for the same shapes. */
size_t peft_layer_numel(const LoraConfig *lora, const LlamaConfig *model);

/* dir/adapter_config.json fits a run of this model with LoRA config lora (r, lora_alpha and
 * targets equal); one tv_die line naming the file and field when not. peft_read_host checks
 * it too; a run calls it early, before allocating anything for the model. */
void peft_check_config(const char *dir, const LlamaConfig *model, const LoraConfig *lora);
/* Reads layers [l0, l1) of dir's adapter into params [(l1 - l0) * peft_layer_numel] (host),
 * converting F16/BF16/F32. The adapter's r, lora_alpha and targets must equal lora's; a
 * missing or wrongly shaped tensor is one line naming it. Tensors of other layers are
 * skipped unread; names that are no LoRA tensor are listed in one note line. */
void peft_read_host(const char *dir, const LlamaConfig *model, const LoraConfig *lora, int l0,
                    int l1, float *params);
/* The same into a LoraSet (its A and B; gradients and AdamW moments are left alone). */
void peft_load(const char *dir, const LlamaConfig *model, Backend *be, LoraSet *set);

/* Writes dir/adapter_config.json and dir/adapter_model.safetensors (tensors of layers
 * [l0, l1) from host params in the layout above, stored as dtype). Creates dir; each file
 * goes to a temporary name and is renamed. With l0 = 0 and l1 = L it is a full adapter. */
void peft_write_host(const char *dir, const PeftConfig *cfg, const LlamaConfig *model, int l0,
                     int l1, const float *params, StDtype dtype);
/* The same from a LoraSet (its layers only); base_model may be NULL. */
void peft_save(const char *dir, const LlamaConfig *model, Backend *be, const LoraSet *set,
               const char *base_model, StDtype dtype);

#endif
