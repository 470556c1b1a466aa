/* OpenBLAS only: which kernel set the CPU backend's GEMMs run, for the launcher's banner and
 * its one restart with a better OPENBLAS_CORETYPE. */
#ifndef TV_BLAS_SELECT_H
#define TV_BLAS_SELECT_H

/* The OpenBLAS kernel set in use (e.g. "SkylakeX"), and a better OPENBLAS_CORETYPE for this
 * CPU when OpenBLAS fell back to its generic kernels, else NULL. */
const char *backend_cpu_blas_name(void);
const char *backend_cpu_blas_upgrade(void);

#endif
