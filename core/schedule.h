/* Names of the pipeline schedules and layer splits, for the run config and for dist/ (the
 * pipeline builds each rank's list of operations from a schedule, dist/pipeline.h). */
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

typedef enum {
  SPLIT_COST = 0, /* balance an estimated cost: the last stage's head counts as layers */
  SPLIT_EVEN = 1, /* equal layer counts, earlier stages take the remainder */
  SPLIT_COUNT
} LayerSplit;
extern const char *const layer_split_names[SPLIT_COUNT]; /* cost, even */

#endif
