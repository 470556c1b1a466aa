/* Shared by the io/ readers of JSON (config.json, adapter_config.json, safetensors headers):
 * an error is one "label: message" line in the caller's buffer; null counts as absent. */
#ifndef TV_JSON_UTIL_H
#define TV_JSON_UTIL_H

#include <cjson/cJSON.h>
#include <stddef.h>

typedef struct {
  char *err;
  size_t errlen;
  const char *label; /* what the messages name: the file or its path */
} JsonCtx;

/* Writes "label: message" into c->err (cut to errlen). */
void json_error(JsonCtx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* json_error, then 0: a parser step ends with `return json_fail(c, ...)`. A macro so that
 * the compiler sees the 0, and with it that the step's out-parameters are not set. */
#define json_fail(c, ...) (json_error((c), __VA_ARGS__), 0)

/* A key that is missing or null. */
int json_absent(const cJSON *j);

/* A number that is a whole value within int's range: 1 and *out set, else 0. */
int json_as_int(const cJSON *j, int *out);

/* Parses len bytes (need not be NUL-terminated) as one JSON value. NULL after json_error
 * with "not valid JSON (error near byte offset N)"; the caller frees with cJSON_Delete. */
cJSON *json_parse(JsonCtx *c, const char *text, size_t len);

#endif
