/* `tvaccine demo`, the whole study in one command: its phases (each one of the other
 * subcommands, run as a child process of this executable) and its report (table, plots). */
#ifndef TV_DEMO_H
#define TV_DEMO_H

#include "run_config.h"
#include "vaccine.h"

/* ---- phases (demo_phase.c) ----------------------------------------------------------- */

/* A growing argv (NULL-terminated), the arguments of one subcommand. */
typedef struct {
  char **v;
  int n, cap;
} DemoArgs;
void demo_args_add(DemoArgs *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void demo_args_free(DemoArgs *a);

#define DEMO_MAX_CMDS 6
#define DEMO_MAX_DEPS 2

/* One phase: up to DEMO_MAX_CMDS subcommands run in order into one log. `dir` (inside the
 * demo folder) is the phase's own output, removed before the phase runs again. */
typedef struct {
  char id[96];    /* "attack-sft-p0.05": names its stamp and its log */
  char label[96]; /* what the progress line says */
  char dir[4096];
  const char *deps[DEMO_MAX_DEPS]; /* ids of the phases whose outputs it reads */
  DemoArgs cmds[DEMO_MAX_CMDS];
  int n_cmds;
} DemoPhase;

typedef struct {
  const char *out; /* the demo folder */
  char self[4096]; /* this executable */
  char exe_id[128]; /* size and mtime of the executable: a rebuilt one redoes every phase */
  int index, total;
  int ran;         /* phases run (not reused) so far */
  double t0;
} DemoRunner;

/* Takes the demo folder (created; refused when it holds files that are not a demo's;
 * `fresh` forgets every stamp) and finds this executable. */
void demo_runner_init(DemoRunner *r, const char *out, int fresh, int total);

/* Runs the phase unless its stamp shows that the same commands already finished after the
 * phases it depends on last ran: then it is reused. Each subcommand runs as a child process
 * with its output in OUT/logs/<id>.log; a failure prints the log's tail and ends the demo.
 * Prints one progress line: "demo [k/N] label ... 12 s". Frees the phase's argument lists. */
void demo_run_phase(DemoRunner *r, DemoPhase *ph);

/* ---- results (demo_report.c) --------------------------------------------------------- */

#define DEMO_MAX_P 8

/* The measures of one model: harmful score and refusal rate on the harmful test prompts,
 * fine-tune accuracy on the attack's task, accuracy on the second benign task. */
typedef struct {
  double hs, refusal, fa, fa2;
} DemoCell;

typedef struct {
  const RunDemo *settings; /* what the study ran with (after --quick) */
  int n_p;
  double p[DEMO_MAX_P];
  const char *task, *task2;
  DemoCell base;                               /* the unaligned base model */
  DemoCell aligned[METHOD_COUNT];              /* aligned, not attacked */
  DemoCell attacked[METHOD_COUNT][DEMO_MAX_P]; /* aligned, then attacked at p[i] */
  /* From each align run's log.jsonl: median step time, the largest step memory and peak RSS. */
  double step_s[METHOD_COUNT], step_memory_mib[METHOD_COUNT], peak_rss_mib[METHOD_COUNT];
  int align_steps;
} DemoResults;

/* Reads DIR/{harmful,task,task2}_summary.json, written by `tvaccine eval`. */
void demo_read_eval(const char *dir, DemoCell *cell);
/* Step time, step memory and peak RSS of an align run's log.jsonl. */
void demo_read_align_log(const char *log_path, DemoResults *r, Method m);

/* Prints the table and writes OUT/results.md and OUT/results.json. */
void demo_write_report(const char *out, const DemoResults *r);

/* OUT/hs_vs_p.dat and OUT/layer_probs.dat (from the tvaccine align log), the gnuplot script
 * OUT/plots.gp, and with gnuplot OUT/hs_vs_p.{png,svg} and OUT/layer_probs.{png,svg}. Without
 * gnuplot it says so in one line; the data and the script stay. */
void demo_write_plots(const char *out, const DemoResults *r, const char *tvaccine_log,
                      int num_layers);

#endif
