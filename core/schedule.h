/* Names of the pipeline schedules, for the run config and the pipeline (which builds each
 * rank's list of operations from them, dist/pipeline.h). */
#ifndef TV_SCHEDULE_H
#define TV_SCHEDULE_H

typedef enum {
  /* one forward, one backward: a rank holds at most (stages - its index) micro-batches */
  SCHEDULE_1F1B = 0,
  SCHEDULE_GPIPE = 1, /* every forward, then every backward: holds all m micro-batches */
  SCHEDULE_COUNT
} PipelineSchedule;

extern const char *const schedule_names[SCHEDULE_COUNT]; /* 1f1b, gpipe */
const char *schedule_name(PipelineSchedule s);

#endif
