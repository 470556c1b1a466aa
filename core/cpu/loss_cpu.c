/* Cross-entropy over non-ignored targets and, when asked, its gradient
 * scale * (softmax - onehot) (zero on ignored rows), possibly in place over the logits. */
#include <math.h>
#include <string.h>

#include "cpu_ops.h"

static double cpu_cross_entropy(Backend *be, const float *logits, float *dlogits,
                                const int32_t *targets, int N, int V, float scale) {
  CpuContext *c = be->ctx;
  int chunk = (N + CPU_REDUCE_CHUNKS - 1) / CPU_REDUCE_CHUNKS;
  if (!dlogits) cpu_reserve_scratch(be, (size_t)V);
#pragma omp parallel for schedule(static)
  for (int k = 0; k < CPU_REDUCE_CHUNKS; k++) {
    double part = 0;
    int lo = k * chunk, hi = lo + chunk < N ? lo + chunk : N;
    for (int n = lo; n < hi; n++) {
      const float *row = logits + (size_t)n * V;
      float *grad = dlogits ? dlogits + (size_t)n * V : NULL;
      int tgt = targets[n];
      if (tgt < 0) {
        if (grad) memset(grad, 0, (size_t)V * sizeof(float));
        continue;
      }
      float mx = cpu_row_max(row, V);
      float target_logit = row[tgt];
      double sum;
      if (grad) {
        /* exp once per element: keep the exponentials in the gradient row. */
        sum = cpu_exp_shift_sum(grad, row, V, mx);
        float norm = (float)(scale / sum);
        for (int i = 0; i < V; i++) grad[i] *= norm;
        grad[tgt] -= scale;
      } else {
        /* loss only: exponentials into per-thread scratch, logits untouched */
        sum = cpu_exp_shift_sum(cpu_thread_scratch(be), row, V, mx);
      }
      part += mx + log(sum) - target_logit;
    }
    c->partials[k] = part;
  }
  double total = 0;
  for (int k = 0; k < CPU_REDUCE_CHUNKS; k++) total += c->partials[k];
  return total;
}

static void cpu_cross_entropy_acc(Backend *be, const float *logits, float *dlogits,
                                  const int32_t *targets, int N, int V, float scale,
                                  double *loss_sum) {
  double sum = cpu_cross_entropy(be, logits, dlogits, targets, N, V, scale);
  if (loss_sum) *loss_sum += sum;
}

void cpu_install_loss(Backend *be) {
  be->cross_entropy = cpu_cross_entropy;
  be->cross_entropy_acc = cpu_cross_entropy_acc;
}
