/* Greedy generation against transformers: the tiny model and PEFT adapter written by
 * tests/ref/generate_golden.py, loaded through io/hf_model and io/peft, must generate the
 * tokens `generate(do_sample=False)` produced (EOS stop included), with the KV cache and
 * with the full-forward reference path, batched (the reference ran each prompt alone).
 * Usage: test_generate_golden DATADIR (holding gen_llama/, peft_gen_llama/ and
 * gen_llama_generate.tvg). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "generate.h"
#include "golden.h"
#include "hf_model.h"
#include "model.h"
#include "peft.h"
#include "test_util.h"

#define BATCH 4 /* 6 prompts: a full batch and a partial one */

static void check_run(HfModel *m, const char *adapter, const PromptSet *p, int max_new,
                      int use_cache, const GoldenTensor *want, const GoldenTensor *want_len) {
  const HfConfig *hc = hf_model_config(m);
  LoraConfig lc = lora_config_default();
  if (adapter) lc = peft_read_config(adapter, hc->cfg.num_layers).lora;
  lc.dropout = 0.0f;
  Backend *be = backend_cpu_create(1);
  GenerateOptions o = {.max_new_tokens = max_new, .eos_ids = hc->eos_ids, .n_eos = hc->n_eos,
                       .batch_size = BATCH, .use_cache = use_cache};
  Stage *s = stage_create(be, &hc->cfg, &lc, 0, hc->cfg.num_layers, BATCH,
                          generate_context_length(p, &o));
  hf_model_load_stage(m, s);
  if (adapter) peft_load(adapter, &hc->cfg, be, stage_lora(s));
  stage_merge_lora(s);
  int32_t *out = tv_malloc(p->n * (size_t)max_new * sizeof(int32_t));
  int *len = tv_malloc(p->n * sizeof(int));
  generate_greedy(NULL, s, &o, p, out, len);
  const char *what = adapter ? (use_cache ? "adapter, cache" : "adapter, full forward")
                             : (use_cache ? "base, cache" : "base, full forward");
  int mismatched = 0;
  for (size_t i = 0; i < p->n; i++) {
    int same = len[i] == want_len->i32[i];
    for (int t = 0; same && t < len[i]; t++) same = out[i * max_new + t] == want->i32[i * max_new + t];
    EXPECT(same, "%s: prompt %zu: %d tokens differ from transformers' %d", what, i, len[i],
           want_len->i32[i]);
    mismatched += !same;
  }
  printf("  %-22s %zu prompts, %d differ from transformers\n", what, p->n, mismatched);
  free(len);
  free(out);
  stage_destroy(s);
  backend_destroy(be);
}

int main(int argc, char **argv) {
  TV_CHECK(argc == 2, "usage: test_generate_golden DATADIR");
  char model_dir[4096], adapter_dir[4096], golden_path[4096];
  snprintf(model_dir, sizeof model_dir, "%s/gen_llama", argv[1]);
  snprintf(adapter_dir, sizeof adapter_dir, "%s/peft_gen_llama", argv[1]);
  snprintf(golden_path, sizeof golden_path, "%s/gen_llama_generate.tvg", argv[1]);
  Golden *g = golden_load(golden_path);
  const GoldenTensor *pid = golden_get(g, "prompt_ids"), *plen = golden_get(g, "prompt_len");
  int max_new = golden_i32(g, "max_new_tokens");
  size_t P = (size_t)pid->dims[0], Tmax = (size_t)pid->dims[1];

  /* Prompts packed back to back from the padded golden rows. */
  int32_t *ids = tv_malloc(P * Tmax * sizeof(int32_t));
  size_t *offset = tv_malloc((P + 1) * sizeof(size_t)), at = 0;
  for (size_t i = 0; i < P; i++) {
    offset[i] = at;
    for (int t = 0; t < plen->i32[i]; t++) ids[at++] = pid->i32[i * Tmax + (size_t)t];
  }
  offset[P] = at;
  PromptSet p = {.n = P, .ids = ids, .offset = offset};

  HfModel *m = hf_model_open(model_dir);
  const HfConfig *hc = hf_model_config(m);
  EXPECT(hc->n_eos == 1 && hc->eos_ids[0] == golden_i32(g, "eos_id"),
         "config.json eos_token_id should be the golden's %d", golden_i32(g, "eos_id"));
  /* The golden must exercise the EOS stop and the token limit both. */
  const GoldenTensor *olen = golden_get(g, "out_len");
  int stopped = 0, full = 0;
  for (size_t i = 0; i < P; i++) stopped += olen->i32[i] < max_new, full += olen->i32[i] == max_new;
  EXPECT(stopped > 0 && full > 0, "golden has %d EOS stops and %d full-length runs", stopped, full);
  printf("smallest top-2 logit gap in the reference: base %.3g, adapter %.3g\n",
         golden_f32(g, "min_gap"), golden_f32(g, "peft_min_gap"));
  for (int use_cache = 1; use_cache >= 0; use_cache--) {
    check_run(m, NULL, &p, max_new, use_cache, golden_get(g, "tokens"), olen);
    check_run(m, adapter_dir, &p, max_new, use_cache, golden_get(g, "peft_tokens"),
              golden_get(g, "peft_out_len"));
  }
  hf_model_close(m);
  free(offset);
  free(ids);
  golden_free(g);
  return tv_test_report("generate_golden");
}
