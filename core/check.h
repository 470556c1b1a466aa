/* Always-on checks and the one abort hook every fatal error goes through.
 * dist/ installs a hook that calls MPI_Abort so that no rank is left hanging. */
#ifndef TV_CHECK_H
#define TV_CHECK_H

#include <stdarg.h>
#include <stddef.h>

/* Called after the message is printed; must not return. Default: exit(1). */
typedef void (*tv_abort_hook)(int code);
void tv_set_abort_hook(tv_abort_hook hook);

/* Called before a fatal message is printed (may delay it); default: nothing. dist/ uses it
 * so that a mistake every rank detects is printed once, by rank 0. */
typedef void (*tv_report_hook)(void);
void tv_set_report_hook(tv_report_hook hook);

/* Internal invariant broken: prints "file:line: message" and aborts through the hook. */
void tv_fatal_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

/* A mistake the user can make (bad path, bad value, corrupt file): one line,
 * "tvaccine: error: message", no source location, non-zero exit through the hook. */
void tv_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define TV_CHECK(cond, ...)                                  \
  do {                                                       \
    if (!(cond)) tv_fatal_at(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

/* malloc/calloc that never return NULL (they abort with the size asked for). */
void *tv_malloc(size_t bytes);
void *tv_calloc(size_t count, size_t size);

#endif
