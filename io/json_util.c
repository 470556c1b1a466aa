/* The error context and value checks that io/'s JSON readers share (json_util.h). */
#include "json_util.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>

void json_error(JsonCtx *c, const char *fmt, ...) {
  int n = snprintf(c->err, c->errlen, "%s: ", c->label);
  if (n < 0 || (size_t)n >= c->errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
  va_end(ap);
}

int json_absent(const cJSON *j) { return !j || cJSON_IsNull(j); }

int json_as_int(const cJSON *j, int *out) {
  if (!cJSON_IsNumber(j)) return 0;
  double d = j->valuedouble;
  if (!(d >= INT_MIN && d <= INT_MAX) || d != floor(d)) return 0;
  *out = (int)d;
  return 1;
}

cJSON *json_parse(JsonCtx *c, const char *text, size_t len) {
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
  if (!root) {
    size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    json_error(c, "not valid JSON (error near byte offset %zu)", at);
  }
  return root;
}
