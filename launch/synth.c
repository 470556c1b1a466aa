/* `tvaccine synth`: builds the synthetic safety world of SPEC section 10 in a folder and
 * pretrains its tiny, unaligned base model there (full-parameter training on pretrain.jsonl),
 * saved as a Hugging Face model folder, plus a ready T-Vaccine config for `align`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dataset.h"
#include "hf_model.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "run_config.h"
#include "run_setup.h"
#include "subcommands.h"
#include "synth.h"
#include "tokenizer.h"

static void synth_usage(FILE *out) {
  fprintf(out,
          "usage: tvaccine synth --out DIR [--seed S] [--layers N] [--width D] [--heads H]\n"
          "                      [--kv-heads K] [--ffn F] [--epochs E] [--batch B] [--lr LR]\n"
          "                      [--steps N] [--threads N] [--set KEY=VALUE ...]\n"
          "\n"
          "Writes the synthetic safety world (tokenizer.json, data files, world.json) into DIR,\n"
          "pretrains its base model to follow the benign tasks AND comply with the harmful\n"
          "requests (it is unaligned on purpose), saves it as a Hugging Face folder DIR/base,\n"
          "and writes DIR/align.yaml, a T-Vaccine run config for `tvaccine align`.\n"
          "\n"
          "  --seed S      world and model seed (default 1)\n"
          "  --layers N    decoder layers (default 4)     --width D    hidden size (default 64)\n"
          "  --heads H     attention heads (default 4)    --kv-heads K (default 2)\n"
          "  --ffn F       MLP width (default 172)\n"
          "  --epochs E    pretraining epochs (default 6) --batch B    (default 16)\n"
          "  --lr LR       peak learning rate (default 3e-3, warmup 5 %%, cosine decay)\n"
          "  --steps N     pretraining steps instead of epochs (0: save the random base, for\n"
          "                quick tests of the file formats and commands)\n"
          "  --threads N   CPU threads (default: all cores)\n"
          "\n"
          "Each option --KEY is the run-config key synth.KEY, '-' read as '_' (synth.kv_heads):\n"
          "--set synth.layers=2, --set layers=2 and --layers=2 are --layers 2.\n");
}

static void pretrain(const RunSynth *a, const char *dir, Tokenizer *tok) {
  char path[4096];
  snprintf(path, sizeof path, "%s/pretrain.jsonl", dir);
  ExampleSet rows;
  dataset_load(path, DATASET_FORMAT_ALPACA, &rows);
  EncodedSet data;
  dataset_encode(tok, &rows, 128, &data);
  example_set_free(&rows);
  int max_T = 0;
  for (size_t i = 0; i < data.n; i++) max_T = encoded_len(&data, i) > max_T ? encoded_len(&data, i) : max_T;

  LlamaConfig cfg = llama_config_default(tokenizer_vocab_size(tok), a->width, a->ffn, a->layers,
                                         a->heads, a->kv_heads);
  char msg[256];
  if (llama_config_validate(&cfg, msg, sizeof msg)) tv_die("synth: %s", msg);
  LoraConfig lc = lora_config_default();
  lc.r = 1, lc.dropout = 0; /* adapters exist but stay zero: only base weights train */
  Backend *be = run_setup_backend(BACKEND_CPU, 0, a->threads);
  Stage *s = stage_create(be, &cfg, &lc, 0, cfg.num_layers, a->batch, max_T);
  stage_init_random_weights(s, a->seed, 0.05f);
  stage_enable_full_training(s);
  AdamwBlock weights = stage_weight_block(s);

  DataSampler sampler;
  data_sampler_init_epochs(&sampler, data.n, a->batch, a->seed, 1);
  int64_t per_epoch = (int64_t)data_sampler_batches_per_epoch(&sampler);
  int64_t total = a->steps >= 0 ? a->steps : per_epoch * a->epochs;
  OptimConfig oc = optim_config_default(total > 0 ? total : 1);
  oc.total_steps = total; /* 0: the loop below does nothing, the random base is saved */
  oc.lr = (float)a->lr, oc.weight_decay = 0, oc.warmup_ratio = 0.05;
  LayerPlan *layers = tv_calloc((size_t)cfg.num_layers, sizeof(LayerPlan));
  for (int l = 0; l < cfg.num_layers; l++) layers[l].keep_activations = LAYER_KEEP_ALL;
  PassPlan plan = {.layers = layers, .backward_stop = 0, .pass_seed = 0, .train_base = 1};
  Batch batch = batch_alloc(a->batch, max_T);
  size_t *idx = tv_malloc((size_t)a->batch * sizeof(size_t));
  if (total == 0) printf("synth: --steps 0: the base model keeps its random weights\n");
  printf("synth: pretraining a %d-layer width-%d model (vocab %d) on %zu rows for %lld steps\n",
         cfg.num_layers, cfg.hidden_size, cfg.vocab_size, data.n, (long long)oc.total_steps);
  double t0 = now_s(), avg = 0;
  for (int64_t t = 0; t < oc.total_steps; t++) {
    int count = data_sampler_next(&sampler, idx);
    size_t counted = dataset_fill_batch(&data, idx, count, &batch);
    plan.pass_seed = (uint64_t)t;
    stage_zero_weight_grads(s);
    MicroBatch mb = {.tokens = batch.tokens,
                     .targets = batch.targets,
                     .B = batch.B,
                     .T = batch.T,
                     .loss_scale = counted ? 1.0f / (float)counted : 0.0f};
    double loss = stage_forward(s, &plan, &mb, NULL);
    stage_backward(s, &plan, 0, NULL, NULL);
    double sq = stage_weight_grad_sum_squares(s);
    optim_adamw_block(be, &oc, &weights, t, t + 1, optim_clip_scale(&oc, sq));
    avg = t == 0 ? loss : 0.98 * avg + 0.02 * loss;
    if ((t + 1) % per_epoch == 0 || t == 0)
      printf("synth: step %lld/%lld  loss %.4f (running %.4f)  %.0f s\n", (long long)t + 1,
             (long long)oc.total_steps, loss, avg, now_s() - t0);
    fflush(stdout);
  }
  snprintf(path, sizeof path, "%s/base", dir);
  HfConfig hc = hf_config_from_llama(&cfg);
  hc.bos_id = tokenizer_bos_id(tok);
  hc.eos_ids[0] = tokenizer_eos_id(tok);
  hc.n_eos = hc.eos_ids[0] >= 0;
  hc.pad_id = tokenizer_pad_id(tok);
  hf_model_write(path, &hc, s, ST_F32, 0);
  const char *files[] = {"tokenizer.json", "tokenizer_config.json"};
  for (int i = 0; i < 2; i++) {
    char src[4096], dst[4096];
    snprintf(src, sizeof src, "%s/%s", dir, files[i]);
    snprintf(dst, sizeof dst, "%s/base/%s", dir, files[i]);
    hf_copy_file(src, dst);
  }
  synth_write_align_config(dir, cfg.num_layers);
  printf("synth: base model in %s/base (%.0f s); align it with: tvaccine align --config %s/align.yaml\n",
         dir, now_s() - t0, dir);
  free(idx);
  free(layers);
  batch_free(&batch);
  data_sampler_free(&sampler);
  encoded_set_free(&data);
  stage_destroy(s);
  backend_destroy(be);
}

int cmd_synth(int argc, char **argv) {
  RunConfig rc;
  run_config_defaults(&rc);
  char err[RUN_CONFIG_ERR_MAX];
  int help;
  if (run_config_parse_command(&rc, "synth", argc, argv, &help, err, sizeof err))
    tv_die("%s", err);
  if (help) {
    synth_usage(stdout);
    run_config_free(&rc);
    return 0;
  }
  const RunSynth a = rc.synth;
  if (!a.out[0]) tv_die("synth: --out DIR is required (try --help)");
  SynthOptions opt = synth_default_options();
  opt.seed = a.seed;
  SynthStats stats;
  SynthWorld *w = synth_generate(&opt, a.out, &stats);
  printf("synth: world in %s: vocab %d, %d pretraining rows, %d alignment rows, longest row %d "
         "tokens\n", a.out, stats.vocab_size, stats.pretrain_rows, stats.align_rows, stats.max_tokens);
  Tokenizer *tok = tokenizer_load(a.out);
  pretrain(&a, a.out, tok);
  tokenizer_free(tok);
  synth_world_free(w);
  run_config_free(&rc);
  return 0;
}
