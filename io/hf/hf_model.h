/* Hugging Face model folders (SPEC section 9): config.json in its variants, weights in
 * model.safetensors or index-listed shards, mapped lazily so a stage reads only its tensors.
 * Parsers return messages (never exit); the folder-level calls end in one tv_die line. */
#ifndef TV_HF_MODEL_H
#define TV_HF_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "safetensors.h"

#define HF_MAX_EOS 16

typedef struct {
  LlamaConfig cfg;
  char model_type[32];          /* "llama" (also when absent), "mistral" or "qwen2" */
  int bos_id;                   /* -1 when absent or null */
  int eos_ids[HF_MAX_EOS];      /* eos_token_id: one int or a list */
  int n_eos;                    /* 0 when absent or null */
  int pad_id;                   /* -1 when absent or null */
  int max_position_embeddings;  /* 0 when absent */
  StDtype dtype;                /* torch_dtype / dtype; F32 when absent or not a float type */
} HfConfig;

/* A config for a model built here: model_type llama, no special ids, dtype F32. */
HfConfig hf_config_from_llama(const LlamaConfig *cfg);

/* Parses config.json text (len bytes, need not be NUL-terminated) and validates the shape
 * with llama_config_validate. Returns NULL on success, else err = "label: field: problem". */
const char *hf_config_parse(const char *json, size_t len, const char *label, HfConfig *out,
                            char *err, size_t errlen);
/* config.json text for c (malloc'd, caller frees), loadable by transformers. */
char *hf_config_to_json(const HfConfig *c);

typedef struct HfModel HfModel;

/* Reads dir/config.json and the weight index (dir/model.safetensors.index.json, else the
 * header of dir/model.safetensors). No shard is mapped until a stage needs it. Tensors a
 * Llama model does not use are listed in one note line on stderr. Dies on any problem. */
HfModel *hf_model_open(const char *dir);
void hf_model_close(HfModel *m);
const HfConfig *hf_model_config(const HfModel *m);
const char *hf_model_dir(const HfModel *m);

/* Fills the stage's base weights (its layers [l0, l1), plus the embedding, final norm and
 * LM head it holds) from the folder, converting F16/BF16/F32 to the stage's types (f32
 * norms; matrices f32, or bf16 rounded to nearest even, so BF16 files keep their bits). Opens
 * only the files holding those tensors. Missing or wrongly shaped tensors: one line naming them.
 * The stage's model config must equal the folder's. */
void hf_model_load_stage(HfModel *m, Stage *s);
/* The same for a sequence classifier's body (LlamaForSequenceClassification: a `score` head
 * instead of lm_head): s must be built with tie_word_embeddings 1 so it holds no LM head of
 * its own; everything else is loaded and checked as above. */
void hf_model_load_headless_stage(HfModel *m, Stage *s);
/* One named tensor of at most 2 dimensions (e.g. a classifier's score.weight) as float32:
 * malloc'd data, its rank in *ndim and shape in shape[0 .. *ndim). Missing: one error line. */
float *hf_model_read_tensor(HfModel *m, const char *name, int *ndim, int64_t *shape);
/* The same checks of names and shapes for a stage of layers [l0, l1), reading file headers
 * only: run it before creating a stage, so a config.json that disagrees with its weights
 * fails before memory sized by config.json is allocated. */
void hf_model_check_stage(HfModel *m, int l0, int l1);
/* Digest of the tensors the last hf_model_load_stage read (raw bytes and names, the tied
 * head of a later stage not counted again); the sum of every stage's digest (mod 2^64) is
 * the model's digest, the same for any split into stages. Base weights holding NaN or inf
 * are refused by the load, naming the file, tensor and element. */
uint64_t hf_model_digest(const HfModel *m);
/* Number of safetensors files mapped so far (tests check that a stage opens only its own). */
int hf_model_files_opened(const HfModel *m);

/* Writes a whole model (s must hold layers [0, L)) as dir/config.json plus weights in dtype:
 * one model.safetensors, or, when the tensors exceed max_shard_bytes (0 = no limit),
 * model-0000i-of-0000n.safetensors shards and model.safetensors.index.json. Creates dir
 * when missing; every file is written to a temporary name and renamed; a weights file of
 * the other layout left from an earlier write is removed so it cannot shadow the new one. */
void hf_model_write(const char *dir, const HfConfig *cfg, Stage *s, StDtype dtype,
                    uint64_t max_shard_bytes);

/* "5GB", "500MB", "10KB" (powers of 1000, as transformers counts), "2GiB", "1MiB", "4KiB",
 * or a plain byte count. Returns 1 and sets *bytes, or 0 when the text is not a size. */
int hf_parse_size(const char *text, uint64_t *bytes);

/* Small-file helpers shared with the PEFT reader and the exporter. */
char *hf_path_join(const char *dir, const char *name); /* "dir/name", malloc'd */
char *hf_read_text_file(const char *path, size_t *len); /* NULL + errno when unreadable */
/* Writes path.tmp and renames it to path; dies with one line naming path on failure. */
void hf_write_text_file(const char *path, const char *text);
/* Copies a file atomically (temporary name + rename); dies naming the paths on failure. */
void hf_copy_file(const char *src, const char *dst);
/* Creates dir when it does not exist yet; dies naming it when it cannot. */
void hf_make_dir(const char *dir);
/* Shortest decimal text that reads back as exactly the float x (e.g. 1e-05, 0.1). */
void hf_format_float(char *buf, size_t len, float x);

#endif
