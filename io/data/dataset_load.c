/* Reading example files: JSON array or JSON Lines of Alpaca, BeaverTails or refusal rows.
 * Every problem becomes one line naming the file, the record and the field. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "dataset.h"

/* A record is named "line N" (1-based, JSON Lines) or "record [i]" (0-based, arrays) so a
 * user can find it with an editor or with jq. */
typedef struct {
  const char *name;
  DatasetFormat fmt; /* AUTO until the first record decides */
  int array;
  ExampleSet *out;
  char *err;
  size_t errlen;
} ParseCtx;

static void record_label(const ParseCtx *c, size_t rec, char *buf, size_t len) {
  if (c->array)
    snprintf(buf, len, "record [%zu]", rec);
  else
    snprintf(buf, len, "line %zu", rec);
}

static int fail_field(ParseCtx *c, size_t rec, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_field(ParseCtx *c, size_t rec, const char *field, const char *fmt, ...) {
  char where[48], what[256];
  record_label(c, rec, where, sizeof where);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  if (field)
    snprintf(c->err, c->errlen, "%s: %s: field '%s': %s", c->name, where, field, what);
  else
    snprintf(c->err, c->errlen, "%s: %s: %s", c->name, where, what);
  return -1;
}

static const char *json_type_name(const cJSON *v) {
  if (cJSON_IsString(v)) return "a string";
  if (cJSON_IsNumber(v)) return "a number";
  if (cJSON_IsBool(v)) return "a boolean";
  if (cJSON_IsNull(v)) return "null";
  if (cJSON_IsArray(v)) return "an array";
  if (cJSON_IsObject(v)) return "an object";
  return "an invalid value";
}

/* Offset of the first byte that breaks UTF-8 (overlong forms, surrogates and code points
 * above U+10FFFF included), or -1 when s is valid. cJSON passes raw bytes through, so
 * without this a Latin-1 file would reach the tokenizer unnoticed. */
static long utf8_invalid_at(const unsigned char *s) {
  const unsigned char *p = s;
  while (*p) {
    unsigned char b = *p;
    int extra;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (b < 0x80) { p++; continue; }
    if (b >= 0xC2 && b <= 0xDF) extra = 1;
    else if (b == 0xE0) { extra = 2; lo = 0xA0; }
    else if (b == 0xED) { extra = 2; hi = 0x9F; }
    else if (b >= 0xE1 && b <= 0xEF) extra = 2;
    else if (b == 0xF0) { extra = 3; lo = 0x90; }
    else if (b == 0xF4) { extra = 3; hi = 0x8F; }
    else if (b >= 0xF1 && b <= 0xF3) extra = 3;
    else return (long)(p - s);
    if (p[1] < lo || p[1] > hi) return (long)(p - s);
    for (int k = 2; k <= extra; k++)
      if (p[k] < 0x80 || p[k] > 0xBF) return (long)(p - s);
    p += 1 + extra;
  }
  return -1;
}

/* Checks every key and string below v; path is the field name shown in messages. */
static int check_utf8_tree(ParseCtx *c, size_t rec, const cJSON *v, const char *path) {
  if (cJSON_IsString(v) && v->valuestring) {
    long at = utf8_invalid_at((const unsigned char *)v->valuestring);
    if (at >= 0) return fail_field(c, rec, path, "invalid UTF-8 at byte %ld of the value", at);
  }
  if (cJSON_IsObject(v) || cJSON_IsArray(v)) {
    size_t i = 0;
    for (const cJSON *it = v->child; it; it = it->next, i++) {
      char sub[160];
      if (cJSON_IsObject(v)) {
        if (it->string && utf8_invalid_at((const unsigned char *)it->string) >= 0)
          return fail_field(c, rec, path, "a key holds invalid UTF-8");
        snprintf(sub, sizeof sub, "%s%s%s", path ? path : "", path ? "." : "",
                 it->string ? it->string : "?");
      } else {
        snprintf(sub, sizeof sub, "%s[%zu]", path ? path : "", i);
      }
      if (check_utf8_tree(c, rec, it, sub)) return -1;
    }
  }
  return 0;
}

static const cJSON *get(const cJSON *obj, const char *key) {
  return cJSON_GetObjectItemCaseSensitive(obj, key);
}

/* A required string field; *s points into the cJSON tree. */
static int need_string(ParseCtx *c, size_t rec, const cJSON *obj, const char *key,
                       const char **s) {
  const cJSON *v = get(obj, key);
  if (!v) return fail_field(c, rec, key, "missing (the %s format needs it)", dataset_format_name(c->fmt));
  if (!cJSON_IsString(v)) return fail_field(c, rec, key, "expected a string, got %s", json_type_name(v));
  *s = v->valuestring;
  return 0;
}

/* An optional string field: absent or null = "". */
static int opt_string(ParseCtx *c, size_t rec, const cJSON *obj, const char *key, const char **s) {
  const cJSON *v = get(obj, key);
  *s = "";
  if (!v || cJSON_IsNull(v)) return 0;
  if (!cJSON_IsString(v)) return fail_field(c, rec, key, "expected a string, got %s", json_type_name(v));
  *s = v->valuestring;
  return 0;
}

static int read_is_safe(ParseCtx *c, size_t rec, const cJSON *obj, int required, int *is_safe) {
  const cJSON *v = get(obj, "is_safe");
  if (!v && !required) return 0;
  if (!v) return fail_field(c, rec, "is_safe", "missing (the %s format needs it)", dataset_format_name(c->fmt));
  if (!cJSON_IsBool(v)) return fail_field(c, rec, "is_safe", "expected true or false, got %s", json_type_name(v));
  *is_safe = cJSON_IsTrue(v) ? 1 : 0;
  return 0;
}

/* category: a name, or (as in the real BeaverTails rows) an object of booleans whose true
 * keys are the categories. Those keys contain commas themselves ("financial_crime,
 * property_crime,theft"), so the names are joined by ';'. */
static int read_category(ParseCtx *c, size_t rec, const cJSON *obj, int required, char **out) {
  const cJSON *v = get(obj, "category");
  *out = NULL;
  if (!v && !required) return 0;
  if (!v) return fail_field(c, rec, "category", "missing (the %s format needs it)", dataset_format_name(c->fmt));
  if (cJSON_IsNull(v)) return 0;
  if (cJSON_IsString(v)) {
    size_t len = strlen(v->valuestring);
    *out = tv_malloc(len + 1);
    memcpy(*out, v->valuestring, len + 1);
    return 0;
  }
  if (!cJSON_IsObject(v))
    return fail_field(c, rec, "category", "expected a string or an object of booleans, got %s",
                      json_type_name(v));
  size_t total = 1;
  for (const cJSON *it = v->child; it; it = it->next) {
    if (!cJSON_IsBool(it)) {
      char sub[160];
      snprintf(sub, sizeof sub, "category.%s", it->string ? it->string : "?");
      return fail_field(c, rec, sub, "expected true or false, got %s", json_type_name(it));
    }
    if (cJSON_IsTrue(it)) total += strlen(it->string) + 1;
  }
  char *s = tv_malloc(total);
  s[0] = '\0';
  for (const cJSON *it = v->child; it; it = it->next) {
    if (!cJSON_IsTrue(it)) continue;
    if (s[0]) strcat(s, ";");
    strcat(s, it->string);
  }
  *out = s;
  return 0;
}

/* The refusal rows of the Vaccine reference: "Question: {q}\nAnswer: {a}" -> (q, a). */
static int split_refusal(ParseCtx *c, size_t rec, const char *text, char **q, char **a) {
  static const char sep[] = "\nAnswer: ", qtag[] = "Question: ";
  const char *at = strstr(text, sep);
  if (!at) return fail_field(c, rec, "refusal", "expected \"Question: ...\\nAnswer: ...\", found no \"\\nAnswer: \"");
  const char *qs = text;
  if (strncmp(qs, qtag, sizeof qtag - 1) == 0) qs += sizeof qtag - 1;
  size_t qlen = at >= qs ? (size_t)(at - qs) : 0;
  const char *as = at + sizeof sep - 1;
  size_t alen = strlen(as);
  *q = tv_malloc(qlen + 1);
  memcpy(*q, qs, qlen);
  (*q)[qlen] = '\0';
  *a = tv_malloc(alen + 1);
  memcpy(*a, as, alen + 1);
  return 0;
}

static DatasetFormat detect_format(const cJSON *obj) {
  if (get(obj, "refusal")) return DATASET_FORMAT_REFUSAL;
  if (get(obj, "prompt") && get(obj, "response")) return DATASET_FORMAT_BEAVERTAILS;
  if (get(obj, "instruction") && get(obj, "output")) return DATASET_FORMAT_ALPACA;
  return DATASET_FORMAT_AUTO;
}

/* One parsed record -> one Example appended to c->out. */
static int add_record(ParseCtx *c, size_t rec, const cJSON *obj) {
  if (!cJSON_IsObject(obj)) return fail_field(c, rec, NULL, "expected an object, got %s", json_type_name(obj));
  if (c->fmt == DATASET_FORMAT_AUTO) {
    c->fmt = detect_format(obj);
    if (c->fmt == DATASET_FORMAT_AUTO)
      return fail_field(c, rec, NULL, "cannot tell the format from its keys: expected instruction+output "
                        "(alpaca), prompt+response+is_safe+category (beavertails) or refusal; or name the format");
    c->out->format = c->fmt;
  }
  if (check_utf8_tree(c, rec, obj, NULL)) return -1;
  char *category = NULL;
  int is_safe = -1, rc = 0;
  switch (c->fmt) {
    case DATASET_FORMAT_ALPACA: {
      const char *ins, *inp, *outp;
      if (need_string(c, rec, obj, "instruction", &ins) || opt_string(c, rec, obj, "input", &inp) ||
          need_string(c, rec, obj, "output", &outp) || read_is_safe(c, rec, obj, 0, &is_safe) ||
          read_category(c, rec, obj, 0, &category))
        rc = -1;
      else
        example_set_push(c->out, ins, inp, outp, is_safe, category);
      break;
    }
    case DATASET_FORMAT_BEAVERTAILS: {
      const char *prompt, *response;
      if (need_string(c, rec, obj, "prompt", &prompt) || need_string(c, rec, obj, "response", &response) ||
          read_is_safe(c, rec, obj, 1, &is_safe) || read_category(c, rec, obj, 1, &category))
        rc = -1;
      else
        example_set_push(c->out, prompt, "", response, is_safe, category);
      break;
    }
    case DATASET_FORMAT_REFUSAL: {
      const char *text;
      char *q = NULL, *a = NULL;
      /* The stored answer is the refusal, so the example is safe whatever the row's
       * is_safe says about its original response. */
      if (need_string(c, rec, obj, "refusal", &text) || split_refusal(c, rec, text, &q, &a) ||
          read_category(c, rec, obj, 0, &category))
        rc = -1;
      else
        example_set_push(c->out, q, "", a, 1, category);
      free(q);
      free(a);
      break;
    }
    default:
      TV_CHECK(0, "unreachable dataset format %d", (int)c->fmt);
  }
  free(category);
  return rc;
}

static int only_space(const char *p, const char *end) {
  for (; p < end; p++)
    if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') return 0;
  return 1;
}

/* One JSON Lines line (without its newline); blank lines are skipped. */
static int parse_line(ParseCtx *c, size_t lineno, const char *line, size_t len) {
  if (only_space(line, line + len)) return 0;
  const char *end = NULL;
  cJSON *obj = cJSON_ParseWithLengthOpts(line, len, &end, 0);
  if (!obj) {
    size_t col = end && end >= line ? (size_t)(end - line) + 1 : 1;
    return fail_field(c, lineno, NULL, "invalid JSON near column %zu (JSON Lines: one object per line)", col);
  }
  int rc;
  if (!only_space(end, line + len))
    rc = fail_field(c, lineno, NULL, "unexpected text after the object at column %zu",
                    (size_t)(end - line) + 1);
  else
    rc = add_record(c, lineno, obj);
  cJSON_Delete(obj);
  return rc;
}

/* Which array element an error offset falls in: top-level commas before it, outside
 * strings. cJSON reports only a position, and a record index is what a user can act on. */
static size_t array_record_at(const char *text, size_t off) {
  size_t rec = 0;
  int depth = 0, in_str = 0, esc = 0;
  for (size_t i = 0; i < off; i++) {
    char ch = text[i];
    if (in_str) {
      if (esc) esc = 0;
      else if (ch == '\\') esc = 1;
      else if (ch == '"') in_str = 0;
      continue;
    }
    if (ch == '"') in_str = 1;
    else if (ch == '[' || ch == '{') depth++;
    else if (ch == ']' || ch == '}') depth--;
    else if (ch == ',' && depth == 1) rec++;
  }
  return rec;
}

static void line_col(const char *text, size_t off, size_t *line, size_t *col) {
  *line = 1;
  size_t start = 0;
  for (size_t i = 0; i < off; i++)
    if (text[i] == '\n') { (*line)++; start = i + 1; }
  *col = off - start + 1;
}

static int parse_array(ParseCtx *c, const char *text, size_t len) {
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
  if (!root) {
    size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0, line, col;
    line_col(text, off, &line, &col);
    return fail_field(c, array_record_at(text, off), NULL, "invalid JSON at line %zu column %zu", line, col);
  }
  int rc = 0;
  if (!only_space(end, text + len)) {
    size_t line, col;
    line_col(text, (size_t)(end - text), &line, &col);
    snprintf(c->err, c->errlen, "%s: unexpected text after the JSON array at line %zu column %zu",
             c->name, line, col);
    rc = -1;
  } else if (!cJSON_IsArray(root)) {
    snprintf(c->err, c->errlen, "%s: expected a JSON array of records", c->name);
    rc = -1;
  } else {
    size_t i = 0;
    for (const cJSON *it = root->child; it && rc == 0; it = it->next, i++) rc = add_record(c, i, it);
  }
  cJSON_Delete(root);
  return rc;
}

/* Skips a UTF-8 byte-order mark and leading white space; returns the offset of the first
 * significant byte (== len when there is none). */
static size_t first_significant(const char *text, size_t len) {
  size_t i = 0;
  if (len >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB &&
      (unsigned char)text[2] == 0xBF)
    i = 3;
  while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r')) i++;
  return i;
}

static int finish(ParseCtx *c, int rc) {
  if (rc == 0 && c->out->n == 0) {
    snprintf(c->err, c->errlen, "%s: no records", c->name);
    rc = -1;
  }
  if (rc) { /* nothing is left for the caller to free */
    example_set_free(c->out);
    memset(c->out, 0, sizeof *c->out);
  }
  return rc;
}

static int bad_start(ParseCtx *c, const char *text, size_t len, size_t i) {
  if (i == len)
    snprintf(c->err, c->errlen, "%s: empty file (expected a JSON array or JSON Lines)", c->name);
  else
    snprintf(c->err, c->errlen, "%s: expected a JSON array ('[') or JSON Lines ('{'), found '%c' at byte %zu",
             c->name, text[i] >= 32 && text[i] < 127 ? text[i] : '?', i);
  return -1;
}

int dataset_parse(const char *name, const char *text, size_t len, DatasetFormat fmt,
                  ExampleSet *out, char *err, size_t errlen) {
  example_set_init(out, name);
  ParseCtx c = {.name = name, .fmt = fmt, .array = 0, .out = out, .err = err, .errlen = errlen};
  out->format = fmt;
  size_t i = first_significant(text, len);
  if (i == len || (text[i] != '[' && text[i] != '{')) return finish(&c, bad_start(&c, text, len, i));
  if (text[i] == '[') {
    c.array = 1;
    return finish(&c, parse_array(&c, text + i, len - i));
  }
  int rc = 0;
  size_t lineno = 1, pos = 0;
  while (pos < len && rc == 0) {
    const char *nl = memchr(text + pos, '\n', len - pos);
    size_t end = nl ? (size_t)(nl - text) : len;
    /* The BOM belongs to the first line's bytes; drop it from what cJSON sees. */
    size_t from = pos == 0 ? (i < end ? i : end) : pos;
    rc = parse_line(&c, lineno, text + from, end - from);
    pos = end + 1;
    lineno++;
  }
  return finish(&c, rc);
}

static char *read_all(FILE *f, size_t *len) {
  size_t cap = 1 << 16, n = 0;
  char *buf = tv_malloc(cap);
  size_t got;
  while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap) {
      cap *= 2;
      buf = realloc(buf, cap);
      TV_CHECK(buf, "out of memory reading a dataset (%zu bytes)", cap);
    }
  }
  *len = n;
  return buf;
}

void dataset_load(const char *path, DatasetFormat fmt, ExampleSet *out) {
  char err[512];
  FILE *f = fopen(path, "rb");
  if (!f) tv_die("cannot open dataset %s: %s", path, strerror(errno));
  /* Peek at the first bytes only: a JSON Lines file is then streamed, never held whole. */
  char head[4096];
  size_t hn = fread(head, 1, sizeof head, f), i = first_significant(head, hn);
  int stream = i < hn && head[i] == '{';
  if (!stream) {
    rewind(f);
    size_t len;
    char *text = read_all(f, &len);
    int bad = ferror(f);
    fclose(f);
    if (bad) tv_die("cannot read dataset %s", path);
    int rc = dataset_parse(path, text, len, fmt, out, err, sizeof err);
    free(text);
    if (rc) {
      example_set_free(out);
      tv_die("%s", err);
    }
    return;
  }
  rewind(f);
  example_set_init(out, path);
  out->format = fmt;
  ParseCtx c = {.name = path, .fmt = fmt, .array = 0, .out = out, .err = err, .errlen = sizeof err};
  char *line = NULL;
  size_t cap = 0, lineno = 1;
  ssize_t n;
  int rc = 0;
  while (rc == 0 && (n = getline(&line, &cap, f)) >= 0) {
    size_t len = (size_t)n, from = 0;
    if (lineno == 1) from = first_significant(line, len) < len ? first_significant(line, len) : len;
    if (len > from && line[len - 1] == '\n') len--;
    rc = parse_line(&c, lineno, line + from, len - from);
    lineno++;
  }
  if (rc == 0 && ferror(f)) {
    snprintf(err, sizeof err, "%s: read error after line %zu", path, lineno - 1);
    rc = -1;
  }
  free(line);
  fclose(f);
  if (finish(&c, rc)) {
    example_set_free(out);
    tv_die("%s", err);
  }
}
