/* One run set-up for every subcommand that builds a model run: the backend, the comm, this
 * rank's share of the decoder layers, the stage and the trainer, each from a resolved config.
 * align calls the pieces between its early checks (its order stays its own); bench calls
 * run_setup_random for a whole random model. */
#ifndef TV_RUN_SETUP_H
#define TV_RUN_SETUP_H

#include <stdint.h>

#include "backend.h"
#include "comm.h"
#include "hf_model.h"
#include "model.h"
#include "run_config.h"
#include "trainer.h"

typedef struct {
  Comm *comm;
  int rank, size;
  int l0, l1; /* this rank's decoder layers [l0, l1) */
  Backend *be;
  Stage *stage;
  Trainer *trainer;
} RunSetup;

/* The backend of every subcommand: the one place that picks it. kind cpu or cuda (the run
 * config's `device`), device = the GPU number (a rank's index on its node), threads = CPU
 * threads, 0 = all cores. */
Backend *run_setup_backend(BackendKind kind, int device, int threads);

/* MPI (or the single-process stand-in): comm, rank and size. The layer split of a model
 * over the ranks stays comm_split_layers (align, generate), defined once in dist/. */
void run_setup_comm(RunSetup *s, int *argc, char ***argv);

/* Decoder layers per pipeline stage (sizes[P]) for a model of mc's layers: dist.stages when
 * given (checked against the model, one error line naming the key and `model`), else by
 * dist.split (cost: the head weighs on the last stage; even). align and plan use it, so a
 * plan shows the split the run will have. */
void run_setup_stage_sizes(const RunDist *d, const LlamaConfig *mc, int P, const char *model,
                           int *sizes);

/* A stage of decoder layers [l0, l1) of an open Hugging Face model folder (align, export,
 * generate), with room for micro-batches of `micro` rows of T tokens, its weights loaded and
 * its base matrices stored as weight_dtype (run_config_weight_dtype for a run). */
Stage *run_setup_hf_stage(Backend *be, HfModel *hf, const LoraConfig *lora, int l0, int l1,
                          int micro, int T, TvDtype weight_dtype);

/* The trainer settings of a resolved run config: method, rho, the T-Vaccine keys, the
 * optimizer (with the run's total_steps), seed, activation policy and pipeline schedule. */
TrainerConfig run_setup_trainer_config(const RunConfig *c, int64_t total_steps);

/* bench: comm, backend, a stage of the whole model (one rank) with random weights
 * (weight_seed, scale) and LoRA initialised from c->seed, and the trainer of c, for
 * micro-batches of `micro` rows of T tokens. */
void run_setup_random(RunSetup *s, const RunConfig *c, const LlamaConfig *model, int micro,
                      int T, uint64_t weight_seed, float scale, int64_t total_steps, int *argc,
                      char ***argv);

/* Frees what was built (trainer, stage, backend) and finalises the comm; NULLs are skipped. */
void run_setup_free(RunSetup *s);

#endif
