/* Shared by the run config files only (run_config.c, run_config_value.c, run_config_load.c,
 * run_config_cli.c, run_config_resume.c): the key table that drives the libcyaml schema,
 * --set, validation and the writer, and the typed assignment of one value. */
#ifndef TV_RUN_CONFIG_INTERNAL_H
#define TV_RUN_CONFIG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "bounds.h"
#include "check.h"
#include "run_config.h"

typedef enum {
  K_STR, K_ENUM, K_INT, K_I64, K_U64, K_FLOAT, K_DOUBLE, K_BOOL, K_MODULES, K_LAYERS
} RcKind;

typedef struct {
  const char *name; /* dotted path; a section's keys are "section.leaf" */
  RcKind kind;
  size_t off;                    /* offset of the value in RunConfig */
  int64_t ilo, ihi;              /* K_INT, K_I64, entries of K_LAYERS: [ilo, ihi] */
  size_t count_off;              /* K_LAYERS (a list of ints): offset of its int count */
  int distinct;                  /* K_LAYERS: layer indices, each listed once */
  RealBounds bounds;             /* K_FLOAT, K_DOUBLE */
  const char *const *names;      /* K_ENUM */
  int n_names;
} RcKey;

/* Top-level keys first, then each section's keys together (the writer relies on it). */
#define RC_N_KEYS 143
#define RC_N_SECTIONS 12
extern const RcKey rc_keys[RC_N_KEYS];
/* lora, optim, tvaccine, dist, then the subcommands' sections */
extern const char *const rc_sections[RC_N_SECTIONS];

int rc_key_section(const RcKey *k); /* index into rc_sections, -1 = top level */
const char *rc_key_leaf(const RcKey *k);
const RcKey *rc_find_key(const char *name); /* NULL when no key has that dotted name */

/* A user's text inside a one-line message: at most 60 bytes, control characters as '?'. */
const char *rc_shown(const char *s, char *buf, size_t n);

/* Key k's value as the YAML writer writes it (strings quoted, lists in flow style). */
void rc_put_value(FILE *f, const RunConfig *c, const RcKey *k);

/* Assign a scalar's text / a list's entries to key k with the type rules, then range-check.
 * 0 = done; -1 = msg holds "key: what is wrong" (no location) and *c may be half-changed
 * (callers work on a copy). */
int rc_set_scalar(RunConfig *c, const RcKey *k, const char *text, char *msg, size_t n);
int rc_set_list(RunConfig *c, const RcKey *k, char *const *items, unsigned count, char *msg,
                size_t n);

/* Where a key's value lives in a RunConfig, for both files of the key table. */
static inline void *rc_at(RunConfig *c, const RcKey *k) { return (char *)c + k->off; }
static inline const void *rc_at_c(const RunConfig *c, const RcKey *k) {
  return (const char *)c + k->off;
}
/* A K_LAYERS key's list and its count. */
static inline int **rc_list_of(RunConfig *c, const RcKey *k) { return (int **)rc_at(c, k); }
static inline int *rc_count_of(RunConfig *c, const RcKey *k) {
  return (int *)((char *)c + k->count_off);
}
static inline const int *rc_list_of_c(const RunConfig *c, const RcKey *k) {
  return *(int *const *)rc_at_c(c, k);
}
static inline int rc_count_of_c(const RunConfig *c, const RcKey *k) {
  return *(const int *)((const char *)c + k->count_off);
}
static inline char *rc_dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  return memcpy(tv_malloc(n), s, n);
}

#endif
