/* JSON Lines run log (see runlog.h). */
#include "runlog.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

struct RunLog {
  FILE *f;
  char *path;
  int fields; /* fields written in the current line */
};

RunLog *runlog_open(const char *path, int append) {
  if (!path) return NULL;
  FILE *f = fopen(path, append ? "a" : "w");
  if (!f) tv_die("cannot open run log %s for writing: %s", path, strerror(errno));
  RunLog *log = tv_calloc(1, sizeof(RunLog));
  log->f = f;
  log->path = tv_malloc(strlen(path) + 1);
  strcpy(log->path, path);
  return log;
}

void runlog_close(RunLog *log) {
  if (!log) return;
  if (fclose(log->f) != 0) tv_die("cannot finish run log %s: %s", log->path, strerror(errno));
  free(log->path);
  free(log);
}

void runlog_begin(RunLog *log) {
  if (!log) return;
  fputc('{', log->f);
  log->fields = 0;
}

static void key(RunLog *log, const char *k) {
  fprintf(log->f, "%s\"%s\":", log->fields++ ? "," : "", k);
}

void runlog_int(RunLog *log, const char *k, int64_t value) {
  if (!log) return;
  key(log, k);
  fprintf(log->f, "%" PRId64, value);
}

void runlog_num(RunLog *log, const char *k, double value) {
  if (!log) return;
  key(log, k);
  if (isfinite(value))
    fprintf(log->f, "%.9g", value);
  else
    fputs("null", log->f);
}

void runlog_str(RunLog *log, const char *k, const char *value) {
  if (!log) return;
  key(log, k);
  fputc('"', log->f);
  for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(log->f, "\\%c", *p);
    else if (*p < 0x20)
      fprintf(log->f, "\\u%04x", *p);
    else
      fputc(*p, log->f);
  }
  fputc('"', log->f);
}

void runlog_end(RunLog *log) {
  if (!log) return;
  fputs("}\n", log->f);
  if (fflush(log->f) != 0) tv_die("cannot write run log %s: %s", log->path, strerror(errno));
}
