/* HDF5 checkpoints of an alignment run (SPEC section 9): everything needed to resume a run
 * bit for bit, written to a temporary name, synced and renamed so no file is ever torn. */
#ifndef TV_CHECKPOINT_H
#define TV_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "lora.h" /* LORA_NUM_TARGETS: one update count per target */

/* File layout, format version 2 (L = num_layers, N = layer_numel, A = active layers):
 *
 *   /                  attributes (scalars, little-endian on disk):
 *     format            string "tvaccine-checkpoint"
 *     format_version    int32, CHECKPOINT_FORMAT_VERSION; load rejects any other value
 *     step, total_steps, data_epoch, data_cursor, probe_epoch, probe_cursor   int64
 *     seed, sample_rng_stream, sample_rng_counter                             uint64
 *     model_digest, tokenizer_digest, data_digest, probe_digest               uint64
 *     num_layers, lora_r    int32      lora_alpha  float64    lora_target_mask  uint32
 *     layer_numel           int64      method      string
 *   /config_yaml        fixed-length string [1]: the resolved run config
 *   /layer_probs        float64 [L]
 *   /active_layers      int32   [A]  (A may be 0)
 *   /lora/params        float32 [L, N]  one row per layer, chunked by row: row l is the
 *   /lora/m, /lora/v    float32 [L, N]  contiguous LoraSet block of layer l (lora_layer_params)
 *   /lora/steps         int64   [L, 7]  AdamW update count of each layer's adapters
 *
 * Every array dataset carries a string attribute `dtype` ("F64", "F32", "I32", "I64").
 * Arrays are chunked (2-D ones one row per chunk) with HDF5's Fletcher-32 filter and all
 * metadata is checksummed (1.10 file format; readers need HDF5 1.10 or later), so a
 * damaged byte is reported on load instead of resumed from (only unused bytes are
 * unchecked). Should a BF16 tensor ever be stored, it goes in as uint16
 * (the raw bits) with dtype "BF16"; nothing stores one yet.
 * Checkpoints of run folder DIR live in DIR/checkpoints/step-000123.h5 (>= 6 digits). */

#define CHECKPOINT_FORMAT_VERSION 2 /* 2: the input digests */

/* Host-memory state of a run at an optimizer-step boundary. The trainer fills it (its
 * pointers stay the trainer's); checkpoint_load allocates every pointer with malloc, and
 * checkpoint_state_free releases those. Arrays are whole-model: a multi-rank trainer
 * gathers the layers of every stage first. */
typedef struct {
  int64_t step;        /* optimizer steps completed; resume starts at this step index */
  int64_t total_steps; /* T of the run (learning-rate schedule) */
  uint64_t seed;       /* run seed */
  uint64_t sample_rng_stream;  /* the layer-sampling Rng (core/rng.h): its stream id ... */
  uint64_t sample_rng_counter; /* ... and next index; with seed that is its whole state */
  int64_t data_epoch, data_cursor;   /* position in the shuffled alignment data */
  int64_t probe_epoch, probe_cursor; /* position in the cycled harmful probe set */
  /* Digests of what the run read (run_dir.h): base weights, tokenizer files, alignment data
   * and probe data (0 = none); a resumed run must read the same. */
  uint64_t model_digest, tokenizer_digest, data_digest, probe_digest;
  int num_layers;                    /* L, >= 1 */
  double *layer_probs;               /* [L] last p_l (all zero before the first probe) */
  int num_active;                    /* |A|, 0..L */
  int32_t *active_layers;            /* [num_active] current T-Vaccine set A, distinct, in [0, L) */
  char *config_yaml;                 /* resolved run config as YAML text */
  char *method;                      /* "sft" | "vaccine" | "tvaccine" */
  int lora_r;                        /* >= 1 */
  double lora_alpha;
  uint32_t lora_target_mask;         /* bit t = LoraTarget t adapted; nonzero, 7 bits */
  int64_t layer_numel;               /* LoRA floats per layer (LoraSet.layer_numel), >= 1 */
  float *lora_params, *lora_m, *lora_v; /* [L * layer_numel], layer-major */
  int64_t *lora_steps;               /* [L, LORA_NUM_TARGETS] AdamW update count of each
                                      * adapter (LoraSet.steps), >= 0 */
} CheckpointState;

/* NULL when s is self-consistent (the rules load enforces), else a message in buf. */
const char *checkpoint_state_check(const CheckpointState *s, char *buf, size_t buflen);

/* Writes path + ".tmp", fsyncs it, renames it over path and fsyncs the folder. Any
 * failure ends in one tv_die line naming the file and what failed; the .tmp is removed
 * and an existing file at path is untouched. An inconsistent state is an internal error. */
void checkpoint_save(const char *path, const CheckpointState *s);

/* Reads path into *s (allocating its arrays). Returns NULL on success, else a one-line
 * message naming the file and the attribute or dataset that is missing, has the wrong type
 * or shape, or is inconsistent; *s is then zeroed and holds nothing to free. Never prints
 * HDF5's own error stack and never crashes on a truncated or corrupt file. */
const char *checkpoint_load(const char *path, CheckpointState *s, char *err, size_t errlen);

/* Frees what checkpoint_load allocated and zeroes *s. Safe on a zeroed state. */
void checkpoint_state_free(CheckpointState *s);

/* "RUN_DIR/checkpoints", malloc'd. */
char *checkpoint_dir(const char *run_dir);
/* "RUN_DIR/checkpoints/step-%06lld.h5", malloc'd. */
char *checkpoint_path(const char *run_dir, int64_t step);
/* Creates RUN_DIR and RUN_DIR/checkpoints when missing; one tv_die line when it cannot. */
void checkpoint_dir_create(const char *run_dir);
/* The checkpoint with the highest step in RUN_DIR/checkpoints (malloc'd path, step in
 * *step when step is non-NULL). Only names "step-<digits>.h5" count, so a .tmp left by a
 * crash is ignored. NULL with a message in err when the folder is missing or holds none. */
char *checkpoint_find_latest(const char *run_dir, int64_t *step, char *err, size_t errlen);

#endif
