/* One function per subcommand, each in its own file; argv[0] is the command name. */
#ifndef TV_SUBCOMMANDS_H
#define TV_SUBCOMMANDS_H

#include <time.h>

int cmd_demo(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_align(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_attack(int argc, char **argv);
int cmd_plan(int argc, char **argv);

/* Their options are parsed through the run-config key table (run_config_parse_command). */

/* Seconds on the monotonic clock, for the subcommands' timings. */
static inline double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

#endif
