/* The CUDA backend's constructor, seen by core/backend.c only (launch code calls
 * backend_create). Compiled into tv_core when TV_CUDA is on. */
#ifndef TV_BACKEND_CUDA_H
#define TV_BACKEND_CUDA_H

#include "../backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A backend on GPU `device`: its own stream, cuBLAS handle and scratch. No GPU, or a device
 * number past the last, is a user error (one line naming the device, exit). */
Backend *backend_cuda_create(int device);

#ifdef __cplusplus
}
#endif

#endif
