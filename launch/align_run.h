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
#include "run_dir.h"
#include "runlog.h"
#include "tokenizer.h"
#include "trainer.h"

typedef struct {
  const char *config_path; /* --config, may be NULL when resuming */
  const char *resume;      /* --resume, or NULL */
  char **overrides;        /* "key=value" in command-line order */
  int n_overrides;
  int overwrite;           /* --overwrite: a new run may replace an earlier run's files */
} AlignArgs;

/* The run state besides the LoRA arrays that a checkpoint holds, copied at a step boundary. */
typedef struct {
  int64_t step; /* optimizer steps completed */
  uint64_t rng_counter;
  int64_t data_epoch, data_cursor, probe_epoch, probe_cursor;
  double *probs;   /* [L] */
  int32_t *active; /* [L], num_active used */
  int num_active;
} AlignMeta;

typedef struct Preempt Preempt;

typedef struct {
  RunConfig cfg;
  Comm *comm;              /* the world: every rank of the job */
  int rank, size, l0, l1;  /* in the world; this rank's decoder layers [l0, l1) */
  /* The data x pipeline grid (dist.data_parallel): this rank is stage `stage_rank` of the
   * `stages` of pipeline replica `replica` of `replicas`; pipe is that pipeline's comm. The
   * world's rank 0 (replica 0, stage 0) prints and writes; every replica holds the same
   * adapter, so only replica 0 gathers it. */
  Comm *pipe;
  int stage_rank, stages, replica, replicas;
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
  char *resume_dir;  /* the run folder the checkpoint came from (its log.jsonl), or NULL */
  RunDir *dir;       /* rank 0: the locked run folder */
  uint64_t model_digest, tokenizer_digest, data_digest, probe_digest;
  Preempt *preempt;  /* the state kept for a preemption signal */
} AlignRun;

int align_run(const AlignArgs *args, int *argc, char ***argv);

/* Checkpoint of the run after `steps_done` optimizer steps (every rank calls; rank 0
 * writes out/checkpoints/step-N.h5). */
void align_save_checkpoint(AlignRun *r, int64_t steps_done);
/* Rank 0: writes the checkpoint of meta->step from whole-model LoRA arrays; returns its path
 * (malloc'd). Used by align_save_checkpoint and by the preemption writer. */
char *align_write_checkpoint(AlignRun *r, const AlignMeta *meta, float *params, float *m,
                             float *v, int64_t *steps);
/* Copies the run's sampling and data state after `steps_done` steps into meta (whose arrays
 * hold num_layers entries). */
void align_meta_capture(AlignRun *r, int64_t steps_done, AlignMeta *meta);
/* Puts a loaded checkpoint's LoRA, optimizer, sampling and data state into the run. */
void align_restore_checkpoint(AlignRun *r, const CheckpointState *st);
/* Writes out/adapter as a PEFT folder (every rank calls; rank 0 writes). */
void align_save_adapter(AlignRun *r);

/* Preemption (align_preempt.c). SIGTERM, SIGINT and SIGUSR1 wake a helper thread on every
 * rank that writes the state of the last step all ranks completed -- kept in host memory
 * at each step boundary, so nothing waits for the step in flight -- as the one checkpoint
 * file of that step, then exits 0. */
Preempt *preempt_start(AlignRun *r);
/* After each step (and once before the first): keep this rank's state of `steps_done`. */
void preempt_keep(Preempt *p, AlignRun *r, int64_t steps_done);
/* Every rank calls: writes the kept state (the last completed step, with the data cursor and
 * sampling state of that moment) as a checkpoint, e.g. after a step failed part-way. */
void preempt_save_kept(Preempt *p);
/* Held around rank 0's writes of checkpoints and the adapter, so the preemption writer
 * never races them. */
void preempt_io_lock(Preempt *p);
void preempt_io_unlock(Preempt *p);
/* Stops the helper thread and restores the default signal actions. */
void preempt_stop(Preempt *p);

#endif
