/* Which OpenBLAS kernels run, and whether a better set exists for this CPU. OpenBLAS 0.3.21's
 * runtime detection falls back to its Prescott (SSE3) kernels on CPUs it does not know by
 * model number, even when they have AVX-512; measured here that costs ~5x in sgemm rate.
 * The kernel set can only be chosen before OpenBLAS initialises (OPENBLAS_CORETYPE), so the
 * launcher uses this answer to restart itself once with the variable set. */
#include <string.h>
#include <strings.h>

#include "blas_select.h"

char *openblas_get_corename(void);

const char *backend_cpu_blas_name(void) { return openblas_get_corename(); }

const char *backend_cpu_blas_upgrade(void) {
#if defined(__x86_64__)
  const char *core = openblas_get_corename();
  if (!core || strcasecmp(core, "prescott") != 0) return NULL;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return NULL;
}
