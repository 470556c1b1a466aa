/* The run set-up shared by the subcommands (see run_setup.h). */
#include "run_setup.h"

#include <string.h>

#include "check.h"
#include "pipeline.h"

Backend *run_setup_backend(BackendKind kind, int device, int threads) {
  return backend_create(kind, device, threads);
}

void run_setup_comm(RunSetup *s, int *argc, char ***argv) {
  s->comm = comm_init(argc, argv);
  s->rank = comm_rank(s->comm);
  s->size = comm_size(s->comm);
}

Stage *run_setup_hf_stage(Backend *be, HfModel *hf, const LoraConfig *lora, int l0, int l1,
                          int micro, int T, TvDtype weight_dtype) {
  Stage *s = stage_create_typed(be, &hf_model_config(hf)->cfg, lora, l0, l1, micro, T,
                                weight_dtype);
  hf_model_load_stage(hf, s);
  return s;
}

TrainerConfig run_setup_trainer_config(const RunConfig *c, int64_t total_steps) {
  TrainerConfig tc = {
      .method = c->method,
      .freeze_scope = c->tvaccine.freeze_scope,
      .rho = c->rho,
      .S = c->tvaccine.S,
      .J = c->tvaccine.J,
      .K = c->tvaccine.K,
      .fixed_layers = c->tvaccine.layers,
      .num_fixed = c->tvaccine.n_layers,
      .optim = c->optim,
      .seed = c->seed,
      .activations = c->activations,
      .activation_budget = (size_t)c->activation_budget_mib << 20,
      .schedule = c->dist.schedule,
  };
  tc.optim.total_steps = total_steps;
  return tc;
}

void run_setup_random(RunSetup *s, const RunConfig *c, const LlamaConfig *model, int micro,
                      int T, uint64_t weight_seed, float scale, int64_t total_steps, int *argc,
                      char ***argv) {
  memset(s, 0, sizeof *s);
  s->be = run_setup_backend(c->device, 0, c->threads);
  s->stage = stage_create_typed(s->be, model, &c->lora, 0, model->num_layers, micro, T,
                                run_config_weight_dtype(c));
  stage_init_random_weights(s->stage, weight_seed, scale);
  lora_set_init(s->be, stage_lora(s->stage), c->seed);
  run_setup_comm(s, argc, argv);
  s->l0 = 0, s->l1 = model->num_layers;
  TrainerConfig tc = run_setup_trainer_config(c, total_steps);
  s->trainer = trainer_create(s->comm, s->stage, &tc, micro);
}

void run_setup_free(RunSetup *s) {
  if (s->trainer) trainer_destroy(s->trainer);
  if (s->stage) stage_destroy(s->stage);
  if (s->be) backend_destroy(s->be);
  if (s->comm) comm_finalize(s->comm);
  memset(s, 0, sizeof *s);
}

void run_setup_stage_sizes(const RunDist *d, const LlamaConfig *mc, int P, const char *model,
                           int *sizes) {
  int L = mc->num_layers;
  if (d->n_stages > 0) {
    int sum = 0;
    for (int k = 0; k < d->n_stages; k++) sum += d->stages[k];
    if (sum != L)
      tv_die("dist.stages: the stage sizes add up to %d layers; %s has %d", sum, model, L);
    memcpy(sizes, d->stages, (size_t)P * sizeof(int));
  } else if (d->split == SPLIT_COST) {
    comm_split_by_cost(L, P, pipeline_head_cost(mc), sizes);
  } else {
    for (int k = 0; k < P; k++) {
      int l0, l1;
      comm_split_layers(L, P, k, &l0, &l1);
      sizes[k] = l1 - l0;
    }
  }
}
