/* Shared pieces of `tvaccine bench`: the fixed model configs, timing helpers, and the
 * side-by-side step of the three alignment methods. */
#ifndef TV_BENCH_H
#define TV_BENCH_H

#include <stdint.h>

#include <stddef.h>

#include "schedule.h"
#include "vaccine.h"

typedef struct {
  const char *name;
  int V, D, L, H, Hkv, F, T, B, r;
} BenchConfig;

extern const BenchConfig bench_configs[]; /* M, S */
extern const int bench_config_count;

/* Random tokens [B, T] of config bc (fixed seed) with their next-token targets; returns the
 * number of targets (the last position of each row has none). */
int64_t bench_random_batch(const BenchConfig *bc, int32_t *tokens, int32_t *targets);

double bench_median(double *values, int n); /* sorts values */

/* One alignment step of sft, vaccine and tvaccine (S of L layers) on config bc. */
int bench_methods(const BenchConfig *bc, int steps, int threads, int tv_layers, int *argc,
                  char ***argv);

/* What `bench --ranks` runs besides the model config. */
typedef struct {
  int steps, m, S; /* timed steps, micro-batches of one row, T-Vaccine's layers */
  PipelineSchedule schedule;
  int D;                        /* the ranks as D pipeline replicas */
  ActivationPolicy activations; /* T-Vaccine's frozen layers */
  size_t activation_budget;     /* bytes, with ACTIVATIONS_AUTO; 0 = no limit */
} BenchRanksOptions;

/* Pipeline steps of sft, vaccine and tvaccine (A low, A mid, A high) on the ranks mpirun
 * started, 1 thread per rank (launch/bench_ranks.c). */
int bench_ranks(const BenchConfig *bc, const BenchRanksOptions *o, int *argc, char ***argv);

#endif
