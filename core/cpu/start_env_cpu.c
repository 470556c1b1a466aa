/* The environment the CPU backend's libraries should start with. libgomp and OpenBLAS read
 * their variables once, when they load, so the launcher applies these by restarting itself
 * (launch/main.c); a variable the user set is never changed. */
#include <stdlib.h>

#include "../backend.h"
#include "blas_select.h"

int backend_cpu_start_env(EnvVar out[CPU_START_ENV_MAX]) {
  int n = 0;
  const char *kernels = getenv("OPENBLAS_CORETYPE") ? NULL : backend_cpu_blas_upgrade();
  if (kernels) out[n++] = (EnvVar){.name = "OPENBLAS_CORETYPE", .value = kernels};
  /* A waiting OpenMP thread spins up to GOMP_SPINCOUNT pause loops before it sleeps; the
   * default (300000, milliseconds of spinning) costs a thread its fair share when another
   * process wants the core, and passive waiting (0) costs step time on a quiet machine
   * (1.28 -> 1.50 s per bench step, issue 9). A short spin (libgomp's own count for an
   * oversubscribed machine) yields the core soon (README: "Threads on a busy machine"). */
  if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT"))
    out[n++] = (EnvVar){.name = "GOMP_SPINCOUNT", .value = CPU_DEFAULT_SPINCOUNT};
  return n;
}
