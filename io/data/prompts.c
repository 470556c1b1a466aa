/* Prompt files (see prompts.h): the dataset formats through dataset_load, plain text here. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "prompts.h"

int prompt_format_check(const char *name) {
  DatasetFormat f;
  return !strcmp(name, "plain") || dataset_format_parse(name, &f) == 0 ? 0 : -1;
}

/* One instruction per line (a final line without newline counts; CR before LF dropped). */
static void load_plain(const char *path, ExampleSet *out) {
  FILE *f = fopen(path, "rb");
  if (!f) tv_die("cannot open prompt file %s: %s", path, strerror(errno));
  example_set_init(out, path);
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  size_t lineno = 0;
  while ((len = getline(&line, &cap, f)) >= 0) {
    lineno++;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
    if ((size_t)len != strlen(line))
      tv_die("prompt file %s: line %zu holds a NUL byte", path, lineno);
    int blank = 1;
    for (ssize_t i = 0; i < len && blank; i++) blank = line[i] == ' ' || line[i] == '\t';
    if (!blank) example_set_push(out, line, "", "", -1, "");
  }
  int bad = ferror(f);
  free(line);
  fclose(f);
  if (bad) tv_die("cannot read prompt file %s", path);
}

void prompts_load(const char *path, const char *format, size_t max_rows, ExampleSet *out) {
  DatasetFormat fmt = DATASET_FORMAT_AUTO;
  if (!strcmp(format, "plain")) {
    load_plain(path, out);
  } else {
    if (dataset_format_parse(format, &fmt) != 0)
      tv_die("unknown prompt format '%s' (auto, alpaca, beavertails, refusal or plain)", format);
    dataset_load(path, fmt, out);
  }
  if (out->n == 0) tv_die("prompt file %s holds no prompt", path);
  if (max_rows > 0 && out->n > max_rows) {
    for (size_t i = max_rows; i < out->n; i++) {
      Example *e = &out->items[i];
      free(e->instruction), free(e->input), free(e->output), free(e->category);
    }
    out->n = max_rows;
  }
}
