/* `tvaccine synth`: builds the synthetic safety world of SPEC section 10 in a folder and
 * pretrains its tiny, unaligned base model there (full-parameter training on pretrain.jsonl
 * through dist/trainer, on MPI ranks too), saved as a Hugging Face model folder, plus a ready
 * T-Vaccine config for `align`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dataset.h"
#include "hf_model.h"
#include "model.h"
#include "optim.h"
#include "run_config.h"
#include "run_setup.h"
#include "subcommands.h"
#include "synth.h"
#include "tokenizer.h"
#include "trainer.h"

static void synth_usage(FILE *out) {
  fprintf(out,
          "usage: tvaccine synth --out DIR [--seed S] [--layers N] [--width D] [--heads H]\n"
          "                      [--kv-heads K] [--ffn F] [--epochs E] [--batch B] [--lr LR]\n"
          "                      [--steps N] [--threads N] [--set KEY=VALUE ...]\n"
          "\n"
          "Writes the synthetic safety world (tokenizer.json, data files, world.json) into DIR,\n"
          "pretrains its base model to follow the benign tasks AND comply with the harmful\n"
          "requests (it is unaligned on purpose), saves it as a Hugging Face folder DIR/base,\n"
          "and writes DIR/align.yaml, a T-Vaccine run config for `tvaccine align`. Pretraining\n"
          "runs through the trainer of align (full-parameter mode): under mpirun each rank\n"
          "trains its own decoder layers, and any number of ranks gives the same base.\n"
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

/* Rank 0 assembles the whole model from the ranks' stages (decoder layers gathered in layer
 * order, the head and final norm from the last rank) and writes it as a Hugging Face folder. */
static void save_base(Comm *comm, Stage *s, const HfConfig *hc, const char *path) {
  int rank = comm_rank(comm), size = comm_size(comm);
  if (size == 1) {
    hf_model_write(path, hc, s, ST_F32, 0);
    return;
  }
  Backend *be = stage_backend(s);
  const LlamaConfig *cfg = stage_config(s);
  int L = cfg->num_layers, nl = stage_end_layer(s) - stage_first_layer(s);
  size_t per = stage_layer_weight_numel(s), D = cfg->hidden_size, VD = (size_t)cfg->vocab_size * D;
  StageWeights *w = stage_weights(s);
  float *mine = tv_malloc((size_t)nl * per * sizeof(float));
  be->to_host(be, mine, w->layers[0].attn_norm, (size_t)nl * per * sizeof(float));
  float *all = rank == 0 ? tv_malloc((size_t)L * per * sizeof(float)) : NULL;
  comm_gather_layers(comm, mine, per * sizeof(float), L, all);
  float *tail = tv_malloc((VD + D) * sizeof(float)); /* the head, then the final norm */
  if (stage_is_last(s)) {
    be->to_host(be, tail, w->lm_head, VD * sizeof(float));
    be->to_host(be, tail + VD, w->final_norm, D * sizeof(float));
  }
  comm_broadcast(comm, tail, (VD + D) * sizeof(float), size - 1);
  if (rank == 0) {
    LoraConfig lc = lora_config_default();
    lc.r = 1;
    Stage *full = stage_create(be, cfg, &lc, 0, L, 1, 1);
    StageWeights *fw = stage_weights(full);
    float *embed = tv_malloc(VD * sizeof(float));
    be->to_host(be, embed, w->embed, VD * sizeof(float));
    be->from_host(be, fw->layers[0].attn_norm, all, (size_t)L * per * sizeof(float));
    be->from_host(be, fw->embed, embed, VD * sizeof(float));
    be->from_host(be, fw->lm_head, tail, VD * sizeof(float));
    be->from_host(be, fw->final_norm, tail + VD, D * sizeof(float));
    hf_model_write(path, hc, full, ST_F32, 0);
    stage_destroy(full);
    free(embed);
  }
  free(tail);
  free(all);
  free(mine);
}

/* Full-parameter pretraining through dist/trainer: each rank trains its own decoder layers
 * (a pipeline stage), so N ranks give the base of one rank, bit for bit on the CPU. */
static void pretrain(const RunSynth *a, Comm *comm, const char *dir, Tokenizer *tok) {
  int rank = comm_rank(comm);
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
  int l0, l1;
  comm_rank_layers(comm, cfg.num_layers, rank, &l0, &l1);
  Backend *be = run_setup_backend(BACKEND_CPU, 0, a->threads);
  Stage *s = stage_create(be, &cfg, &lc, l0, l1, a->batch, max_T);
  stage_init_random_weights(s, a->seed, 0.05f);

  DataSampler sampler;
  data_sampler_init_epochs(&sampler, data.n, a->batch, a->seed, 1);
  int64_t per_epoch = (int64_t)data_sampler_batches_per_epoch(&sampler);
  int64_t total = a->steps >= 0 ? a->steps : per_epoch * a->epochs;
  TrainerConfig tc = {.method = METHOD_SFT, .seed = a->seed, .train_base = 1};
  tc.optim = optim_config_default(total > 0 ? total : 1);
  tc.optim.total_steps = total; /* 0: the loop below does nothing, the random base is saved */
  tc.optim.lr = (float)a->lr, tc.optim.weight_decay = 0, tc.optim.warmup_ratio = 0.05;
  Trainer *tr = trainer_create(comm, s, &tc, a->batch);
  Batch batch = batch_alloc(a->batch, max_T);
  size_t *idx = tv_malloc((size_t)a->batch * sizeof(size_t));
  if (rank == 0) {
    if (total == 0) printf("synth: --steps 0: the base model keeps its random weights\n");
    printf("synth: pretraining a %d-layer width-%d model (vocab %d) on %zu rows for %lld steps"
           " on %d rank%s\n", cfg.num_layers, cfg.hidden_size, cfg.vocab_size, data.n,
           (long long)total, comm_size(comm), comm_size(comm) > 1 ? "s" : "");
  }
  double t0 = now_s(), avg = 0;
  for (int64_t t = 0; t < total; t++) {
    int count = data_sampler_next(&sampler, idx);
    dataset_fill_batch(&data, idx, count, &batch);
    StepReport r;
    trainer_step(tr, t, &batch, NULL, &r);
    if (r.nonfinite)
      tv_die("synth: pretraining step %lld: loss %g, gradient norm %g (not finite); try a smaller "
             "--lr", (long long)t + 1, r.loss, r.grad_norm);
    avg = t == 0 ? r.loss : 0.98 * avg + 0.02 * r.loss;
    if (rank == 0 && ((t + 1) % per_epoch == 0 || t == 0 || t + 1 == total)) {
      printf("synth: step %lld/%lld  loss %.4f (running %.4f)  %.0f s\n", (long long)t + 1,
             (long long)total, r.loss, avg, now_s() - t0);
      fflush(stdout);
    }
  }
  snprintf(path, sizeof path, "%s/base", dir);
  HfConfig hc = hf_config_from_llama(&cfg);
  hc.bos_id = tokenizer_bos_id(tok);
  hc.eos_ids[0] = tokenizer_eos_id(tok);
  hc.n_eos = hc.eos_ids[0] >= 0;
  hc.pad_id = tokenizer_pad_id(tok);
  save_base(comm, s, &hc, path);
  if (rank == 0) {
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
  }
  free(idx);
  batch_free(&batch);
  trainer_destroy(tr);
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
  RunSetup run = {0};
  run_setup_comm(&run, &argc, &argv);
  /* Rank 0 writes the world; the others read it once it is complete. */
  if (run.rank == 0) {
    SynthOptions opt = synth_default_options();
    opt.seed = a.seed;
    SynthStats stats;
    synth_world_free(synth_generate(&opt, a.out, &stats));
    printf("synth: world in %s: vocab %d, %d pretraining rows, %d alignment rows, longest row %d "
           "tokens\n", a.out, stats.vocab_size, stats.pretrain_rows, stats.align_rows,
           stats.max_tokens);
  }
  comm_barrier(run.comm);
  Tokenizer *tok = tokenizer_load(a.out);
  pretrain(&a, run.comm, a.out, tok);
  tokenizer_free(tok);
  run_setup_free(&run);
  run_config_free(&rc);
  return 0;
}
