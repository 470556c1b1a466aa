/* The parts of an alignment run that `align` strings together: set-up from the config,
 * the step loop, checkpoints (gathered across ranks) and the exported adapter. */
#ifndef TV_ALIGN_RUN_H
#define TV_ALIGN_RUN_H

#include <stdint.h>

#include "checkpoint.h"
#include "comm.h"
#include "dataset.h"
#include "hf_model.h"
#include "run_config.h"
#include "runlog.h"
#include "tokenizer.h"
#include "trainer.h"

typedef struct {
  const char *config_path; /* --config, may be NULL when resuming */
  const char *resume;      /* --resume, or NULL */
  char **overrides;        /* "key=value" in command-line order */
  int n_overrides;
} AlignArgs;

typedef struct {
  RunConfig cfg;
  Comm *comm;
  int rank, size, l0, l1;
  Backend *be;
  HfModel *hf;           /* open only while the weights load */
  LlamaConfig model_cfg;
  Stage *stage;
  Tokenizer *tok;
  EncodedSet data, probe;
  RoleCounts data_roles, probe_roles; /* rows read, dropped for their role, kept */
  DataSampler sampler, probe_sampler;
  Batch batch, probe_batch;
  Trainer *trainer;
  int64_t total_steps, step;
  int has_probe;
  RunLog *log;
  CheckpointState *resume_state; /* loaded checkpoint when resuming, else NULL */
} AlignRun;

int align_run(const AlignArgs *args, int *argc, char ***argv);

/* Checkpoint of the run after `steps_done` optimizer steps (every rank calls; rank 0
 * writes out/checkpoints/step-N.h5). */
void align_save_checkpoint(AlignRun *r, int64_t steps_done);
/* Puts a loaded checkpoint's LoRA, optimizer, sampling and data state into the run. */
void align_restore_checkpoint(AlignRun *r, const CheckpointState *st);
/* Writes out/adapter as a PEFT folder (every rank calls; rank 0 writes). */
void align_save_adapter(AlignRun *r);

/* SIGTERM / SIGUSR1: remember the request; the loop acts at the next step boundary. */
void align_install_signal_handlers(void);
int align_stop_requested(void);

#endif
