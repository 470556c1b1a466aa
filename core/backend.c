/* Choosing a backend by kind: the one place that knows which backends this build has, so
 * launch code names a device and never a backend's constructor. */
#include <string.h>

#include "backend.h"
#include "check.h"
#ifdef TV_HAVE_CUDA
#include "cuda/backend_cuda.h"
#endif

const char *const backend_kind_names[BACKEND_KIND_COUNT] = {"cpu", "cuda"};

int backend_kind_parse(const char *name, BackendKind *kind) {
  if (!name) return 0;
  for (int k = 0; k < BACKEND_KIND_COUNT; k++)
    if (strcmp(name, backend_kind_names[k]) == 0) {
      *kind = (BackendKind)k;
      return 1;
    }
  return 0;
}

const char *backend_kind_name(BackendKind kind) { return backend_kind_names[kind]; }

int backend_cuda_built(void) {
#ifdef TV_HAVE_CUDA
  return 1;
#else
  return 0;
#endif
}

#ifndef TV_HAVE_CUDA
int backend_cuda_device_count(void) { return 0; }
int backend_cuda_device_of(const Backend *be) {
  (void)be;
  return -1;
}
void *backend_cuda_stream_of(const Backend *be) {
  (void)be;
  return NULL;
}
#endif

Backend *backend_create(BackendKind kind, int device, int cpu_threads) {
  if (kind == BACKEND_CPU) return backend_cpu_create(cpu_threads);
#ifdef TV_HAVE_CUDA
  return backend_cuda_create(device);
#else
  (void)device;
  tv_die("device: cuda asked for, but this tvaccine was built without the CUDA backend "
         "(configure where nvcc is found, or with -DTV_CUDA=ON)");
#endif
}
