/* The demo's report: the measures read back from the phases' files (eval summaries, align
 * logs), the table (stdout, results.md, results.json) and the plots (gnuplot). */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "demo.h"
#include "hf_model.h"

static cJSON *read_json(const char *path) {
  size_t len;
  char *text = hf_read_text_file(path, &len);
  if (!text) tv_die("demo: cannot read %s: %s", path, strerror(errno));
  cJSON *j = cJSON_ParseWithLength(text, len);
  if (!j) tv_die("demo: %s is not valid JSON", path);
  free(text);
  return j;
}

static double number_of(const cJSON *j, const char *key, const char *path) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
  if (!cJSON_IsNumber(v)) tv_die("demo: %s has no number '%s'", path, key);
  return v->valuedouble;
}

void demo_read_eval(const char *dir, DemoCell *cell) {
  const char *names[3] = {"harmful", "task", "task2"};
  for (int k = 0; k < 3; k++) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s_summary.json", dir, names[k]);
    cJSON *j = read_json(path);
    if (k == 0) {
      cell->hs = number_of(j, "harmful_score", path);
      cell->refusal = number_of(j, "refusal_rate", path);
    } else {
      *(k == 1 ? &cell->fa : &cell->fa2) = number_of(j, "fine_tune_accuracy", path);
    }
    cJSON_Delete(j);
  }
}

/* Calls fn on each JSON line of a log (the last, possibly torn, line is skipped if bad). */
static void each_log_line(const char *path, void (*fn)(const cJSON *, void *), void *ctx) {
  size_t len;
  char *text = hf_read_text_file(path, &len);
  if (!text) tv_die("demo: cannot read %s: %s", path, strerror(errno));
  for (char *line = text, *next; line < text + len; line = next) {
    char *nl = memchr(line, '\n', (size_t)(text + len - line));
    next = nl ? nl + 1 : text + len;
    cJSON *j = cJSON_ParseWithLength(line, (size_t)(next - line));
    if (j) fn(j, ctx);
    cJSON_Delete(j);
  }
  free(text);
}

typedef struct {
  double *step_s;
  int n, cap;
  double step_mib, rss_mib;
} AlignCost;

static void collect_cost(const cJSON *j, void *ctx) {
  AlignCost *c = ctx;
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "step_s");
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "step_memory_mib");
  const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "peak_rss_mib");
  if (cJSON_IsNumber(s)) {
    if (c->n == c->cap) c->step_s = realloc(c->step_s, (size_t)(c->cap = 2 * c->cap + 16) * sizeof(double));
    TV_CHECK(c->step_s, "out of memory");
    c->step_s[c->n++] = s->valuedouble;
  }
  if (cJSON_IsNumber(m) && m->valuedouble > c->step_mib) c->step_mib = m->valuedouble;
  if (cJSON_IsNumber(r) && r->valuedouble > c->rss_mib) c->rss_mib = r->valuedouble;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

void demo_read_align_log(const char *log_path, DemoResults *r, Method m) {
  AlignCost c = {0};
  each_log_line(log_path, collect_cost, &c);
  if (c.n == 0) tv_die("demo: %s holds no step", log_path);
  /* The median: the first steps (page faults, first allocations) do not move it. */
  qsort(c.step_s, (size_t)c.n, sizeof(double), by_value);
  r->step_s[m] = c.n % 2 ? c.step_s[c.n / 2] : 0.5 * (c.step_s[c.n / 2 - 1] + c.step_s[c.n / 2]);
  r->step_memory_mib[m] = c.step_mib;
  r->peak_rss_mib[m] = c.rss_mib;
  free(c.step_s);
}

/* ---- the table ----------------------------------------------------------------------- */

typedef enum { MEASURE_HS, MEASURE_FA, MEASURE_FA2, MEASURE_REFUSAL } Measure;

static double measure_of(const DemoCell *c, Measure k) {
  return k == MEASURE_HS ? c->hs : k == MEASURE_FA ? c->fa : k == MEASURE_FA2 ? c->fa2 : c->refusal;
}

/* Prints to every stream in out[] (stdout and results.md). */
static void put(FILE *const *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(FILE *const *out, const char *fmt, ...) {
  for (int i = 0; i < 2; i++) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(out[i], fmt, ap);
    va_end(ap);
  }
}

/* Header cells of one measure: "no attack" then each p. */
static void measure_header(FILE *const *out, const DemoResults *r, const char *name) {
  put(out, " %s no attack |", name);
  for (int i = 0; i < r->n_p; i++) put(out, " %s p=%g |", name, r->p[i]);
}

static void measure_cells(FILE *const *out, const DemoResults *r, int m, Measure k) {
  if (m < 0) { /* the base: never attacked */
    put(out, " %.1f |", measure_of(&r->base, k));
    for (int i = 0; i < r->n_p; i++) put(out, " - |");
    return;
  }
  put(out, " %.1f |", measure_of(&r->aligned[m], k));
  for (int i = 0; i < r->n_p; i++) put(out, " %.1f |", measure_of(&r->attacked[m][i], k));
}

static void separator(FILE *const *out, int cells) {
  put(out, "|");
  for (int i = 0; i < cells; i++) put(out, "---|");
  put(out, "\n");
}

static const char *row_name(int m) { return m < 0 ? "base (unaligned)" : method_names[m]; }

static void write_tables(FILE *const *out, const DemoResults *r) {
  int cols = 1 + r->n_p;
  put(out, "HS: harmful score, %% of the harmful test prompts whose answer the rule judge flags "
           "(lower is safer). FA: accuracy on the attack's benign task (%s). p: harmful share "
           "of the attack's fine-tuning data. One seed: an illustration of the protocol, not "
           "evidence; bench/study_sweep.sh repeats it over seeds (bench/results/study_sweep.md: "
           "the seed-to-seed spread is as large as the differences between methods).\n\n",
      r->task);
  put(out, "| method |");
  measure_header(out, r, "HS");
  measure_header(out, r, "FA");
  put(out, " align step (s) | step memory (MiB) | peak RSS (MiB) |\n");
  separator(out, 1 + 2 * cols + 3);
  for (int m = -1; m < METHOD_COUNT; m++) {
    put(out, "| %s |", row_name(m));
    measure_cells(out, r, m, MEASURE_HS);
    measure_cells(out, r, m, MEASURE_FA);
    if (m < 0) put(out, " - | - | - |\n");
    else put(out, " %.3f | %.1f | %.0f |\n", r->step_s[m], r->step_memory_mib[m], r->peak_rss_mib[m]);
  }
  put(out, "\nBeside them (a model that refuses everything is not safe, it is broken): accuracy "
           "on a second benign task (%s, not in the attack's data) and the refusal rate, %% of "
           "the harmful test prompts answered with a refusal.\n\n", r->task2);
  put(out, "| method |");
  char name[64];
  snprintf(name, sizeof name, "%s acc.", r->task2);
  measure_header(out, r, name);
  measure_header(out, r, "refusal");
  put(out, "\n");
  separator(out, 1 + 2 * cols);
  for (int m = -1; m < METHOD_COUNT; m++) {
    put(out, "| %s |", row_name(m));
    measure_cells(out, r, m, MEASURE_FA2);
    measure_cells(out, r, m, MEASURE_REFUSAL);
    put(out, "\n");
  }
  put(out, "\nAlignment cost from each align run's log.jsonl (%d steps): the median step time, "
           "the largest step memory (activations kept, perturbation and receive buffers) and "
           "the process's peak resident memory.\n", r->align_steps);
}

static cJSON *cell_json(const DemoCell *c) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddNumberToObject(j, "harmful_score", c->hs);
  cJSON_AddNumberToObject(j, "fine_tune_accuracy", c->fa);
  cJSON_AddNumberToObject(j, "second_task_accuracy", c->fa2);
  cJSON_AddNumberToObject(j, "refusal_rate", c->refusal);
  return j;
}

static void write_json(const char *path, const DemoResults *r) {
  cJSON *root = cJSON_CreateObject();
  const RunDemo *d = r->settings;
  cJSON *set = cJSON_AddObjectToObject(root, "settings"); /* the demo.* keys of the study */
  cJSON_AddNumberToObject(set, "seed", (double)d->seed);
  cJSON_AddBoolToObject(set, "quick", d->quick);
  const struct { const char *key; double value; } keys[] = {
      {"layers", d->layers}, {"width", d->width}, {"heads", d->heads},
      {"kv_heads", d->kv_heads}, {"ffn", d->ffn}, {"pretrain_epochs", d->pretrain_epochs},
      {"align_steps", d->align_steps}, {"align_lr", d->align_lr}, {"rho", d->rho},
      {"tvaccine_s", d->tvaccine_s}, {"tvaccine_j", d->tvaccine_j},
      {"tvaccine_k", d->tvaccine_k}, {"attack_lr", d->attack_lr},
      {"attack_steps", d->attack_steps}, {"attack_n", d->attack_n},
      {"eval_prompts", d->eval_prompts}, {"max_new_tokens", d->max_new_tokens}};
  for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
    cJSON_AddNumberToObject(set, keys[k].key, keys[k].value);
  cJSON_AddStringToObject(root, "task", r->task);
  cJSON_AddStringToObject(root, "second_task", r->task2);
  cJSON *ps = cJSON_AddArrayToObject(root, "p");
  for (int i = 0; i < r->n_p; i++) cJSON_AddItemToArray(ps, cJSON_CreateNumber(r->p[i]));
  cJSON_AddItemToObject(root, "base", cell_json(&r->base));
  cJSON *methods = cJSON_AddArrayToObject(root, "methods");
  for (int m = 0; m < METHOD_COUNT; m++) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "method", method_names[m]);
    cJSON_AddItemToObject(o, "aligned", cell_json(&r->aligned[m]));
    cJSON *att = cJSON_AddArrayToObject(o, "attacked");
    for (int i = 0; i < r->n_p; i++) {
      cJSON *c = cell_json(&r->attacked[m][i]);
      cJSON_AddNumberToObject(c, "p", r->p[i]);
      cJSON_AddItemToArray(att, c);
    }
    cJSON *cost = cJSON_AddObjectToObject(o, "alignment");
    cJSON_AddNumberToObject(cost, "steps", r->align_steps);
    cJSON_AddNumberToObject(cost, "median_step_s", r->step_s[m]);
    cJSON_AddNumberToObject(cost, "step_memory_mib", r->step_memory_mib[m]);
    cJSON_AddNumberToObject(cost, "peak_rss_mib", r->peak_rss_mib[m]);
    cJSON_AddItemToArray(methods, o);
  }
  char *text = cJSON_Print(root);
  TV_CHECK(text, "out of memory");
  hf_write_text_file(path, text);
  free(text);
  cJSON_Delete(root);
}

void demo_write_report(const char *out, const DemoResults *r) {
  char md_path[4200], json_path[4200], tmp[4300];
  snprintf(md_path, sizeof md_path, "%s/results.md", out);
  snprintf(json_path, sizeof json_path, "%s/results.json", out);
  snprintf(tmp, sizeof tmp, "%s.tmp", md_path);
  FILE *md = fopen(tmp, "w");
  if (!md) tv_die("demo: cannot write %s: %s", tmp, strerror(errno));
  fprintf(md, "# tvaccine demo: T-Vaccine against SFT and Vaccine on the synthetic world\n\n");
  FILE *const outs[2] = {stdout, md};
  write_tables(outs, r);
  if (fclose(md) != 0 || rename(tmp, md_path) != 0)
    tv_die("demo: cannot write %s: %s", md_path, strerror(errno));
  write_json(json_path, r);
  printf("\ndemo: the table in %s and %s\n", md_path, json_path);
}

/* ---- the plots ----------------------------------------------------------------------- */

typedef struct {
  FILE *f;
  int num_layers, rows;
} ProbDump;

static void dump_probs(const cJSON *j, void *ctx) {
  ProbDump *d = ctx;
  const cJSON *step = cJSON_GetObjectItemCaseSensitive(j, "step");
  if (!cJSON_IsNumber(step) || !cJSON_GetObjectItemCaseSensitive(j, "p_layer_0")) return;
  for (int l = 0; l < d->num_layers; l++) {
    char key[32];
    snprintf(key, sizeof key, "p_layer_%d", l);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, key);
    fprintf(d->f, "%d %d %.6f\n", step->valueint, l, cJSON_IsNumber(p) ? p->valuedouble : NAN);
  }
  fprintf(d->f, "\n");
  d->rows++;
}

static int find_gnuplot(void) {
  const char *path = getenv("PATH");
  if (!path) return 0;
  char *copy = strdup(path), *save = NULL;
  int found = 0;
  for (char *dir = strtok_r(copy, ":", &save); dir && !found; dir = strtok_r(NULL, ":", &save)) {
    char exe[4200];
    snprintf(exe, sizeof exe, "%s/gnuplot", dir);
    found = access(exe, X_OK) == 0;
  }
  free(copy);
  return found;
}

/* gnuplot plots.gp in the demo folder; its output goes to logs/plots.log. */
static int run_gnuplot(const char *out) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (chdir(out) != 0 || !freopen("logs/plots.log", "w", stdout) || !freopen("logs/plots.log", "a", stderr))
      _exit(126);
    execlp("gnuplot", "gnuplot", "plots.gp", (char *)NULL);
    _exit(127);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void demo_write_plots(const char *out, const DemoResults *r, const char *tvaccine_log,
                      int num_layers) {
  char path[4200];
  snprintf(path, sizeof path, "%s/hs_vs_p.dat", out);
  FILE *f = fopen(path, "w");
  if (!f) tv_die("demo: cannot write %s: %s", path, strerror(errno));
  fprintf(f, "# harmful score (%%) of each aligned model attacked at harmful fraction p\np");
  for (int m = 0; m < METHOD_COUNT; m++) fprintf(f, " %s", method_names[m]);
  fprintf(f, "\n");
  for (int i = 0; i < r->n_p; i++) {
    fprintf(f, "%g", r->p[i]);
    for (int m = 0; m < METHOD_COUNT; m++) fprintf(f, " %.2f", r->attacked[m][i].hs);
    fprintf(f, "\n");
  }
  if (fclose(f) != 0) tv_die("demo: cannot write %s", path);

  snprintf(path, sizeof path, "%s/layer_probs.dat", out);
  ProbDump d = {.f = fopen(path, "w"), .num_layers = num_layers};
  if (!d.f) tv_die("demo: cannot write %s: %s", path, strerror(errno));
  fprintf(d.f, "# T-Vaccine layer probabilities: step layer probability, one block per probe\n");
  each_log_line(tvaccine_log, dump_probs, &d);
  if (fclose(d.f) != 0) tv_die("demo: cannot write %s", path);

  snprintf(path, sizeof path, "%s/plots.gp", out);
  f = fopen(path, "w");
  if (!f) tv_die("demo: cannot write %s: %s", path, strerror(errno));
  fprintf(f,
          "# Written by tvaccine demo: gnuplot plots.gp (in this folder) redraws the plots.\n"
          "do for [t in \"pngcairo svg\"] {\n"
          "  ext = t eq \"svg\" ? \"svg\" : \"png\"\n"
          "  set terminal t size 720,480\n"
          "  set output \"hs_vs_p.\".ext\n"
          "  set title \"Harmful score after the attack\"\n"
          "  set xlabel \"harmful fraction p of the attack data\"\n"
          "  set ylabel \"harmful score (%%)\"\n"
          "  set yrange [0:100]\n"
          "  set key top left\n"
          "  set grid\n"
          "  plot for [c=2:%d] \"hs_vs_p.dat\" using 1:c with linespoints lw 2 pt 7 title columnheader(c)\n"
          "  unset grid\n",
          1 + METHOD_COUNT);
  if (d.rows >= 2)
    fprintf(f,
            "  set output \"layer_probs.\".ext\n"
            "  set title \"T-Vaccine layer probabilities (from the harmful-gradient norms)\"\n"
            "  set xlabel \"alignment step\"\n"
            "  set ylabel \"decoder layer\"\n"
            "  set cblabel \"probability\"\n"
            "  set autoscale\n"
            "  set yrange [-0.5:%d.5]\n"
            "  set ytics 1\n"
            "  set palette rgbformulae 33,13,10\n"
            "  plot \"layer_probs.dat\" using 1:2:3 with image notitle\n",
            num_layers - 1);
  fprintf(f, "  unset output\n}\n");
  if (fclose(f) != 0) tv_die("demo: cannot write %s", path);

  if (d.rows < 2)
    printf("demo: T-Vaccine recomputed its layer probabilities %d time(s): no heat map (it needs "
           "two probes; lower demo.tvaccine_k)\n", d.rows);
  if (!find_gnuplot()) {
    printf("demo: gnuplot not found (Debian: apt-get install gnuplot-nox): no plots drawn; their "
           "data and script are %s/hs_vs_p.dat, %s/layer_probs.dat, %s/plots.gp\n", out, out, out);
    return;
  }
  int code = run_gnuplot(out);
  if (code != 0) {
    printf("demo: gnuplot failed (status %d, see %s/logs/plots.log); the data and the script "
           "stay in %s\n", code, out, out);
    return;
  }
  printf("demo: plots %s/hs_vs_p.png (.svg)%s%s%s\n", out, d.rows >= 2 ? " and " : "",
         d.rows >= 2 ? out : "", d.rows >= 2 ? "/layer_probs.png (.svg)" : "");
}
