/* Rotary position embedding, half-split convention (HF rotate_half): element i pairs with
 * element i + Dh/2, both rotated by angle t * freq_i. Backward is the inverse rotation. */
#include "cpu_ops.h"

static void rotate(float *x, const float *cos_t, const float *sin_t, int B, int T, int nh, int Dh,
                   float sign) {
  int half = Dh / 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const float *c = cos_t + (size_t)t * half, *s = sin_t + (size_t)t * half;
      for (int h = 0; h < nh; h++) {
        float *v = x + (((size_t)b * T + t) * nh + h) * Dh;
        for (int i = 0; i < half; i++) {
          float a = v[i], bb = v[i + half], sn = sign * s[i];
          v[i] = a * c[i] - bb * sn;
          v[i + half] = bb * c[i] + a * sn;
        }
      }
    }
}

static void cpu_rope_forward(Backend *be, float *x, const float *cos_t, const float *sin_t, int B,
                             int T, int nh, int Dh) {
  (void)be;
  rotate(x, cos_t, sin_t, B, T, nh, Dh, 1.0f);
}

static void cpu_rope_backward(Backend *be, float *dx, const float *cos_t, const float *sin_t,
                              int B, int T, int nh, int Dh) {
  (void)be;
  rotate(dx, cos_t, sin_t, B, T, nh, Dh, -1.0f);
}

void cpu_install_rope(Backend *be) {
  be->rope_forward = cpu_rope_forward;
  be->rope_backward = cpu_rope_backward;
}
