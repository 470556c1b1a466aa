/* AdamW update of one parameter block on the CPU (SPEC section 4 arithmetic). */
#include <math.h>

#include "cpu_ops.h"

static void cpu_adamw(Backend *be, const AdamwBlock *block, const AdamwScalars *k) {
  (void)be;
  float *p = block->params, *m = block->m, *v = block->v;
  const float *g = block->grads;
  size_t n = block->n;
  const AdamwScalars c = *k; /* a local copy: the loop must not re-read through the pointer */
  float decay = 1.0f - c.lr * c.weight_decay;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    float gi = g[i] * c.grad_scale;
    float pi = p[i] * decay;
    float mi = c.beta1 * m[i] + c.one_minus_beta1 * gi;
    float vi = c.beta2 * v[i] + c.one_minus_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - c.lr * (mi / c.bias_correction1) / (sqrtf(vi / c.bias_correction2) + c.eps);
  }
}

void cpu_install_adamw(Backend *be) { be->adamw = cpu_adamw; }
