/* `tvaccine demo`: the built-in default job until alignment lands. Trains LoRA adapters on
 * a tiny random Llama to continue arithmetic sequences (a, a+k, a+2k, ... mod V), printing
 * the loss as it falls, and logs every step as JSON Lines. */
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "model.h"
#include "rng.h"
#include "runlog.h"
#include "run_setup.h"
#include "subcommands.h"

static void demo_usage(FILE *out) {
  fprintf(out,
          "usage: tvaccine demo [--steps N] [--seed S] [--threads N] [--log FILE]\n"
          "                     [--set KEY=VALUE ...]\n"
          "\n"
          "Trains rank-8 LoRA adapters on a tiny random Llama (vocab 64, width 64, 2 layers,\n"
          "4 heads, 2 kv heads) to continue arithmetic sequences, and prints the loss per step.\n"
          "\n"
          "  --steps N     optimizer steps (default 150)\n"
          "  --seed S      seed of weights, LoRA init and data (default 1)\n"
          "  --threads N   CPU threads (default: all cores)\n"
          "  --log FILE    also write one JSON line per step to FILE\n"
          "\n"
          "Each option --KEY is the run-config key demo.KEY (demo.steps, demo.seed,\n"
          "demo.threads, demo.log): --set demo.steps=60 and --steps=60 are --steps 60.\n");
}

/* One batch: each row an arithmetic progression mod V with its own start and step. */
static void make_batch(int32_t *tokens, int32_t *targets, int B, int T, int V, uint64_t seed,
                       int64_t step) {
  Rng r = rng_make(seed, rng_stream_id(RNG_TAG_DATA, (uint32_t)step, 0, 0));
  for (int b = 0; b < B; b++) {
    int start = (int)(rng_next_u64(&r) % (uint64_t)V), inc = 1 + (int)(rng_next_u64(&r) % 3);
    for (int t = 0; t < T; t++) tokens[b * T + t] = (start + inc * t) % V;
    for (int t = 0; t < T; t++) targets[b * T + t] = t + 1 < T ? tokens[b * T + t + 1] : -1;
  }
}

int cmd_demo(int argc, char **argv) {
  RunConfig rc;
  run_config_defaults(&rc);
  char err[RUN_CONFIG_ERR_MAX];
  int help;
  if (run_config_parse_command(&rc, "demo", argc, argv, &help, err, sizeof err)) tv_die("%s", err);
  if (help) {
    demo_usage(stdout);
    run_config_free(&rc);
    return 0;
  }
  const int steps = rc.demo.steps;
  const uint64_t seed = rc.demo.seed;
  const char *log_path = rc.demo.log[0] ? rc.demo.log : NULL;

  const int V = 64, B = 16, T = 24;
  LlamaConfig cfg = llama_config_default(V, 64, 128, 2, 4, 2);
  rc.method = METHOD_SFT;
  rc.seed = seed;
  rc.threads = rc.demo.threads;
  rc.lora.alpha = 16; /* a random base needs the adapters to move it quickly */
  rc.optim.lr = 1e-2f;
  rc.optim.weight_decay = 0.0f;
  RunSetup run;
  run_setup_random(&run, &rc, &cfg, B, T, seed, 0.3f, steps, &argc, &argv);
  Trainer *tr = run.trainer;
  const LoraConfig lc = rc.lora;
  RunLog *log = runlog_open(log_path, 0);

  int32_t *tokens = tv_malloc(sizeof(int32_t) * B * T), *targets = tv_malloc(sizeof(int32_t) * B * T);
  printf("demo: %d steps of LoRA r=%d on a %d-layer width-%d model, batch %d x %d tokens\n",
         steps, lc.r, cfg.num_layers, cfg.hidden_size, B, T);
  double t0 = now_s(), first_loss = 0, last_loss = 0;
  for (int64_t t = 0; t < steps; t++) {
    make_batch(tokens, targets, B, T, V, seed, t);
    Batch batch = {.tokens = tokens, .targets = targets, .B = B, .T = T};
    for (int i = 0; i < B * T; i++) batch.n_targets += targets[i] >= 0;
    StepReport r;
    trainer_step(tr, t, &batch, NULL, &r);
    if (t == 0) first_loss = r.loss;
    last_loss = r.loss;
    if (t % 10 == 0 || t == steps - 1)
      printf("step %5lld/%d  loss %.4f  grad_norm %.3f  lr %.2e  %.1f s\n", (long long)t + 1,
             steps, r.loss, r.grad_norm, r.lr, now_s() - t0);
    runlog_begin(log);
    runlog_int(log, "step", t + 1);
    runlog_num(log, "loss", r.loss);
    runlog_num(log, "grad_norm", r.grad_norm);
    runlog_num(log, "lr", r.lr);
    runlog_end(log);
  }
  printf("demo: loss %.4f -> %.4f in %.1f s\n", first_loss, last_loss, now_s() - t0);
  runlog_close(log);
  free(tokens);
  free(targets);
  run_setup_free(&run);
  run_config_free(&rc);
  return 0;
}
