/* GPU benchmark: one sft / vaccine / T-Vaccine step of a randomly initialised
 * Llama-2-7B-shaped model (32 layers, width 4096, MLP 11008, vocab 32000, 32 heads) on the
 * CUDA backend (bf16 base weights; --weight-dtype f32 for comparison), batch 10 x 200, LoRA
 * r 8 on all seven targets. Prints one JSON line per
 * method: step time (fastest of --steps after --warmup), tokens/s, MFU against --peak-tflops
 * and the device memory in use after the step (cudaMemGetInfo; everything is allocated by
 * then, so it is the run's peak plus the CUDA context). Reports; never passes or fails on a
 * figure. Core only: runs where there is no MPI (tests/gpu/run.sh). */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "check.h"
#include "core_step.h"
#include "rng.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static size_t device_used(void) {
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return 0;
  return total_b - free_b;
}

/* Copies the block (elem bytes each, `block` of them) over n elements at dst, tiled. */
static void tile_fill(Backend *be, void *dst, size_t n, const void *blk, size_t block,
                      size_t elem) {
  for (size_t off = 0; off < n; off += block) {
    size_t m = n - off < block ? n - off : block;
    be->from_host(be, (char *)dst + off * elem, blk, m * elem);
  }
}

/* Base matrices: a 1M-element block of normal(0, 0.02) in the stage's weight dtype tiled over
 * each (timing does not depend on the values, and generating 6.7e9 Box-Muller draws on the
 * host takes minutes); RMSNorm weights 1. */
static void fill_weights(Backend *be, Stage *s) {
  const size_t block = (size_t)1 << 20;
  float *h = tv_malloc(block * sizeof(float));
  uint16_t *h16 = tv_malloc(block * sizeof(uint16_t));
  Rng r = rng_make(7, 1);
  for (size_t i = 0; i < block; i += 2) {
    double u1 = rng_next_double(&r) + 1e-12, u2 = rng_next_double(&r);
    double rad = 0.02 * sqrt(-2 * log(u1));
    h[i] = (float)(rad * cos(6.283185307179586 * u2));
    h[i + 1] = (float)(rad * sin(6.283185307179586 * u2));
  }
  for (size_t i = 0; i < block; i++) h16[i] = tv_bf16_from_f32(h[i]);
  StageWeights *w = stage_weights(s);
  const void *blk = w->dtype == TV_BF16 ? (const void *)h16 : (const void *)h;
  size_t elem = tv_dtype_size(w->dtype);
  const LlamaConfig *c = stage_config(s);
  size_t D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
  size_t HD = (size_t)c->num_heads * c->head_dim, KD = (size_t)c->num_kv_heads * c->head_dim;
  for (int l = 0; l < c->num_layers; l++) {
    LayerWeights *x = &w->layers[l];
    void *mats[7] = {x->wq, x->wk, x->wv, x->wo, x->w_gate, x->w_up, x->w_down};
    size_t sizes[7] = {HD * D, KD * D, KD * D, D * HD, F * D, F * D, D * F};
    for (int j = 0; j < 7; j++) tile_fill(be, mats[j], sizes[j], blk, block, elem);
  }
  tile_fill(be, w->embed, V * D, blk, block, elem);
  if (w->lm_head != w->embed) tile_fill(be, w->lm_head, V * D, blk, block, elem);
  for (size_t i = 0; i < D; i++) h[i] = 1.0f;
  for (int l = 0; l < c->num_layers; l++) {
    be->from_host(be, w->layers[l].attn_norm, h, D * sizeof(float));
    be->from_host(be, w->layers[l].mlp_norm, h, D * sizeof(float));
  }
  be->from_host(be, w->final_norm, h, D * sizeof(float));
  free(h);
  free(h16);
}

/* FLOPs of one sft step with a frozen base: forward and input-gradient GEMMs of every
 * projection and the head, LoRA's terms, causal attention forward (4 per pair and head dim)
 * and backward (10). */
static double sft_step_flops(const LlamaConfig *c, int r, int B, int T) {
  double N = (double)B * T, D = c->hidden_size, F = c->intermediate_size;
  double HD = (double)c->num_heads * c->head_dim, KD = (double)c->num_kv_heads * c->head_dim;
  double proj = D * HD + 2 * D * KD + HD * D + 3 * D * F;
  double lora = r * ((D + HD) + 2 * (D + KD) + (HD + D) + 2 * (D + F) + (F + D));
  double pairs = (double)B * c->num_heads * T * (T + 1) / 2.0;
  double per_layer = 2 * N * proj * 2 + 2 * N * lora * 3 + 14 * pairs * c->head_dim;
  return c->num_layers * per_layer + 4 * N * D * c->vocab_size;
}

int main(int argc, char **argv) {
  int layers = 32, B = 10, T = 200, S = 8, steps = 3, warmup = 1;
  double peak_tflops = 989.0; /* H100 / H200 SXM dense bf16 */
  const char *methods = "sft,vaccine,tvaccine";
  TvDtype weight_dtype = TV_BF16; /* the design: frozen base weights in bf16 */
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--layers")) layers = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--batch")) B = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--seq")) T = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--S")) S = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--warmup")) warmup = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--peak-tflops")) peak_tflops = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--methods")) methods = argv[i + 1];
    else if (!strcmp(argv[i], "--weight-dtype") && !strcmp(argv[i + 1], "f32")) weight_dtype = TV_F32;
    else if (!strcmp(argv[i], "--weight-dtype") && !strcmp(argv[i + 1], "bf16")) weight_dtype = TV_BF16;
    else tv_die("bench_gpu: unknown option %s", argv[i]);
  }
  if (layers < 1 || B < 1 || T < 2 || steps < 1 || warmup < 0 || S < 1 || S > layers)
    tv_die("bench_gpu: --layers, --batch, --seq, --steps, --S out of range");
  /* TV_GPU_TEST_ON_CPU=1: the CPU backend instead, a dry run of this program's flow (use a
   * tiny --layers / --batch / --seq); its figures mean nothing. */
  BackendKind kind = getenv("TV_GPU_TEST_ON_CPU") ? BACKEND_CPU : BACKEND_CUDA;
  if (kind == BACKEND_CUDA && backend_cuda_device_count() == 0) {
    printf("bench_gpu: no CUDA GPU visible; nothing measured\n");
    return 77;
  }
  LlamaConfig cfg = llama_config_default(32000, 4096, 11008, layers, 32, 32);
  LoraConfig lc = lora_config_default();
  lc.r = 8;
  lc.alpha = 16;
  lc.dropout = 0.1f;
  const char *names[3] = {"sft", "vaccine", "tvaccine"};
  const Method kinds[3] = {METHOD_SFT, METHOD_VACCINE, METHOD_TVACCINE};
  int32_t *tok = tv_malloc((size_t)B * T * sizeof(int32_t));
  int32_t *tgt = tv_malloc((size_t)B * T * sizeof(int32_t));
  Rng g = rng_make(3, 3);
  for (int i = 0; i < B * T; i++) tok[i] = (int32_t)rng_below(&g, (uint64_t)cfg.vocab_size);
  for (int i = 0; i < B * T; i++) tgt[i] = (i % T) + 1 < T ? tok[i + 1] : -1;
  MicroBatch mb = {.tokens = tok, .targets = tgt, .B = B, .T = T,
                   .loss_scale = 1.0f / (float)(B * (T - 1))};
  for (int m = 0; m < 3; m++) {
    if (!strstr(methods, names[m])) continue;
    Backend *be = backend_create(kind, 0, 0);
    Stage *s = stage_create_typed(be, &cfg, &lc, 0, layers, B, T, weight_dtype);
    fill_weights(be, s);
    lora_set_init(be, stage_lora(s), 9);
    CoreStepConfig sc = {.method = kinds[m], .S = S, .rho = 3.0,
                         .activations = ACTIVATIONS_RECOMPUTE, .freeze_scope = FREEZE_LAYER,
                         .optim = optim_config_default(warmup + steps), .seed = 1};
    CoreTrainer *t = core_trainer_create(s, &sc);
    double best = 1e30, loss = 0;
    for (int i = 0; i < warmup + steps; i++) {
      be->sync(be);
      double t0 = now_s();
      loss = core_trainer_step(t, i, &mb, &mb); /* the probe reuses the batch's shape */
      be->sync(be);
      double el = now_s() - t0;
      if (i >= warmup && el < best) best = el;
    }
    double flops = sft_step_flops(&cfg, lc.r, B, T);
    StageMemory sm = stage_memory(s);
    printf("{\"impl\": \"tvaccine-%s\", \"method\": \"%s\", \"layers\": %d, \"batch\": %d, "
           "\"seq\": %d, \"S\": %d, \"weight_dtype\": \"%s\", \"step_s\": %.4f, \"tokens_per_s\": %.1f, "
           "\"mfu_sft_flops\": %.4f, \"device_used_gib\": %.3f, \"weights_gib\": %.3f, "
           "\"activation_peak_gib\": %.3f, \"loss\": %.5f}\n",
           be->name, names[m], layers, B, T, S, tv_dtype_name(weight_dtype), best, B * T / best,
           flops / best / (peak_tflops * 1e12), device_used() / 1073741824.0,
           sm.weights / 1073741824.0, sm.activations / 1073741824.0, loss);
    fflush(stdout);
    core_trainer_destroy(t);
    stage_destroy(s);
    backend_destroy(be);
  }
  free(tok);
  free(tgt);
  return 0;
}
