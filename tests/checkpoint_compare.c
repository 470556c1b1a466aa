/* Test tool for the end-to-end scripts: `checkpoint_compare A.h5 B.h5` exits 0 when the two
 * checkpoints hold the same run state (every field but the config text, which may differ in
 * keys that change no number), else prints the first difference and exits 1. */
#include <stdio.h>
#include <string.h>

#include "checkpoint.h"

#define SAME(f)                                                         \
  if (a.f != b.f) {                                                     \
    printf("checkpoint_compare: field " #f " differs\n");             \
    return 1;                                                           \
  }
#define SAME_ARRAY(f, n)                                                \
  if (memcmp(a.f, b.f, (n) * sizeof(*a.f)) != 0) {                      \
    printf("checkpoint_compare: array " #f " differs\n");             \
    return 1;                                                           \
  }

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: checkpoint_compare A.h5 B.h5\n");
    return 2;
  }
  CheckpointState a, b;
  char err[1024];
  if (checkpoint_load(argv[1], &a, err, sizeof err) || checkpoint_load(argv[2], &b, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 2;
  }
  SAME(step) SAME(total_steps) SAME(seed) SAME(sample_rng_stream) SAME(sample_rng_counter)
  SAME(data_epoch) SAME(data_cursor) SAME(probe_epoch) SAME(probe_cursor) SAME(model_digest)
  SAME(tokenizer_digest) SAME(data_digest) SAME(probe_digest) SAME(num_layers)
  SAME(num_active) SAME(lora_r) SAME(lora_alpha) SAME(lora_target_mask) SAME(layer_numel)
  size_t L = (size_t)a.num_layers, n = L * (size_t)a.layer_numel;
  SAME_ARRAY(layer_probs, L) SAME_ARRAY(active_layers, (size_t)a.num_active)
  SAME_ARRAY(lora_params, n) SAME_ARRAY(lora_m, n) SAME_ARRAY(lora_v, n)
  SAME_ARRAY(lora_steps, L * LORA_NUM_TARGETS)
  if (strcmp(a.method, b.method) != 0) {
    printf("checkpoint_compare: method differs\n");
    return 1;
  }
  checkpoint_state_free(&a);
  checkpoint_state_free(&b);
  return 0;
}
