/* One AdamW element update (SPEC section 4 arithmetic), written once for the CPU backend and
 * the GPU kernel so both use the same expression order and so the same float rounding. */
#ifndef TV_ADAMW_ELEMENT_H
#define TV_ADAMW_ELEMENT_H

#include <math.h>

#include "backend.h"

#ifndef TV_HOST_DEVICE
#ifdef __CUDACC__
#define TV_HOST_DEVICE __host__ __device__
#else
#define TV_HOST_DEVICE
#endif
#endif

/* decay = 1 - lr * weight_decay, formed once per block by the caller. */
static inline TV_HOST_DEVICE void adamw_element(float *p, float g, float *m, float *v,
                                                const AdamwScalars *c, float decay) {
  float gi = g * c->grad_scale;
  float pi = *p * decay;
  float mi = c->beta1 * *m + c->one_minus_beta1 * gi;
  float vi = c->beta2 * *v + c->one_minus_beta2 * gi * gi;
  *m = mi;
  *v = vi;
  *p = pi - c->lr * (mi / c->bias_correction1) / (sqrtf(vi / c->bias_correction2) + c->eps);
}

#endif
