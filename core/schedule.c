/* Names of the pipeline schedules (see schedule.h). */
#include "schedule.h"

const char *const schedule_names[SCHEDULE_COUNT] = {"1f1b", "gpipe"};

const char *const layer_split_names[SPLIT_COUNT] = {"cost", "even"};

const char *schedule_name(PipelineSchedule s) {
  return (unsigned)s < SCHEDULE_COUNT ? schedule_names[s] : "?";
}
