/* Alpaca JSON Lines writer (see example_write.h). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "example_write.h"

void example_set_write_jsonl(const ExampleSet *s, const char *path) {
  size_t n = strlen(path) + 5;
  char *tmp = tv_malloc(n);
  snprintf(tmp, n, "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  if (!f) tv_die("cannot write %s: %s", tmp, strerror(errno));
  for (size_t i = 0; i < s->n; i++) {
    const Example *e = &s->items[i];
    cJSON *o = cJSON_CreateObject();
    TV_CHECK(o && cJSON_AddStringToObject(o, "instruction", e->instruction) &&
                 cJSON_AddStringToObject(o, "input", e->input) &&
                 cJSON_AddStringToObject(o, "output", e->output),
             "out of memory writing %s", path);
    char *line = cJSON_PrintUnformatted(o);
    TV_CHECK(line, "out of memory writing %s", path);
    fputs(line, f);
    fputc('\n', f);
    free(line);
    cJSON_Delete(o);
  }
  int failed = ferror(f);
  if (fclose(f) != 0 || failed) tv_die("cannot write %s: %s", tmp, strerror(errno));
  if (rename(tmp, path) != 0) tv_die("cannot rename %s to %s: %s", tmp, path, strerror(errno));
  free(tmp);
}
