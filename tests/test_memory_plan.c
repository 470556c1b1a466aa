/* core/memory_plan against sizes worked out by hand (published parameter counts of
 * Llama-2-7B / 70B and PEFT's trainable-parameter count, a layer record added up piece by
 * piece) and against a real Stage's allocations (stage_memory, stage_layer_record_bytes). */
#include <stdio.h>

#include "backend.h"
#include "memory_plan.h"
#include "model.h"
#include "test_util.h"

static void test_published_counts(void) {
  LlamaConfig l7 = llama_config_default(32000, 4096, 11008, 32, 32, 32);
  LlamaConfig l70 = llama_config_default(32000, 8192, 28672, 80, 64, 8);
  /* Hugging Face's num_parameters() of meta-llama/Llama-2-7b-hf and -70b-hf. */
  EXPECT(memory_plan_weight_elems(&l7, 0, 32) == 6738415616ull, "7B: %zu parameters",
         memory_plan_weight_elems(&l7, 0, 32));
  EXPECT(memory_plan_weight_elems(&l70, 0, 80) == 68976648192ull, "70B: %zu parameters",
         memory_plan_weight_elems(&l70, 0, 80));
  /* By hand, 70B layers [10, 20): a middle stage has 10 layers of 855,654,400 and nothing else
   * (2 D norms + 2 D^2 q/o + 2 * 1024 D k/v + 3 F D). */
  EXPECT(memory_plan_weight_elems(&l70, 10, 20) == 8556544000ull, "70B middle stage: %zu",
         memory_plan_weight_elems(&l70, 10, 20));
  /* PEFT prints "trainable params: 19,988,480" for Llama-2-7B, r 8, all seven targets. */
  LoraConfig lc = lora_config_default();
  lc.r = 8;
  EXPECT(memory_plan_lora_layer_elems(&l7, &lc) * 32 == 19988480ull, "7B LoRA r8: %zu",
         memory_plan_lora_layer_elems(&l7, &lc) * 32);
}

/* D 64, F 160, H 4, Hkv 2, Dh 16, r 4, N 10 rows; every piece rounded up to 64 bytes:
 * input 640 floats = 2560 B; two rms rows 2 x 64; two normed inputs 2 x 2560; q, att
 * 2 x 2560; k, v 2 x 1280; lse 40 floats -> 192; h 2560; gate, up 2 x 6400; seven LoRA
 * u of 40 floats 7 x 192. */
static void test_layer_record_by_hand(void) {
  LlamaConfig c = llama_config_default(50, 64, 160, 2, 4, 2);
  size_t keep_all = 2560 + 128 + 5120 + 5120 + 2560 + 192 + 2560 + 12800 + 1344;
  size_t input_grad = keep_all - 5120 - 1344;
  EXPECT(memory_plan_layer_record_bytes(&c, 4, 10, LAYER_KEEP_ALL) == keep_all,
         "keep all: %zu want %zu", memory_plan_layer_record_bytes(&c, 4, 10, LAYER_KEEP_ALL),
         keep_all);
  EXPECT(memory_plan_layer_record_bytes(&c, 4, 10, LAYER_KEEP_FOR_INPUT_GRAD) == input_grad,
         "keep for input grad: %zu want %zu",
         memory_plan_layer_record_bytes(&c, 4, 10, LAYER_KEEP_FOR_INPUT_GRAD), input_grad);
  EXPECT(memory_plan_layer_record_bytes(&c, 4, 10, LAYER_RECOMPUTE) == 2560, "recompute: %zu",
         memory_plan_layer_record_bytes(&c, 4, 10, LAYER_RECOMPUTE));
}

/* The plan's sizes are the Stage's: weights (f32), workspace and layer records, for a first,
 * middle and last stage, untied and tied, with attention biases. */
static void test_against_stage(void) {
  Backend *be = backend_cpu_create(1);
  for (int variant = 0; variant < 2; variant++) {
    LlamaConfig c = llama_config_default(53, 48, 112, 4, 6, 2);
    c.tie_word_embeddings = variant;
    c.attention_bias = variant;
    LoraConfig lc = lora_config_default();
    lc.r = 3;
    const int B = 2, T = 7, ranges[3][2] = {{0, 1}, {1, 3}, {3, 4}};
    for (int k = 0; k < 3; k++) {
      int l0 = ranges[k][0], l1 = ranges[k][1];
      Stage *s = stage_create(be, &c, &lc, l0, l1, B, T);
      StageMemory m = stage_memory(s);
      size_t N = (size_t)B * T;
      EXPECT(memory_plan_weight_elems(&c, l0, l1) * sizeof(float) == m.weights,
             "variant %d [%d,%d): weights %zu, stage %zu", variant, l0, l1,
             memory_plan_weight_elems(&c, l0, l1) * sizeof(float), m.weights);
      EXPECT(memory_plan_weight_bytes(&c, l0, l1, TV_F32) == m.weights,
             "variant %d [%d,%d): f32 weight bytes", variant, l0, l1);
      Stage *s16 = stage_create_typed(be, &c, &lc, l0, l1, B, T, TV_BF16);
      EXPECT(memory_plan_weight_bytes(&c, l0, l1, TV_BF16) == stage_memory(s16).weights,
             "variant %d [%d,%d): bf16 weights %zu, stage %zu", variant, l0, l1,
             memory_plan_weight_bytes(&c, l0, l1, TV_BF16), stage_memory(s16).weights);
      EXPECT(stage_memory(s16).workspace == m.workspace, "variant %d: bf16 workspace", variant);
      stage_destroy(s16);
      size_t ws = memory_plan_workspace_bytes(&c, lc.r, N, l0 == 0, l1 == c.num_layers);
      EXPECT(ws == m.workspace, "variant %d [%d,%d): workspace %zu, stage %zu", variant, l0, l1,
             ws, m.workspace);
      /* Each further micro-batch in flight adds one slot's buffers. */
      stage_reserve_slots(s, 3);
      size_t ws3 = ws + 2 * memory_plan_slot_bytes(&c, N, l0 == 0, l1 == c.num_layers);
      EXPECT(ws3 == stage_memory(s).workspace, "variant %d [%d,%d): 3 slots: workspace %zu, "
             "stage %zu", variant, l0, l1, ws3, stage_memory(s).workspace);
      EXPECT(memory_plan_lora_layer_elems(&c, &lc) * (size_t)(l1 - l0) * sizeof(float) == m.lora,
             "variant %d [%d,%d): LoRA", variant, l0, l1);
      LayerKeep keeps[3] = {LAYER_RECOMPUTE, LAYER_KEEP_ALL, LAYER_KEEP_FOR_INPUT_GRAD};
      for (int q = 0; q < 3; q++)
        EXPECT(memory_plan_layer_record_bytes(&c, lc.r, N, keeps[q]) ==
                   stage_layer_record_bytes(s, N, keeps[q]),
               "variant %d: record of keep %d: %zu, stage %zu", variant, (int)keeps[q],
               memory_plan_layer_record_bytes(&c, lc.r, N, keeps[q]),
               stage_layer_record_bytes(s, N, keeps[q]));
      stage_destroy(s);
    }
  }
  backend_destroy(be);
}

/* The stage total: the method decides how many layers keep full records and whether
 * perturbation buffers exist; sampled layers are placed worst case. */
static void test_methods(void) {
  LlamaConfig c = llama_config_default(50, 64, 160, 8, 4, 2);
  LoraConfig lc = lora_config_default();
  lc.r = 4;
  MemoryPlanInput in = {.model = c, .lora = lc, .weight_dtype = TV_BF16, .S = 3,
                        .activations = ACTIVATIONS_RECOMPUTE, .batch = 2, .seq_len = 5,
                        .stages = 2};
  size_t N = 10, all = memory_plan_layer_record_bytes(&c, 4, N, LAYER_KEEP_ALL);
  size_t rec = memory_plan_layer_record_bytes(&c, 4, N, LAYER_RECOMPUTE);
  StageMemoryPlan sft, tv;
  in.method = METHOD_SFT;
  memory_plan_stage(&in, 0, 0, 4, &sft);
  in.method = METHOD_TVACCINE;
  memory_plan_stage(&in, 0, 0, 4, &tv);
  EXPECT(sft.activations == 4 * all, "sft: %zu want %zu", sft.activations, 4 * all);
  EXPECT(tv.activations == 3 * all + rec, "tvaccine: %zu want %zu", tv.activations, 3 * all + rec);
  EXPECT(sft.perturbation == 0 && tv.perturbation == 3 * N * 64 * sizeof(float),
         "perturbation: sft %zu, tvaccine %zu", sft.perturbation, tv.perturbation);
  /* bf16 matrices; the 2 norms of 64 of each of the stage's 4 layers (of 8: no final norm
   * here) stay f32, 2 bytes more each. */
  size_t norms = 4 * 2 * 64;
  EXPECT(tv.weights == memory_plan_weight_elems(&c, 0, 4) * 2 + norms * 2, "bf16 weights: %zu",
         tv.weights);
  EXPECT(tv.lora == 4 * 4 * memory_plan_lora_layer_elems(&c, &lc) * sizeof(float),
         "LoRA + grads + two moments");
}

int main(void) {
  test_published_counts();
  test_layer_record_by_hand();
  test_against_stage();
  test_methods();
  return tv_test_report("test_memory_plan");
}
