/* A subcommand's command line through the key table (see run_config_parse_command): the
 * option --KEY of `tvaccine CMD` is the key CMD.KEY, so one table types, range-checks and
 * documents every option of every command, on the command line and in YAML alike. */
#include <stdio.h>
#include <string.h>

#include "run_config.h"
#include "run_config_internal.h"

void run_config_section_keys(const char *section, char *buf, size_t n) {
  size_t len = strlen(section), off = 0;
  buf[0] = 0;
  for (int i = 0; i < RC_N_KEYS && off < n; i++)
    if (!strncmp(rc_keys[i].name, section, len) && rc_keys[i].name[len] == '.')
      off += (size_t)snprintf(buf + off, n - off, "%s%s", off ? ", " : "", rc_keys[i].name);
}

/* The key of option `name` (as typed, '-' or '_') in `section`, or NULL. */
static const RcKey *section_key(const char *section, const char *name, size_t name_len) {
  char dotted[128];
  if (name_len > 64) return NULL;
  int k = snprintf(dotted, sizeof dotted, "%s.%.*s", section, (int)name_len, name);
  for (char *p = dotted + strlen(section) + 1; p < dotted + k; p++)
    if (*p == '-') *p = '_';
  return rc_find_key(dotted);
}

/* Sets key k from the text of option `shown` ("--steps", "--set steps"); an error line names
 * the option as typed and the key. */
static const char *set_from(RunConfig *c, const RcKey *k, const char *shown, const char *value,
                            char *err, size_t errlen) {
  RunConfig trial;
  char msg[RUN_CONFIG_ERR_MAX];
  run_config_copy(&trial, c);
  if (rc_set_scalar(&trial, k, value, msg, sizeof msg)) {
    run_config_free(&trial);
    size_t klen = strlen(k->name);
    const char *what = !strncmp(msg, k->name, klen) && msg[klen] == ':' ? msg + klen + 1 : msg;
    snprintf(err, errlen, "%s (%s):%s", shown, k->name, what);
    return err;
  }
  run_config_free(c);
  *c = trial;
  return NULL;
}

static const char *unknown(const char *section, const char *option, char *err, size_t errlen) {
  char keys[RUN_CONFIG_ERR_MAX], shown[80];
  run_config_section_keys(section, keys, sizeof keys);
  snprintf(err, errlen, "%s: unknown option %s (its options are the keys %s; try --help)",
           section, rc_shown(option, shown, sizeof shown), keys);
  return err;
}

const char *run_config_parse_command(RunConfig *c, const char *section, int argc, char **argv,
                                     int *help, char *err, size_t errlen) {
  return run_config_parse_command_others(c, section, argc, argv, help, NULL, NULL, err, errlen);
}

const char *run_config_parse_command_others(RunConfig *c, const char *section, int argc,
                                            char **argv, int *help, const char **others,
                                            int *n_others, char *err, size_t errlen) {
  char shown[80];
  if (n_others) *n_others = 0;
  *help = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      *help = 1;
      return NULL;
    }
    if (strncmp(a, "--", 2) != 0 || !a[2])
      return snprintf(err, errlen, "%s: unexpected argument '%s' (try --help)", section,
                      rc_shown(a, shown, sizeof shown)),
             err;
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
    if (name_len == 3 && !strncmp(name, "set", 3)) {
      const char *assignment = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
      const char *value = assignment ? strchr(assignment, '=') : NULL;
      if (!value)
        return snprintf(err, errlen, "%s: --set expects KEY=VALUE, got '%s'", section,
                        assignment ? rc_shown(assignment, shown, sizeof shown) : ""),
               err;
      /* "synth.layers" or "layers": a key of this section either way -- except where other
       * keys pass through (attack), whose own keys are then always dotted. */
      const char *key = assignment;
      size_t slen = strlen(section);
      int dotted = !strncmp(key, section, slen) && key[slen] == '.';
      if (dotted) key += slen + 1;
      const RcKey *k = dotted || !others ? section_key(section, key, (size_t)(value - key)) : NULL;
      char opt[160];
      snprintf(opt, sizeof opt, "--set %.*s", (int)(value - assignment), assignment);
      if (!k && others) {
        others[(*n_others)++] = assignment;
        continue;
      }
      if (!k) return unknown(section, opt, err, errlen);
      if (set_from(c, k, opt, value + 1, err, errlen)) return err;
      continue;
    }
    const RcKey *k = section_key(section, name, name_len);
    char opt[80];
    snprintf(opt, sizeof opt, "--%.*s", (int)(name_len < 60 ? name_len : 60), name);
    if (!k) return unknown(section, opt, err, errlen);
    const char *value;
    if (eq)
      value = eq + 1;
    else if (k->kind == K_BOOL)
      value = "true"; /* a bare flag: --merge */
    else if (i + 1 < argc)
      value = argv[++i];
    else
      return snprintf(err, errlen, "%s: option %s (%s) needs a value", section, opt, k->name),
             err;
    if (set_from(c, k, opt, value, err, errlen)) return err;
  }
  return NULL;
}
