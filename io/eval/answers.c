/* Reader of answer files (see answers.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answers.h"
#include "check.h"
#include "hf_model.h"
#include "json_util.h"

static char *copy_text(const char *s) {
  size_t n = strlen(s) + 1;
  char *c = tv_malloc(n);
  memcpy(c, s, n);
  return c;
}

/* The string field key of o: a copy, "" when absent and optional; 0 on a type error. */
static int string_field(JsonCtx *c, const cJSON *o, const char *key, int required, char **out) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
  if (json_absent(j)) {
    if (required) return json_fail(c, "field '%s' is missing", key);
    *out = copy_text("");
    return 1;
  }
  if (!cJSON_IsString(j)) return json_fail(c, "field '%s': expected a string", key);
  *out = copy_text(j->valuestring);
  return 1;
}

static int parse_row(JsonCtx *c, const char *line, size_t len, AnswerRow *row) {
  cJSON *o = json_parse(c, line, len);
  if (!o) return 0;
  memset(row, 0, sizeof *row);
  row->is_safe = -1;
  int ok = cJSON_IsObject(o) || json_fail(c, "expected a JSON object");
  ok = ok && string_field(c, o, "instruction", 1, &row->instruction);
  ok = ok && string_field(c, o, "answer", 1, &row->answer);
  ok = ok && string_field(c, o, "input", 0, &row->input);
  ok = ok && string_field(c, o, "reference", 0, &row->reference);
  ok = ok && string_field(c, o, "category", 0, &row->category);
  const cJSON *safe = cJSON_GetObjectItemCaseSensitive(o, "is_safe");
  if (ok && !json_absent(safe)) {
    if (cJSON_IsBool(safe))
      row->is_safe = cJSON_IsTrue(safe);
    else if (!json_as_int(safe, &row->is_safe) || row->is_safe < -1 || row->is_safe > 1)
      ok = json_fail(c, "field 'is_safe': expected true, false, 1, 0 or -1");
  }
  cJSON_Delete(o);
  if (!ok) {
    free(row->instruction), free(row->answer), free(row->input), free(row->reference);
    free(row->category);
    memset(row, 0, sizeof *row);
  }
  return ok;
}

int answers_parse(const char *name, const char *text, size_t len, AnswerSet *out, char *err,
                  size_t errlen) {
  memset(out, 0, sizeof *out);
  size_t cap = 0, lineno = 0;
  for (size_t at = 0; at < len;) {
    const char *nl = memchr(text + at, '\n', len - at);
    size_t end = nl ? (size_t)(nl - text) : len;
    lineno++;
    size_t a = at;
    while (a < end && (text[a] == ' ' || text[a] == '\t' || text[a] == '\r')) a++;
    if (a < end) {
      char label[600];
      snprintf(label, sizeof label, "%s: line %zu", name, lineno);
      JsonCtx c = {.err = err, .errlen = errlen, .label = label};
      if (out->n == cap) {
        cap = cap ? 2 * cap : 64;
        out->rows = realloc(out->rows, cap * sizeof(AnswerRow));
        TV_CHECK(out->rows, "out of memory for %zu answers", cap);
      }
      if (!parse_row(&c, text + a, end - a, &out->rows[out->n])) {
        answers_free(out);
        return -1;
      }
      out->n++;
    }
    at = end + 1;
  }
  out->path = copy_text(name);
  return 0;
}

void answers_load(const char *path, AnswerSet *out) {
  size_t len;
  char *text = hf_read_text_file(path, &len);
  if (!text) tv_die("cannot read answer file %s: %s", path, strerror(errno));
  char err[1024];
  if (answers_parse(path, text, len, out, err, sizeof err)) tv_die("%s", err);
  free(text);
  if (out->n == 0) tv_die("answer file %s holds no answer", path);
}

void answers_free(AnswerSet *s) {
  for (size_t i = 0; i < s->n; i++) {
    AnswerRow *r = &s->rows[i];
    free(r->instruction), free(r->input), free(r->reference), free(r->category), free(r->answer);
  }
  free(s->rows);
  free(s->path);
  memset(s, 0, sizeof *s);
}
