/* What an alignment run saves and restores: checkpoints gathered from every rank's layers
 * and the exported PEFT adapter. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "align_run.h"
#include "check.h"
#include "peft.h"

/* Gathers a per-layer array of the local stage onto rank 0 (whole-model, layer order), over
 * replica 0's pipeline: the other replicas hold the same values and skip it together. */
static void *gather(AlignRun *r, const void *local, size_t block_bytes) {
  if (r->replica != 0) return NULL;
  int L = stage_config(r->stage)->num_layers;
  void *all = r->rank == 0 ? tv_malloc(block_bytes * (size_t)L) : NULL;
  comm_gather_layers(r->pipe, local, block_bytes, L, all);
  return all;
}

/* The same for an array in backend memory: staged through the host, since a GPU's memory
 * is not host-addressable (MPI and the writers read host memory only). */
static void *gather_backend(AlignRun *r, const void *local, size_t block_bytes) {
  if (r->replica != 0) return NULL;
  size_t bytes = block_bytes * (size_t)(stage_end_layer(r->stage) - stage_first_layer(r->stage));
  void *host = tv_malloc(bytes ? bytes : 1);
  r->be->to_host(r->be, host, local, bytes);
  void *all = gather(r, host, block_bytes);
  free(host);
  return all;
}

void align_meta_capture(AlignRun *r, int64_t steps_done, AlignMeta *meta) {
  int count;
  const int *act = trainer_active_layers(r->trainer, &count);
  int L = stage_config(r->stage)->num_layers;
  meta->step = steps_done;
  meta->rng_counter = trainer_sampling_rng(r->trainer)->counter;
  meta->data_epoch = (int64_t)r->sampler.cur.epoch;
  meta->data_cursor = (int64_t)r->sampler.cur.position;
  meta->probe_epoch = r->has_probe ? (int64_t)r->probe_sampler.cur.epoch : 0;
  meta->probe_cursor = r->has_probe ? (int64_t)r->probe_sampler.cur.position : 0;
  memcpy(meta->probs, trainer_layer_probs(r->trainer), (size_t)L * sizeof(double));
  for (int k = 0; k < count; k++) meta->active[k] = act[k];
  meta->num_active = count;
}

char *align_write_checkpoint(AlignRun *r, const AlignMeta *meta, float *params, float *m,
                             float *v, int64_t *steps) {
  LoraSet *ls = stage_lora(r->stage);
  /* A checkpoint is what a run falls back to: it never holds a NaN or inf. */
  size_t n = (size_t)stage_config(r->stage)->num_layers * ls->layer_numel;
  const float *arrays[3] = {params, m, v};
  const char *names[3] = {"LoRA weights", "AdamW first moments", "AdamW second moments"};
  for (int a = 0; a < 3; a++) {
    int64_t bad = st_first_nonfinite(arrays[a], n);
    if (bad >= 0)
      tv_die("refusing to write the checkpoint of step %lld: its %s hold a non-finite value "
             "(%g) at element %lld", (long long)meta->step, names[a], (double)arrays[a][bad],
             (long long)bad);
  }
  CheckpointState st = {
      .step = meta->step,
      .total_steps = r->total_steps,
      .seed = r->cfg.seed,
      .sample_rng_stream = trainer_sampling_rng(r->trainer)->stream,
      .sample_rng_counter = meta->rng_counter,
      .data_epoch = meta->data_epoch,
      .data_cursor = meta->data_cursor,
      .probe_epoch = meta->probe_epoch,
      .probe_cursor = meta->probe_cursor,
      .model_digest = r->model_digest,
      .tokenizer_digest = r->tokenizer_digest,
      .data_digest = r->data_digest,
      .probe_digest = r->probe_digest,
      .num_layers = stage_config(r->stage)->num_layers,
      .layer_probs = meta->probs,
      .num_active = meta->num_active,
      .active_layers = meta->active,
      .config_yaml = run_config_to_yaml(&r->cfg),
      .method = (char *)method_name(r->cfg.method),
      .lora_r = ls->cfg.r,
      .lora_alpha = ls->cfg.alpha,
      .lora_target_mask = ls->cfg.target_mask,
      .layer_numel = (int64_t)ls->layer_numel,
      .lora_params = params,
      .lora_m = m,
      .lora_v = v,
      .lora_steps = steps,
  };
  char *path = checkpoint_path(r->cfg.out, meta->step);
  checkpoint_save(path, &st);
  free(st.config_yaml);
  return path;
}

void align_save_checkpoint(AlignRun *r, int64_t steps_done) {
  LoraSet *ls = stage_lora(r->stage);
  size_t block = ls->layer_numel * sizeof(float);
  float *params = gather_backend(r, ls->params, block), *m = gather_backend(r, ls->m, block);
  float *v = gather_backend(r, ls->v, block);
  int64_t *steps = gather(r, ls->steps, sizeof(*ls->steps));
  if (r->rank == 0) {
    int L = stage_config(r->stage)->num_layers;
    AlignMeta meta = {.probs = tv_malloc((size_t)L * sizeof(double)),
                      .active = tv_malloc((size_t)L * sizeof(int32_t))};
    align_meta_capture(r, steps_done, &meta);
    preempt_io_lock(r->preempt);
    char *path = align_write_checkpoint(r, &meta, params, m, v, steps);
    preempt_io_unlock(r->preempt);
    printf("align: checkpoint %s\n", path);
    free(path);
    free(meta.probs);
    free(meta.active);
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
  if (r->total_steps < st->total_steps)
    tv_die("max_steps: the checkpoint's run has %lld steps, this run %lld; a resumed run may "
           "only be lengthened (max_steps, epochs)", (long long)st->total_steps,
           (long long)r->total_steps);
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
    preempt_io_lock(r->preempt);
    peft_write_host(path, &pc, mc, 0, mc->num_layers, params, ST_F32);
    preempt_io_unlock(r->preempt);
  }
  free(params);
}
