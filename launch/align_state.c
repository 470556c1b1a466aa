/* What an alignment run saves and restores: checkpoints gathered from every rank's layers,
 * the exported PEFT adapter, and the stop request of SIGTERM / SIGUSR1. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "align_run.h"
#include "check.h"
#include "peft.h"

static volatile sig_atomic_t stop_flag = 0;

static void on_stop_signal(int sig) {
  (void)sig;
  stop_flag = 1;
}

void align_install_signal_handlers(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
}

int align_stop_requested(void) { return stop_flag != 0; }

/* Gathers a per-layer array of the local stage onto rank 0 (whole-model, layer order). */
static void *gather(AlignRun *r, const void *local, size_t block_bytes) {
  int L = stage_config(r->stage)->num_layers;
  void *all = r->rank == 0 ? tv_malloc(block_bytes * (size_t)L) : NULL;
  comm_gather_layers(r->comm, local, block_bytes, L, all);
  return all;
}

/* The same for an array in backend memory: staged through the host, since a GPU's memory
 * is not host-addressable (MPI and the writers read host memory only). */
static void *gather_backend(AlignRun *r, const void *local, size_t block_bytes) {
  size_t bytes = block_bytes * (size_t)(stage_end_layer(r->stage) - stage_first_layer(r->stage));
  void *host = tv_malloc(bytes ? bytes : 1);
  r->be->to_host(r->be, host, local, bytes);
  void *all = gather(r, host, block_bytes);
  free(host);
  return all;
}

void align_save_checkpoint(AlignRun *r, int64_t steps_done) {
  LoraSet *ls = stage_lora(r->stage);
  size_t block = ls->layer_numel * sizeof(float);
  float *params = gather_backend(r, ls->params, block), *m = gather_backend(r, ls->m, block);
  float *v = gather_backend(r, ls->v, block);
  int64_t *steps = gather(r, ls->steps, sizeof(*ls->steps));
  if (r->rank == 0) {
    CheckpointState st = {0};
    int count;
    const int *act = trainer_active_layers(r->trainer, &count);
    int32_t *active = tv_malloc((size_t)(count > 0 ? count : 1) * sizeof(int32_t));
    for (int k = 0; k < count; k++) active[k] = act[k];
    Rng *rng = trainer_sampling_rng(r->trainer);
    st.step = steps_done;
    st.total_steps = r->total_steps;
    st.seed = r->cfg.seed;
    st.sample_rng_stream = rng->stream;
    st.sample_rng_counter = rng->counter;
    st.data_epoch = (int64_t)r->sampler.cur.epoch;
    st.data_cursor = (int64_t)r->sampler.cur.position;
    st.probe_epoch = r->has_probe ? (int64_t)r->probe_sampler.cur.epoch : 0;
    st.probe_cursor = r->has_probe ? (int64_t)r->probe_sampler.cur.position : 0;
    st.num_layers = stage_config(r->stage)->num_layers;
    st.layer_probs = (double *)trainer_layer_probs(r->trainer);
    st.num_active = count;
    st.active_layers = active;
    st.config_yaml = run_config_to_yaml(&r->cfg);
    st.method = (char *)method_name(r->cfg.method);
    st.lora_r = ls->cfg.r;
    st.lora_alpha = ls->cfg.alpha;
    st.lora_target_mask = ls->cfg.target_mask;
    st.layer_numel = (int64_t)ls->layer_numel;
    st.lora_params = params, st.lora_m = m, st.lora_v = v;
    st.lora_steps = steps;
    char *path = checkpoint_path(r->cfg.out, steps_done);
    checkpoint_save(path, &st);
    printf("align: checkpoint %s\n", path);
    free(path);
    free(st.config_yaml);
    free(active);
  }
  free(params);
  free(m);
  free(v);
  free(steps);
}

void align_restore_checkpoint(AlignRun *r, const CheckpointState *st) {
  LoraSet *ls = stage_lora(r->stage);
  const LlamaConfig *mc = stage_config(r->stage);
  if (st->num_layers != mc->num_layers || st->layer_numel != (int64_t)ls->layer_numel ||
      st->lora_r != ls->cfg.r || st->lora_target_mask != ls->cfg.target_mask)
    tv_die("checkpoint does not fit this model and LoRA config (%d layers, %lld floats per "
           "layer, r %d; the model has %d, %zu, r %d)",
           st->num_layers, (long long)st->layer_numel, st->lora_r, mc->num_layers,
           ls->layer_numel, ls->cfg.r);
  size_t off = (size_t)r->l0 * ls->layer_numel, n = (size_t)(r->l1 - r->l0) * ls->layer_numel;
  Backend *be = r->be;
  be->from_host(be, ls->params, st->lora_params + off, n * sizeof(float));
  be->from_host(be, ls->m, st->lora_m + off, n * sizeof(float));
  be->from_host(be, ls->v, st->lora_v + off, n * sizeof(float));
  memcpy(ls->steps, st->lora_steps + (size_t)r->l0 * LORA_NUM_TARGETS,
         (size_t)(r->l1 - r->l0) * sizeof(*ls->steps));
  trainer_restore(r->trainer, st->layer_probs, st->active_layers, st->num_active);
  Rng *rng = trainer_sampling_rng(r->trainer);
  rng->counter = st->sample_rng_counter;
  char err[256];
  DataCursor dc = {(uint64_t)st->data_epoch, (uint64_t)st->data_cursor};
  if (data_sampler_seek(&r->sampler, dc, err, sizeof err)) tv_die("checkpoint data cursor: %s", err);
  if (r->has_probe) {
    DataCursor pc = {(uint64_t)st->probe_epoch, (uint64_t)st->probe_cursor};
    if (data_sampler_seek(&r->probe_sampler, pc, err, sizeof err))
      tv_die("checkpoint probe cursor: %s", err);
  }
  r->step = st->step;
  if (st->total_steps != r->total_steps)
    tv_die("checkpoint was made for %lld steps, this run has %lld (did the data change?)",
           (long long)st->total_steps, (long long)r->total_steps);
}

void align_save_adapter(AlignRun *r) {
  LoraSet *ls = stage_lora(r->stage);
  float *params = gather_backend(r, ls->params, ls->layer_numel * sizeof(float));
  if (r->rank == 0) {
    PeftConfig pc;
    memset(&pc, 0, sizeof pc);
    pc.lora = ls->cfg;
    snprintf(pc.base_model, sizeof pc.base_model, "%s", r->cfg.model);
    char path[4096];
    snprintf(path, sizeof path, "%s/adapter", r->cfg.out);
    const LlamaConfig *mc = stage_config(r->stage);
    peft_write_host(path, &pc, mc, 0, mc->num_layers, params, ST_F32);
  }
  free(params);
}
