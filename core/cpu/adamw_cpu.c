/* AdamW update of one parameter block on the CPU (SPEC section 4 arithmetic). */
#include "../adamw_element.h"
#include "cpu_ops.h"

static void cpu_adamw(Backend *be, const AdamwBlock *block, const AdamwScalars *k) {
  (void)be;
  float *p = block->params, *m = block->m, *v = block->v;
  const float *g = block->grads;
  size_t n = block->n;
  const AdamwScalars c = *k; /* a local copy: the loop must not re-read through the pointer */
  float decay = 1.0f - c.lr * c.weight_decay;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) adamw_element(&p[i], g[i], &m[i], &v[i], &c, decay);
}

void cpu_install_adamw(Backend *be) { be->adamw = cpu_adamw; }
