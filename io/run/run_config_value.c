/* Each key's values (see run_config_internal.h): parsing and the type and range rules of
 * every key, validation, and the YAML writer. */
#include <ctype.h>
#include <stddef.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "run_config_internal.h"

/* ---- values: parsing, range checks, formatting ----------------------------------------- */

const char *rc_shown(const char *s, char *buf, size_t n) {
  size_t i = 0;
  for (; s[i] && i < 60 && i + 4 < n; i++) buf[i] = iscntrl((unsigned char)s[i]) ? '?' : s[i];
  if (s[i]) buf[i++] = '.', buf[i++] = '.', buf[i++] = '.';
  buf[i] = 0;
  return buf;
}

/* Strict decimal integer: optional sign and digits only (no 0x10, 1e3, 3.5 or " 5").
 * 0 = ok, 1 = not an integer, 2 = does not fit. */
static int parse_i64(const char *s, int64_t *v) {
  const char *p = s + (*s == '+' || *s == '-');
  if (!*p) return 1;
  for (const char *q = p; *q; q++)
    if (!isdigit((unsigned char)*q)) return 1;
  errno = 0;
  long long x = strtoll(s, NULL, 10);
  if (errno == ERANGE) return 2;
  *v = x;
  return 0;
}

/* Shortest decimal text that reads back to exactly this float (or double). */
static void fmt_float(float v, char *buf, size_t n) {
  for (int p = 1; p <= 9; p++)
    if (snprintf(buf, n, "%.*g", p, (double)v), strtof(buf, NULL) == v) return;
}
static void fmt_double(double v, char *buf, size_t n) {
  for (int p = 1; p <= 17; p++)
    if (snprintf(buf, n, "%.*g", p, v), strtod(buf, NULL) == v) return;
}

static void range_text(const RcKey *k, char *buf, size_t n) {
  if (k->kind == K_INT || k->kind == K_I64 || k->kind == K_LAYERS) {
    if (k->ihi == INT_MAX)
      snprintf(buf, n, ">= %" PRId64, k->ilo);
    else
      snprintf(buf, n, "in %" PRId64 "..%" PRId64, k->ilo, k->ihi);
  } else {
    real_bounds_text(&k->bounds, buf, n);
  }
}

static int out_of_range(const RcKey *k, const char *text, char *msg, size_t n) {
  char r[64], s[80];
  range_text(k, r, sizeof r);
  snprintf(msg, n, "%s: %s is out of range: must be %s", k->name, rc_shown(text, s, sizeof s), r);
  return -1;
}

static int num_in_range(const RcKey *k, double v) {
  return real_bounds_hold(&k->bounds, v);
}

static int enum_index(const RcKey *k, const char *s) {
  for (int i = 0; i < k->n_names; i++)
    if (!strcmp(s, k->names[i])) return i;
  return -1;
}

static int not_one_of(const char *key, const char *text, const char *const *names, int count,
                      const char *(*name_of)(int), char *msg, size_t n) {
  char s[80];
  int len = snprintf(msg, n, "%s: '%s' is not one of ", key, rc_shown(text, s, sizeof s));
  for (int i = 0; i < count && len > 0 && (size_t)len < n; i++)
    len +=
        snprintf(msg + len, n - (size_t)len, "%s%s", i ? ", " : "", names ? names[i] : name_of(i));
  return -1;
}
static const char *target_name_of(int i) { return lora_target_name((LoraTarget)i); }

/* Range and consistency of one key's current value (validation, and after every assignment).
 * 0 = fine, -1 = msg holds the error line. */
static int check_key(const RunConfig *c, const RcKey *k, char *msg, size_t n) {
  char t[64];
  const void *p = rc_at_c(c, k);
  switch (k->kind) {
    case K_STR: TV_CHECK(*(char *const *)p, "run config key %s has no string", k->name); return 0;
    case K_U64: return 0;
    case K_BOOL:
      if (*(const int *)p == 0 || *(const int *)p == 1) return 0;
      return snprintf(msg, n, "%s: must be true or false", k->name), -1;
    case K_ENUM: {
      int v;
      memcpy(&v, p, sizeof v);
      if (v >= 0 && v < k->n_names) return 0;
      snprintf(t, sizeof t, "%d", v);
      return not_one_of(k->name, t, k->names, k->n_names, NULL, msg, n);
    }
    case K_INT:
    case K_I64: {
      int64_t v = k->kind == K_INT ? *(const int *)p : *(const int64_t *)p;
      if (v >= k->ilo && v <= k->ihi) return 0;
      snprintf(t, sizeof t, "%" PRId64, v);
      return out_of_range(k, t, msg, n);
    }
    case K_FLOAT:
    case K_DOUBLE: {
      double v = k->kind == K_FLOAT ? (double)*(const float *)p : *(const double *)p;
      if (num_in_range(k, v)) return 0;
      if (k->kind == K_FLOAT)
        fmt_float((float)v, t, sizeof t);
      else
        fmt_double(v, t, sizeof t);
      if (!isfinite(v))
        return snprintf(msg, n, "%s: expected a finite number, got '%s'", k->name, t), -1;
      return out_of_range(k, t, msg, n);
    }
    case K_MODULES:
      if (c->lora.target_mask && !(c->lora.target_mask >> LORA_NUM_TARGETS)) return 0;
      return snprintf(msg, n,
                      "%s: must name at least one of q_proj, k_proj, v_proj, o_proj, "
                      "gate_proj, up_proj, down_proj",
                      k->name),
             -1;
    case K_LAYERS: {
      const int *list = rc_list_of_c(c, k);
      for (int i = 0; i < rc_count_of_c(c, k); i++) {
        int l = list[i];
        if (l < k->ilo || l > k->ihi)
          return snprintf(t, sizeof t, "%d", l), out_of_range(k, t, msg, n);
        for (int j = 0; j < i && k->distinct; j++)
          if (list[j] == l) return snprintf(msg, n, "%s: layer %d is listed twice", k->name, l), -1;
      }
      return 0;
    }
  }
  return 0;
}

int rc_set_scalar(RunConfig *c, const RcKey *k, const char *text, char *msg, size_t n) {
  char s[80];
  void *p = rc_at(c, k);
  int64_t iv;
  switch (k->kind) {
    case K_STR:
      free(*(char **)p);
      *(char **)p = rc_dup_str(text);
      return 0;
    case K_BOOL:
      if (strcmp(text, "true") && strcmp(text, "false"))
        return snprintf(msg, n, "%s: expected true or false, got '%s'", k->name,
                        rc_shown(text, s, sizeof s)),
               -1;
      *(int *)p = !strcmp(text, "true");
      return 0;
    case K_ENUM: {
      int v = enum_index(k, text);
      if (v < 0) return not_one_of(k->name, text, k->names, k->n_names, NULL, msg, n);
      memcpy(p, &v, sizeof v);
      return 0;
    }
    case K_INT:
    case K_I64: {
      int r = parse_i64(text, &iv);
      if (r == 1)
        return snprintf(msg, n, "%s: expected an integer, got '%s'", k->name,
                        rc_shown(text, s, sizeof s)),
               -1;
      if (r == 2 || iv < k->ilo || iv > k->ihi) return out_of_range(k, text, msg, n);
      if (k->kind == K_INT)
        *(int *)p = (int)iv;
      else
        *(int64_t *)p = iv;
      return 0;
    }
    case K_U64: {
      int digits = *text != 0;
      for (const char *q = text; *q; q++) digits &= isdigit((unsigned char)*q) != 0;
      errno = 0;
      unsigned long long v = digits ? strtoull(text, NULL, 10) : 0;
      if (!digits && parse_i64(text, &iv) == 1)
        return snprintf(msg, n, "%s: expected an integer, got '%s'", k->name,
                        rc_shown(text, s, sizeof s)),
               -1;
      if (!digits || errno == ERANGE) /* negative, or past 2^64 - 1 */
        return snprintf(msg, n, "%s: %s is out of range: must be in 0..%" PRIu64, k->name,
                        rc_shown(text, s, sizeof s), UINT64_MAX),
               -1;
      *(uint64_t *)p = v;
      return 0;
    }
    case K_FLOAT:
    case K_DOUBLE: {
      char *end;
      double d = *text && !isspace((unsigned char)*text) ? strtod(text, &end) : NAN;
      if (!*text || isspace((unsigned char)*text) || *end)
        return snprintf(msg, n, "%s: expected a number, got '%s'", k->name,
                        rc_shown(text, s, sizeof s)),
               -1;
      if (!isfinite(d))
        return snprintf(msg, n, "%s: expected a finite number, got '%s'", k->name,
                        rc_shown(text, s, sizeof s)),
               -1;
      if (k->kind == K_DOUBLE) {
        *(double *)p = d;
      } else {
        float f = strtof(text, NULL); /* direct: rounding through double could differ */
        if (!isfinite(f))
          return snprintf(msg, n, "%s: %s is out of range: too large", k->name,
                          rc_shown(text, s, sizeof s)),
                 -1;
        *(float *)p = f;
      }
      if (!num_in_range(k, d)) return out_of_range(k, text, msg, n);
      return 0;
    }
    default: TV_CHECK(0, "rc_set_scalar on list key %s", k->name);
  }
  return 0;
}

int rc_set_list(RunConfig *c, const RcKey *k, char *const *items, unsigned count, char *msg,
                size_t n) {
  char s[80];
  if (k->kind == K_MODULES) {
    unsigned mask = 0;
    for (unsigned i = 0; i < count; i++) {
      int t = 0;
      while (t < LORA_NUM_TARGETS && strcmp(items[i], lora_target_name((LoraTarget)t))) t++;
      if (t == LORA_NUM_TARGETS)
        return not_one_of(k->name, items[i], NULL, LORA_NUM_TARGETS, target_name_of, msg, n);
      if (mask & (1u << t))
        return snprintf(msg, n, "%s: '%s' is listed twice", k->name, items[i]), -1;
      mask |= 1u << t;
    }
    c->lora.target_mask = mask;
    return check_key(c, k, msg, n);
  }
  int *layers = count ? tv_malloc(count * sizeof(int)) : NULL;
  for (unsigned i = 0; i < count; i++) {
    int64_t v;
    int r = parse_i64(items[i], &v);
    if (r == 1) {
      free(layers);
      return snprintf(msg, n, "%s: expected an integer%s, got '%s'", k->name,
                      k->distinct ? " layer index" : "", rc_shown(items[i], s, sizeof s)),
             -1;
    }
    if (r == 2 || v < k->ilo || v > k->ihi) return free(layers), out_of_range(k, items[i], msg, n);
    layers[i] = (int)v;
  }
  free(*rc_list_of(c, k));
  *rc_list_of(c, k) = layers;
  *rc_count_of(c, k) = (int)count;
  return check_key(c, k, msg, n);
}

const char *run_config_validate(const RunConfig *c, char *err, size_t errlen) {
  for (int i = 0; i < RC_N_KEYS; i++)
    if (check_key(c, &rc_keys[i], err, errlen)) return err;
  static const struct {
    const char *key, *what;
    size_t off;
  } required[] = {
      {"model", "the Hugging Face model folder", offsetof(RunConfig, model)},
      {"data", "the alignment data file", offsetof(RunConfig, data)},
      {"out", "the output folder", offsetof(RunConfig, out)},
  };
  for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
    if (!**(char *const *)((const char *)c + required[i].off))
      return snprintf(err, errlen, "%s: required (%s); set it in the config or with --set %s=PATH",
                      required[i].key, required[i].what, required[i].key),
             err;
  if (c->micro_batch > c->batch_size)
    return snprintf(err, errlen,
                    "micro_batch: %d is out of range: must be <= batch_size (%d); "
                    "0 means the whole batch",
                    c->micro_batch, c->batch_size),
           err;
  if (c->dist.micro_batches > c->batch_size)
    return snprintf(err, errlen,
                    "dist.micro_batches: %d is out of range: must be <= batch_size (%d); "
                    "0 means micro_batch decides",
                    c->dist.micro_batches, c->batch_size),
           err;
  if (c->dist.micro_batches && c->micro_batch)
    return snprintf(err, errlen,
                    "dist.micro_batches: %d and micro_batch: %d both split the batch; set one "
                    "(the other 0)",
                    c->dist.micro_batches, c->micro_batch),
           err;
  if (c->tvaccine.probe_batch > c->tvaccine.probe_samples)
    return snprintf(err, errlen,
                    "tvaccine.probe_batch: %d is out of range: must be <= "
                    "tvaccine.probe_samples (%d)",
                    c->tvaccine.probe_batch, c->tvaccine.probe_samples),
           err;
  return NULL;
}

/* A string as a double-quoted YAML scalar that reads back byte for byte. */
static void put_quoted(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20 || *p == 0x7f)
      fprintf(f, "\\x%02x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

void rc_put_value(FILE *f, const RunConfig *c, const RcKey *k) {
  char num[64];
  const void *p = rc_at_c(c, k);
  switch (k->kind) {
    case K_STR: put_quoted(f, *(char *const *)p); break;
    case K_ENUM: {
      int v;
      memcpy(&v, p, sizeof v);
      if (v >= 0 && v < k->n_names)
        fputs(k->names[v], f);
      else
        fprintf(f, "%d", v); /* invalid; reloading reports it */
      break;
    }
    case K_BOOL: fputs(*(const int *)p ? "true" : "false", f); break;
    case K_INT: fprintf(f, "%d", *(const int *)p); break;
    case K_I64: fprintf(f, "%" PRId64, *(const int64_t *)p); break;
    case K_U64: fprintf(f, "%" PRIu64, *(const uint64_t *)p); break;
    case K_FLOAT: fmt_float(*(const float *)p, num, sizeof num), fputs(num, f); break;
    case K_DOUBLE: fmt_double(*(const double *)p, num, sizeof num), fputs(num, f); break;
    case K_MODULES:
      fputc('[', f);
      for (int t = 0, first = 1; t < LORA_NUM_TARGETS; t++)
        if (c->lora.target_mask & (1u << t))
          fprintf(f, "%s%s", first ? "" : ", ", lora_target_name((LoraTarget)t)), first = 0;
      fputc(']', f);
      break;
    case K_LAYERS:
      fputc('[', f);
      for (int j = 0; j < rc_count_of_c(c, k); j++) fprintf(f, "%s%d", j ? ", " : "", rc_list_of_c(c, k)[j]);
      fputc(']', f);
      break;
  }
}

char *run_config_to_yaml(const RunConfig *c) {
  char *buf = NULL;
  size_t size = 0;
  FILE *f = open_memstream(&buf, &size);
  TV_CHECK(f, "open_memstream failed");
  fprintf(f, "# tvaccine run config: every key, as this run used it\n");
  int section = -1;
  for (int i = 0; i < RC_N_KEYS; i++) {
    const RcKey *k = &rc_keys[i];
    int sec = rc_key_section(k);
    if (sec != section && sec >= 0) fprintf(f, "%s:\n", rc_sections[sec]);
    section = sec;
    fprintf(f, "%s%s: ", sec >= 0 ? "  " : "", rc_key_leaf(k));
    rc_put_value(f, c, k);
    fputc('\n', f);
  }
  TV_CHECK(fclose(f) == 0, "writing the run config to memory failed");
  return buf;
}

