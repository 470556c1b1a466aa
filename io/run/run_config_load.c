/* Reading the run config: libcyaml loads the YAML against a schema built from the key table,
 * its log is turned into one error line, libyaml locates keys; --set reuses the same path. */
#include <cyaml/cyaml.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "check.h"
#include "run_config.h"
#include "run_config_internal.h"

/* ---- where things are in the YAML text (libyaml) -------------------------------------- */

/* 1-based line of the occurrence-th appearance of dotted key path in the first document, or
 * 0. libcyaml's backtrace locates values, not keys, so keys are found here. */
static int yaml_key_line(const char *text, size_t len, const char *path, int occurrence) {
  struct {
    int is_map, want_key;
    char key[64];
  } st[16];
  int depth = 0, found = 0, line = 0, done = 0;
  yaml_parser_t p;
  yaml_event_t ev;
  if (!yaml_parser_initialize(&p)) return 0;
  yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
  while (!done && yaml_parser_parse(&p, &ev)) {
    switch (ev.type) {
      case YAML_MAPPING_START_EVENT:
      case YAML_SEQUENCE_START_EVENT:
        if (depth == 16) {
          done = 1;
          break;
        }
        st[depth].is_map = ev.type == YAML_MAPPING_START_EVENT;
        st[depth].want_key = 1;
        st[depth++].key[0] = 0;
        break;
      case YAML_MAPPING_END_EVENT:
      case YAML_SEQUENCE_END_EVENT:
        if (--depth > 0) st[depth - 1].want_key = 1;
        break;
      case YAML_SCALAR_EVENT:
      case YAML_ALIAS_EVENT: {
        if (depth == 0 || !st[depth - 1].is_map) break;
        if (!st[depth - 1].want_key) {
          st[depth - 1].want_key = 1;
          break;
        }
        st[depth - 1].want_key = 0;
        if (ev.type != YAML_SCALAR_EVENT || ev.data.scalar.length >= 64) break;
        memcpy(st[depth - 1].key, ev.data.scalar.value, ev.data.scalar.length + 1);
        char full[16 * 65] = "";
        int ok = 1;
        for (int i = 0; i < depth && ok; i++) {
          ok = st[i].is_map;
          if (i) strcat(full, ".");
          strcat(full, st[i].key);
        }
        if (ok && !strcmp(full, path) && ++found == occurrence)
          line = (int)ev.start_mark.line + 1, done = 1;
        break;
      }
      case YAML_DOCUMENT_END_EVENT:
      case YAML_STREAM_END_EVENT: done = 1; break;
      default: break;
    }
    yaml_event_delete(&ev);
  }
  yaml_parser_delete(&p);
  return line;
}

/* libyaml's own account of a syntax error: ", line L, column C: YAML syntax error: ..." (the
 * position only with_lines). 0 when it finds none. */
static int yaml_syntax_error(const char *text, size_t len, int with_lines, char *out, size_t n) {
  yaml_parser_t p;
  yaml_event_t ev;
  int failed = 0, end = 0;
  if (!yaml_parser_initialize(&p)) return 0;
  yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
  while (!end && !failed) {
    if (!yaml_parser_parse(&p, &ev)) {
      failed = 1;
      break;
    }
    end = ev.type == YAML_STREAM_END_EVENT;
    yaml_event_delete(&ev);
  }
  if (failed && !with_lines) {
    snprintf(out, n, ": YAML syntax error: %s", p.problem ? p.problem : "unreadable");
  } else if (failed) {
    int k =
        snprintf(out, n, ", line %zu, column %zu: YAML syntax error: %s", p.problem_mark.line + 1,
                 p.problem_mark.column + 1, p.problem ? p.problem : "unreadable");
    if (p.context && k > 0 && (size_t)k < n)
      snprintf(out + k, n - (size_t)k, " (%s started on line %zu)", p.context,
               p.context_mark.line + 1);
  }
  yaml_parser_delete(&p);
  return failed;
}

/* ---- libcyaml: schema built from the table, its log turned into one line -------------- */

/* What libcyaml fills: every value as text (NULL = absent), so that the type rules are ours
 * and identical for files and --set. One Raw per mapping; a section's keys use its slots. */
typedef struct Raw Raw;
struct Raw {
  char *scalar[RC_N_KEYS];
  char **list[RC_N_KEYS];
  unsigned list_count[RC_N_KEYS];
  Raw *section[RC_N_SECTIONS];
};

typedef struct {
  cyaml_schema_field_t fields[1 + RC_N_SECTIONS][RC_N_KEYS + RC_N_SECTIONS + 1]; /* [0] top level */
  cyaml_schema_value_t entry, top;
} Schema;

static void schema_build(Schema *s) {
  int used[1 + RC_N_SECTIONS] = {0};
  memset(s, 0, sizeof *s);
  s->entry =
      (cyaml_schema_value_t){CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED)};
  for (int i = 0; i < RC_N_KEYS; i++) {
    int m = rc_key_section(&rc_keys[i]) + 1;
    cyaml_schema_field_t *f = &s->fields[m][used[m]++];
    f->key = rc_key_leaf(&rc_keys[i]);
    if (rc_keys[i].kind == K_MODULES || rc_keys[i].kind == K_LAYERS) {
      f->data_offset = (uint32_t)(offsetof(Raw, list) + (size_t)i * sizeof(char **));
      f->count_offset = (uint32_t)(offsetof(Raw, list_count) + (size_t)i * sizeof(unsigned));
      f->count_size = sizeof(unsigned);
      f->value = (cyaml_schema_value_t){CYAML_VALUE_SEQUENCE(
          CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, char *, &s->entry, 0, CYAML_UNLIMITED)};
    } else {
      f->data_offset = (uint32_t)(offsetof(Raw, scalar) + (size_t)i * sizeof(char *));
      f->value = (cyaml_schema_value_t){
          CYAML_VALUE_STRING(CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, char *, 0, CYAML_UNLIMITED)};
    }
  }
  for (int sec = 0; sec < RC_N_SECTIONS; sec++) {
    cyaml_schema_field_t *f = &s->fields[0][used[0]++];
    f->key = rc_sections[sec];
    f->data_offset = (uint32_t)(offsetof(Raw, section) + (size_t)sec * sizeof(Raw *));
    f->value = (cyaml_schema_value_t){
        CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, Raw, s->fields[1 + sec])};
  }
  s->top = (cyaml_schema_value_t){CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, Raw, s->fields[0])};
}

typedef struct {
  char text[4096];
  size_t len;
} CyLog;

/* libcyaml's log goes here instead of stderr; it is read back by explain_cyaml. */
static void cy_log(cyaml_log_t level, void *ctx, const char *fmt, va_list ap) {
  CyLog *l = ctx;
  (void)level;
  if (l->len + 1 >= sizeof l->text) return;
  int k = vsnprintf(l->text + l->len, sizeof l->text - l->len, fmt, ap);
  if (k > 0)
    l->len += (size_t)k < sizeof l->text - l->len ? (size_t)k : sizeof l->text - l->len - 1;
}

static int edit_distance(const char *a, const char *b) {
  int row[65], la = (int)strlen(a), lb = (int)strlen(b);
  if (la > 64 || lb > 64) return 99;
  for (int j = 0; j <= lb; j++) row[j] = j;
  for (int i = 1; i <= la; i++) {
    int diag = row[0];
    row[0] = i;
    for (int j = 1; j <= lb; j++) {
      int up = row[j], best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      diag = up;
      row[j] = best;
    }
  }
  return row[lb];
}

/* The known key closest to an unknown one (whole path or leaf name), or NULL. */
static const char *suggest(const char *path) {
  const char *leaf = strrchr(path, '.') ? strrchr(path, '.') + 1 : path, *best = NULL;
  int best_d = 3;
  for (int i = 0; i < RC_N_KEYS; i++) {
    int d = edit_distance(path, rc_keys[i].name),
        dl = edit_distance(leaf, rc_key_leaf(&rc_keys[i]));
    if (dl < d && strlen(leaf) > 2) d = dl;
    if (d < best_d) best_d = d, best = rc_keys[i].name;
  }
  for (int s = 0; s < RC_N_SECTIONS; s++)
    if (edit_distance(path, rc_sections[s]) < best_d)
      best_d = edit_distance(path, rc_sections[s]), best = rc_sections[s];
  return best;
}

static const char *event_words(const char *ev) {
  if (!strncmp(ev, "MAPPING", 7)) return "a mapping of keys";
  if (!strncmp(ev, "SEQUENCE", 8)) return "a list";
  if (!strncmp(ev, "SCALAR", 6)) return "a single value or nothing";
  if (!strncmp(ev, "STRING", 6)) return "a single value";
  return ev;
}

static void where(char *buf, size_t n, const char *origin, int line) {
  if (line > 0)
    snprintf(buf, n, "%s, line %d", origin, line);
  else
    snprintf(buf, n, "%s", origin);
}

/* Turns libcyaml's log (message, then backtrace innermost first) into the one error line. */
static const char *explain_cyaml(cyaml_err_t e, const CyLog *log, const char *text, size_t len,
                                 const char *origin, int with_lines, char *err, size_t errlen) {
  char msg[512] = "", names[8][64], path[600] = "", loc[400], tmp[700];
  int n_frames = 0, frame_line = 0, entry[8] = {0};
  for (const char *p = log->text; *p;) {
    const char *eol = strchr(p, '\n');
    size_t n = eol ? (size_t)(eol - p) : strlen(p);
    char line[512];
    snprintf(line, sizeof line, "%.*s", (int)(n < 511 ? n : 511), p);
    p += n + (eol != NULL);
    const char *body = strncmp(line, "Load: ", 6) ? line : line + 6;
    unsigned ln = 0;
    if (!strncmp(body, "  in ", 5) && n_frames < 8) {
      names[n_frames][0] = 0;
      entry[n_frames] = 0;
      const char *paren = strstr(body, "(line: ");
      if (paren) sscanf(paren, "(line: %u", &ln);
      if (sscanf(body, "  in mapping field '%63[^']'", names[n_frames]) == 1 ||
          sscanf(body, "  in sequence entry '%d'", &entry[n_frames]) == 1 ||
          !strncmp(body, "  in mapping", 12)) {
        if (n_frames == 0) frame_line = (int)ln;
        n_frames++;
      }
    } else if (!msg[0] && strncmp(body, "Backtrace:", 10)) {
      snprintf(msg, sizeof msg, "%s", body);
    }
  }
  static const char UNKNOWN[] = "Unexpected key: ", DUPLICATE[] = "Mapping field already seen: ";
  int is_unknown = strstr(msg, UNKNOWN) == msg, is_dup = strstr(msg, DUPLICATE) == msg;
  /* For a key error the innermost frame is the mapping holding the key; else the value's. */
  for (int i = n_frames - 1; i >= ((is_unknown || is_dup) ? 1 : 0); i--) {
    size_t k = strlen(path);
    if (names[i][0])
      snprintf(path + k, sizeof path - k, "%s%s", k ? "." : "", names[i]);
    else if (entry[i])
      snprintf(path + k, sizeof path - k, " entry %d", entry[i]);
  }
  if (is_unknown || is_dup) {
    size_t k = strlen(path);
    snprintf(path + k, sizeof path - k, "%s%s", k ? "." : "",
             msg + (is_unknown ? sizeof UNKNOWN : sizeof DUPLICATE) - 1);
    where(loc, sizeof loc, origin, with_lines ? yaml_key_line(text, len, path, is_dup ? 2 : 1) : 0);
    const char *s = is_unknown ? suggest(path) : NULL;
    if (s)
      snprintf(tmp, sizeof tmp, " (did you mean '%s'?)", s);
    else
      tmp[0] = 0;
    char key[80];
    snprintf(err, errlen, "%s key '%s' in %s%s", is_unknown ? "unknown" : "duplicate",
             rc_shown(path, key, sizeof key), loc, tmp);
    return err;
  }
  char want[32], got[32];
  if (sscanf(msg, "Expecting %31s got event: %31s", want, got) == 2) {
    want[strcspn(want, ",")] = 0;
    where(loc, sizeof loc, origin, with_lines ? frame_line : 0);
    if (!path[0])
      snprintf(err, errlen, "%s: expected a mapping of keys at the top level, got %s", loc,
               event_words(got));
    else
      snprintf(err, errlen, "%s: expected %s, got %s (%s)", path, event_words(want),
               event_words(got), loc);
    return err;
  }
  if (e == CYAML_ERR_LIBYAML_PARSER && yaml_syntax_error(text, len, with_lines, tmp, sizeof tmp)) {
    snprintf(err, errlen, "%s%s", origin, tmp);
    return err;
  }
  if (e == CYAML_OK && strstr(msg, "documents after first")) {
    snprintf(err, errlen, "%s: holds more than one YAML document ('---'); a run config is one",
             origin);
    return err;
  }
  /* Anything else libcyaml can say: its own words, still on one line. */
  where(loc, sizeof loc, origin, with_lines ? frame_line : 0);
  snprintf(err, errlen, "%s: cannot read the run config%s%s: %s", loc, path[0] ? " at " : "", path,
           msg[0] ? msg : cyaml_strerror(e));
  return err;
}

/* Assigns every value libcyaml found, in table order; the first bad one ends it. */
static int apply_raw(RunConfig *c, const Raw *raw, const char *text, size_t len, const char *origin,
                     int with_lines, char *err, size_t errlen) {
  char msg[RUN_CONFIG_ERR_MAX], loc[400];
  for (int i = 0; i < RC_N_KEYS; i++) {
    const RcKey *k = &rc_keys[i];
    int sec = rc_key_section(k);
    const Raw *r = sec < 0 ? raw : raw->section[sec];
    if (!r) continue;
    int rc = 0;
    if (k->kind == K_MODULES || k->kind == K_LAYERS) {
      /* An empty list loads as NULL, like an absent key; only the text tells them apart. */
      if (r->list[i] || yaml_key_line(text, len, k->name, 1) > 0)
        rc = rc_set_list(c, k, r->list[i], r->list_count[i], msg, sizeof msg);
    } else if (r->scalar[i]) {
      rc = rc_set_scalar(c, k, r->scalar[i], msg, sizeof msg);
    }
    if (rc) {
      where(loc, sizeof loc, origin, with_lines ? yaml_key_line(text, len, k->name, 1) : 0);
      snprintf(err, errlen, "%s (%s)", msg, loc);
      return -1;
    }
  }
  return 0;
}

static const char *load_yaml(RunConfig *c, const char *text, size_t len, const char *origin,
                             int with_lines, char *err, size_t errlen) {
  Schema *schema = tv_calloc(1, sizeof *schema);
  schema_build(schema);
  CyLog log = {.len = 0};
  log.text[0] = 0;
  cyaml_config_t cfg = {.log_fn = cy_log,
                        .log_ctx = &log,
                        .mem_fn = cyaml_mem,
                        .log_level = CYAML_LOG_WARNING,
                        .flags = CYAML_CFG_DEFAULT};
  Raw *raw = NULL;
  cyaml_err_t e =
      cyaml_load_data((const uint8_t *)text, len, &cfg, &schema->top, (cyaml_data_t **)&raw, NULL);
  const char *res = NULL;
  if (e != CYAML_OK || log.len > 0) {
    res = explain_cyaml(e, &log, text, len, origin, with_lines, err, errlen);
  } else if (raw) { /* NULL: an empty document, nothing to change */
    RunConfig next;
    run_config_copy(&next, c);
    if (apply_raw(&next, raw, text, len, origin, with_lines, err, errlen)) {
      run_config_free(&next);
      res = err;
    } else {
      run_config_free(c);
      *c = next;
    }
  }
  if (raw) cyaml_free(&cfg, &schema->top, raw, 0);
  free(schema);
  return res;
}

/* ---- the public functions ------------------------------------------------------------- */

const char *run_config_load_text(RunConfig *c, const char *text, size_t len, const char *origin,
                                 char *err, size_t errlen) {
  return load_yaml(c, text, len, origin, 1, err, errlen);
}

const char *run_config_load(RunConfig *c, const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) return snprintf(err, errlen, "cannot read run config %s: %s", path, strerror(errno)), err;
  /* A run config is small; anything past 16 MiB is not one. */
  size_t cap = 1 << 24, len = 0;
  char *text = tv_malloc(cap);
  for (size_t got; len < cap && (got = fread(text + len, 1, cap - len, f)) > 0;) len += got;
  int bad = ferror(f), huge = len == cap;
  fclose(f);
  const char *res;
  if (bad)
    res = (snprintf(err, errlen, "cannot read run config %s: read error", path), err);
  else if (huge)
    res = (snprintf(err, errlen, "run config %s is too large (over 16 MiB)", path), err);
  else
    res = load_yaml(c, text, len, path, 1, err, errlen);
  free(text);
  return res;
}

const char *run_config_set(RunConfig *c, const char *assignment, char *err, size_t errlen) {
  char s[80], origin[128];
  const char *eq = strchr(assignment, '=');
  snprintf(origin, sizeof origin, "--set %s", rc_shown(assignment, s, sizeof s));
  if (!eq || eq == assignment)
    return snprintf(err, errlen, "--set expects key=value, got '%s'",
                    rc_shown(assignment, s, sizeof s)),
           err;
  size_t klen = (size_t)(eq - assignment);
  int ok = klen < 200 && assignment[0] != '.' && eq[-1] != '.';
  for (size_t i = 0; i < klen && ok; i++) {
    char ch = assignment[i];
    ok = isalnum((unsigned char)ch) || ch == '_' || (ch == '.' && assignment[i + 1] != '.');
  }
  if (!ok)
    return snprintf(err, errlen, "%s: '%.*s' is not a key (keys look like epochs or tvaccine.S)",
                    origin, (int)(klen < 60 ? klen : 60), assignment),
           err;
  const char *value = eq + 1;
  int flow = value[0] == '[' || value[0] == '{';
  if (flow && strpbrk(value, "\r\n"))
    return snprintf(err, errlen, "%s: a [...] or {...} value must be on one line", origin), err;
  /* The key becomes nested YAML mappings, so --set goes through the loader's every rule.
   * Room: indentation grows with depth (< klen^2), an escaped byte takes up to 4. */
  size_t cap = (klen + 2) * (klen + 2) + strlen(value) * 4 + 64, n = 0;
  char *yaml = tv_malloc(cap);
  int depth = 0;
  for (size_t i = 0; i < klen; i++) {
    if (i == 0 || assignment[i - 1] == '.') n += (size_t)sprintf(yaml + n, "%*s", 2 * depth, "");
    if (assignment[i] == '.')
      n += (size_t)sprintf(yaml + n, ":\n"), depth++;
    else
      yaml[n++] = assignment[i];
  }
  n += (size_t)sprintf(yaml + n, ": ");
  if (flow) {
    n += (size_t)sprintf(yaml + n, "%s", value);
  } else { /* any text as one double-quoted scalar: paths with ':' or '#' stay intact */
    yaml[n++] = '"';
    for (const unsigned char *v = (const unsigned char *)value; *v; v++) {
      if (*v == '"' || *v == '\\')
        yaml[n++] = '\\', yaml[n++] = (char)*v;
      else if (*v < 0x20 || *v == 0x7f)
        n += (size_t)sprintf(yaml + n, "\\x%02x", *v);
      else
        yaml[n++] = (char)*v;
    }
    yaml[n++] = '"';
  }
  yaml[n++] = '\n';
  const char *res = load_yaml(c, yaml, n, origin, 0, err, errlen);
  free(yaml);
  return res;
}
