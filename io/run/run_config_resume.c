/* What a resumed run may change (see run_config.h): every key that changes the numbers must
 * equal the checkpoint's; the few listed here may differ. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "run_config.h"
#include "run_config_internal.h"

/* Keys a resumed run may change. Paths of inputs may move (their contents are compared by
 * digest instead); max_steps and epochs may only lengthen the run, which the caller checks
 * against the checkpoint's step count. The README lists the same keys. */
static const char *const RESUME_MAY_CHANGE[] = {
    "out",   "resume", "save_every", "log_every", "threads", "init_adapter", "max_steps",
    "epochs", "model", "tokenizer",  "data",      "tvaccine.probe_data",
    /* the grid and the stage sizes change time and memory, never the numbers */
    "dist.data_parallel", "dist.stages", "dist.split", "dist.schedule",
};

int run_config_may_change_on_resume(const char *key) {
  for (size_t i = 0; i < sizeof RESUME_MAY_CHANGE / sizeof RESUME_MAY_CHANGE[0]; i++)
    if (!strcmp(key, RESUME_MAY_CHANGE[i])) return 1;
  return 0;
}

static char *value_text(const RunConfig *c, const RcKey *k) {
  char *buf = NULL;
  size_t size = 0;
  FILE *f = open_memstream(&buf, &size);
  TV_CHECK(f, "open_memstream failed");
  rc_put_value(f, c, k);
  TV_CHECK(fclose(f) == 0, "formatting a config value failed");
  return buf;
}

const char *run_config_check_resume(const RunConfig *saved, const RunConfig *now, char *err,
                                    size_t errlen) {
  for (int i = 0; i < RC_N_KEYS; i++) {
    const RcKey *k = &rc_keys[i];
    if (run_config_may_change_on_resume(k->name)) continue;
    char *a = value_text(saved, k), *b = value_text(now, k);
    int same = !strcmp(a, b);
    if (!same) {
      char sa[80], sb[80];
      snprintf(err, errlen,
               "%s: the checkpoint's run has %s, this run %s; a resumed run cannot change a "
               "setting that changes the numbers (start a new run instead)",
               k->name, rc_shown(a, sa, sizeof sa), rc_shown(b, sb, sizeof sb));
    }
    free(a);
    free(b);
    if (!same) return err;
  }
  return NULL;
}
