/* AdamW update of one parameter block on the CPU (SPEC section 4 arithmetic). */
#include <math.h>

#include "cpu_ops.h"

static void cpu_adamw(Backend *be, float *p, const float *g, float *m, float *v, size_t n,
                      float lr, float beta1, float beta2, float eps, float weight_decay,
                      float grad_scale, float bias_correction1, float bias_correction2) {
  (void)be;
  float decay = 1.0f - lr * weight_decay;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    float gi = g[i] * grad_scale;
    float pi = p[i] * decay;
    float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - lr * (mi / bias_correction1) / (sqrtf(vi / bias_correction2) + eps);
  }
}

void cpu_install_adamw(Backend *be) { be->adamw = cpu_adamw; }
