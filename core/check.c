/* Fatal-error reporting and the abort hook (see check.h). */
#include "check.h"

#include <stdio.h>
#include <stdlib.h>

static void default_abort(int code) { exit(code); }
static tv_abort_hook abort_hook = default_abort;

void tv_set_abort_hook(tv_abort_hook hook) { abort_hook = hook ? hook : default_abort; }

static tv_report_hook report_hook = NULL;
void tv_set_report_hook(tv_report_hook hook) { report_hook = hook; }
static void before_report(void) {
  if (report_hook) report_hook();
}

/* The whole line in one write: stderr is unbuffered, and under mpirun several ranks' lines
 * (and Open MPI's own abort banner) would otherwise interleave piece by piece. */
static void report_line(const char *prefix, const char *fmt, va_list ap) {
  char line[4096];
  int n = snprintf(line, sizeof line, "%s", prefix);
  if (n < 0 || (size_t)n > sizeof line / 2) n = 0; /* prefixes are short */
  size_t room = sizeof line - (size_t)n - 2;         /* the text, then '\n' */
  int m = vsnprintf(line + n, room + 1, fmt, ap);  /* longer text is cut at room */
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m < room ? (size_t)m : room);
  line[len++] = '\n';
  fwrite(line, 1, len, stderr);
}

static void __attribute__((noreturn)) finish(int code) {
  fflush(stdout);
  fflush(stderr);
  abort_hook(code);
  exit(code); /* a hook that returns still ends the process */
}

void tv_fatal_at(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  before_report();
  char prefix[512];
  snprintf(prefix, sizeof prefix, "tvaccine: internal error at %s:%d: ", file, line);
  va_start(ap, fmt);
  report_line(prefix, fmt, ap);
  va_end(ap);
  finish(2);
}

void tv_die(const char *fmt, ...) {
  va_list ap;
  before_report();
  va_start(ap, fmt);
  report_line("tvaccine: error: ", fmt, ap);
  va_end(ap);
  finish(1);
}

void *tv_malloc(size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (!p) tv_die("out of host memory allocating %zu bytes", bytes);
  return p;
}

void *tv_calloc(size_t count, size_t size) {
  void *p = calloc(count ? count : 1, size ? size : 1);
  if (!p) tv_die("out of host memory allocating %zu x %zu bytes", count, size);
  return p;
}
