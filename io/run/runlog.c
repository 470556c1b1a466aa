/* JSON Lines run log (see runlog.h). */
#include "runlog.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* The value of a line's "step" key (lines start {"step":N), else -1. */
static int64_t line_step(const char *line) {
  static const char key[] = "{\"step\":";
  if (strncmp(line, key, sizeof key - 1) != 0) return -1;
  char *end;
  long long v = strtoll(line + sizeof key - 1, &end, 10);
  return end == line + sizeof key - 1 ? -1 : (int64_t)v;
}

RunLog *runlog_open_resumed(const char *path, const char *from, int64_t last_step) {
  size_t n = strlen(path) + 8;
  char *tmp = tv_malloc(n);
  snprintf(tmp, n, "%s.tmp", path);
  FILE *out = fopen(tmp, "w");
  if (!out) tv_die("cannot write run log %s: %s", tmp, strerror(errno));
  FILE *in = from ? fopen(from, "r") : NULL;
  if (from && !in && errno != ENOENT) tv_die("cannot read run log %s: %s", from, strerror(errno));
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  while (in && (len = getline(&line, &cap, in)) > 0) {
    int whole = line[len - 1] == '\n';
    int64_t step = line_step(line);
    if (whole && step >= 0 && step <= last_step) fputs(line, out);
  }
  free(line);
  if (in) fclose(in);
  if (fflush(out) != 0 || fsync(fileno(out)) != 0 || fclose(out) != 0 || rename(tmp, path) != 0)
    tv_die("cannot write run log %s: %s", path, strerror(errno));
  free(tmp);
  return runlog_open(path, 1);
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
