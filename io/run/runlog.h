/* The run log: one JSON object per line (JSON Lines), flushed as each line ends so a
 * killed run keeps every finished line. */
#ifndef TV_RUNLOG_H
#define TV_RUNLOG_H

#include <stdint.h>

typedef struct RunLog RunLog;

/* Opens path, truncating it or (append = 1, for a resumed run) adding to it; one clear error
 * line when it cannot. NULL path = no log. */
RunLog *runlog_open(const char *path, int append);
/* A resumed run's log at path: the lines of the log at `from` (the run folder resumed, which
 * may be path itself; missing = none) with a step up to last_step are kept, later lines -- the
 * steps after the checkpoint, which the resumed run writes again -- and a torn last line are
 * dropped, so no step appears twice. Written to a temporary name and renamed. */
RunLog *runlog_open_resumed(const char *path, const char *from, int64_t last_step);
void runlog_close(RunLog *log);

/* Build one line: begin, any number of fields, end. Keys are plain identifiers. */
void runlog_begin(RunLog *log);
void runlog_int(RunLog *log, const char *key, int64_t value);
void runlog_num(RunLog *log, const char *key, double value); /* NaN/inf written as null */
void runlog_str(RunLog *log, const char *key, const char *value);
void runlog_end(RunLog *log);

#endif
