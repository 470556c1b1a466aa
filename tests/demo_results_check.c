/* Checks a demo's results.json without the demo's code: every method has its aligned cell and
 * one attacked cell per p of the list given, every measure is a number in [0, 100], and the
 * alignment cost (median step time, step memory, peak RSS) is present and positive.
 * Usage: demo_results_check RESULTS.json P1,P2,...  (exit 0 = ok) */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define FAIL(...) (fprintf(stderr, "FAILED: " __VA_ARGS__), fputc('\n', stderr), failures++)

static const char *measures[] = {"harmful_score", "fine_tune_accuracy", "second_task_accuracy",
                                 "refusal_rate"};

static void check_cell(const cJSON *cell, const char *where) {
  if (!cJSON_IsObject(cell)) {
    FAIL("%s: no cell", where);
    return;
  }
  for (int k = 0; k < 4; k++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cell, measures[k]);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= 100))
      FAIL("%s: %s is not a percentage", where, measures[k]);
  }
}

int main(int argc, char **argv) {
  if (argc != 3) return fprintf(stderr, "usage: demo_results_check RESULTS.json P-LIST\n"), 2;
  FILE *f = fopen(argv[1], "rb");
  if (!f) return fprintf(stderr, "FAILED: cannot open %s\n", argv[1]), 1;
  static char text[1 << 20];
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  cJSON *root = cJSON_ParseWithLength(text, n);
  if (!root) return fprintf(stderr, "FAILED: %s is not valid JSON\n", argv[1]), 1;
  double p[16];
  int n_p = 0;
  for (char *s = argv[2], *end; *s && n_p < 16; s = *end ? end + 1 : end) p[n_p++] = strtod(s, &end);

  check_cell(cJSON_GetObjectItemCaseSensitive(root, "base"), "base");
  const cJSON *ps = cJSON_GetObjectItemCaseSensitive(root, "p");
  if (cJSON_GetArraySize(ps) != n_p) FAIL("p lists %d fractions, expected %d", cJSON_GetArraySize(ps), n_p);
  const char *methods[] = {"sft", "vaccine", "tvaccine"};
  const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "methods");
  if (cJSON_GetArraySize(list) != 3) FAIL("methods holds %d entries, expected 3", cJSON_GetArraySize(list));
  for (int m = 0; m < 3 && m < cJSON_GetArraySize(list); m++) {
    const cJSON *o = cJSON_GetArrayItem(list, m);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "method");
    if (!cJSON_IsString(name) || strcmp(name->valuestring, methods[m]))
      FAIL("methods[%d] is not %s", m, methods[m]);
    char where[96];
    snprintf(where, sizeof where, "%s aligned", methods[m]);
    check_cell(cJSON_GetObjectItemCaseSensitive(o, "aligned"), where);
    const cJSON *att = cJSON_GetObjectItemCaseSensitive(o, "attacked");
    if (cJSON_GetArraySize(att) != n_p) FAIL("%s: %d attacked cells, expected %d", methods[m], cJSON_GetArraySize(att), n_p);
    for (int i = 0; i < n_p && i < cJSON_GetArraySize(att); i++) {
      const cJSON *c = cJSON_GetArrayItem(att, i);
      snprintf(where, sizeof where, "%s attacked at p=%g", methods[m], p[i]);
      check_cell(c, where);
      const cJSON *pv = cJSON_GetObjectItemCaseSensitive(c, "p");
      if (!cJSON_IsNumber(pv) || fabs(pv->valuedouble - p[i]) > 1e-12) FAIL("%s: wrong p", where);
    }
    const cJSON *cost = cJSON_GetObjectItemCaseSensitive(o, "alignment");
    const char *costs[] = {"median_step_s", "step_memory_mib", "peak_rss_mib"};
    for (int k = 0; k < 3; k++) {
      const cJSON *v = cJSON_GetObjectItemCaseSensitive(cost, costs[k]);
      if (!cJSON_IsNumber(v) || !(v->valuedouble > 0) || !isfinite(v->valuedouble))
        FAIL("%s: alignment %s missing or not positive", methods[m], costs[k]);
    }
  }
  cJSON_Delete(root);
  if (failures) return 1;
  printf("ok: results.json has every cell (3 methods x %d fractions, base, alignment cost)\n", n_p);
  return 0;
}
