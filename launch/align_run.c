/* Set-up and step loop of `tvaccine align` (see align_run.h). Every rank runs this code;
 * rank 0 prints and writes the run folder. */
#include "align_run.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "peft.h"
#include "subcommands.h"

static double peak_rss_mib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}

/* Resident memory now (not the peak), from /proc/self/statm. */
static double current_rss_mib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, resident = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
  }
  return resident * (double)sysconf(_SC_PAGESIZE) / 1048576.0;
}

/* One line per rank after loading: its layers, the weight files it mapped, and its resident
 * memory while mapped and after the mapping is dropped. */
static void report_ranks(AlignRun *r, int files, double mapped_mib) {
  int n = r->size;
  double *info = tv_calloc((size_t)n * 5, sizeof(double));
  info[5 * r->rank + 0] = r->l0;
  info[5 * r->rank + 1] = r->l1;
  info[5 * r->rank + 2] = files;
  info[5 * r->rank + 3] = mapped_mib;
  info[5 * r->rank + 4] = current_rss_mib();
  comm_allreduce_sum(r->comm, info, 5 * n);
  if (r->rank == 0)
    for (int k = 0; k < n; k++)
      printf("align: rank %d: layers [%d, %d) from %d weight file(s); resident %.0f MiB while "
             "mapped, %.0f MiB after\n", k, (int)info[5 * k], (int)info[5 * k + 1],
             (int)info[5 * k + 2], info[5 * k + 3], info[5 * k + 4]);
  free(info);
}

/* Stage sizes: under dist.split cost, the head (V x D) weighs against a decoder layer's
 * projections, so the last stage takes fewer layers (config M on 2 ranks: 5 + 3). */
static void split_layers(AlignRun *r, const LlamaConfig *mc) {
  int L = mc->num_layers;
  if (r->cfg.dist.split == SPLIT_COST) {
    int *sizes = tv_malloc((size_t)r->size * sizeof(int));
    comm_split_by_cost(L, r->size, pipeline_head_cost(mc), sizes);
    comm_set_layer_split(r->comm, L, sizes);
    free(sizes);
  }
  comm_rank_layers(r->comm, L, r->rank, &r->l0, &r->l1);
}

/* A config function's error message, if any, is the run's one error line. */
static void check_config(const char *err) {
  if (err) tv_die("%s", err);
}

/* FNV-1a over bytes: a digest to compare what ranks read, not a security check. */
static uint64_t digest_bytes(uint64_t h, const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}
#define DIGEST_START 14695981039346656037ULL

static uint64_t digest_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) tv_die("%s: cannot open: %s", path, strerror(errno));
  unsigned char buf[1 << 16];
  uint64_t h = DIGEST_START;
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) h = digest_bytes(h, buf, n);
  fclose(f);
  return h;
}

/* Every rank resolves its config and reads its data files itself (on a cluster, possibly
 * from different disks): rank 0's digests are the reference, and the first rank that
 * differs ends the run in one line naming it and the file. */
static void check_ranks_agree(AlignRun *r) {
  if (r->size == 1) return;
  const RunConfig *c = &r->cfg;
  char *yaml = run_config_to_yaml(c);
  int bad = comm_first_rank_differing(r->comm, digest_bytes(DIGEST_START, yaml, strlen(yaml)));
  free(yaml);
  if (bad >= 0 && r->rank != 0) comm_barrier(r->comm); /* rank 0 reports and ends the job */
  if (bad >= 0)
    tv_die("align: rank %d resolved a different config from rank 0's (config file or --set "
           "overrides differ): every rank must run the same command", bad);
  const char *files[] = {c->data, c->method == METHOD_TVACCINE ? c->tvaccine.probe_data : ""};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    if (!files[i][0]) continue;
    bad = comm_first_rank_differing(r->comm, digest_file(files[i]));
    if (bad >= 0 && r->rank != 0) comm_barrier(r->comm);
    if (bad >= 0)
      tv_die("align: %s: rank %d reads different bytes from rank 0: every rank must see the "
             "same data files", files[i], bad);
  }
}

/* defaults <- config file (or the checkpoint's own config) <- overrides in order. */
static void resolve_config(AlignRun *r, const AlignArgs *args) {
  char err[RUN_CONFIG_ERR_MAX];
  run_config_defaults(&r->cfg);
  const char *resume = args->resume;
  for (int i = 0; i < args->n_overrides; i++)
    if (!strncmp(args->overrides[i], "resume=", 7)) resume = args->overrides[i] + 7;
  if (resume && *resume) {
    char *path = NULL;
    struct stat st;
    if (stat(resume, &st) != 0) tv_die("--resume %s: %s", resume, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
      path = checkpoint_find_latest(resume, NULL, err, sizeof err);
      if (!path) tv_die("--resume %s: %s", resume, err);
    } else {
      path = strdup(resume);
    }
    r->resume_state = tv_calloc(1, sizeof(CheckpointState));
    if (checkpoint_load(path, r->resume_state, err, sizeof err)) tv_die("%s", err);
    const char *yaml = r->resume_state->config_yaml;
    check_config(run_config_load_text(&r->cfg, yaml, strlen(yaml), path, err, sizeof err));
    if (r->rank == 0) printf("align: resuming %s at step %lld\n", path, (long long)r->resume_state->step);
    free(path);
  } else if (args->config_path) {
    check_config(run_config_load(&r->cfg, args->config_path, err, sizeof err));
  }
  for (int i = 0; i < args->n_overrides; i++)
    check_config(run_config_set(&r->cfg, args->overrides[i], err, sizeof err));
  check_config(run_config_validate(&r->cfg, err, sizeof err));
}

/* The first probe_samples harmful rows of the probe file (SPEC section 9 data roles). */
static void load_probe_set(AlignRun *r) {
  const RunTVaccine *tv = &r->cfg.tvaccine;
  ExampleSet chosen;
  dataset_load_role(tv->probe_data, DATASET_FORMAT_AUTO, DATA_ROLE_HARMFUL,
                    (size_t)tv->probe_samples, &chosen, &r->probe_roles);
  dataset_encode(r->tok, &chosen, r->cfg.max_len, &r->probe);
  char err[1024];
  if (dataset_check_targets(&r->probe, tv->probe_data, err, sizeof err)) tv_die("%s", err);
  data_sampler_init_probe(&r->probe_sampler, r->probe.n, tv->probe_batch, r->cfg.seed);
  r->probe_batch = batch_alloc(tv->probe_batch, r->cfg.max_len);
  r->has_probe = 1;
  example_set_free(&chosen);
}

static void setup(AlignRun *r) {
  RunConfig *c = &r->cfg;
  r->be = backend_cpu_create(c->threads);
  /* Data first: a mistake in it ends the run before minutes of weight loading. */
  r->tok = tokenizer_load(run_config_tokenizer(c));
  ExampleSet examples;
  dataset_load_role(c->data, c->data_format, DATA_ROLE_ALIGNMENT,
                    (size_t)c->max_rows, &examples, &r->data_roles);
  dataset_encode(r->tok, &examples, c->max_len, &r->data);
  char err[1024];
  if (dataset_check_targets(&r->data, c->data, err, sizeof err)) tv_die("%s", err);
  example_set_free(&examples);
  data_sampler_init_epochs(&r->sampler, r->data.n, c->batch_size, c->seed, 1);
  r->batch = batch_alloc(c->batch_size, c->max_len);

  Method method = c->method;
  int sampling = method == METHOD_TVACCINE && c->tvaccine.n_layers == 0;
  if (sampling) {
    if (!c->tvaccine.probe_data[0])
      tv_die("tvaccine.probe_data: T-Vaccine needs a harmful probe set (or a fixed tvaccine.layers)");
    load_probe_set(r);
  }

  r->hf = hf_model_open(c->model);
  r->model_cfg = hf_model_config(r->hf)->cfg; /* kept: the folder is closed after loading */
  const LlamaConfig *mc = &r->model_cfg;
  split_layers(r, mc);
  int micro = run_config_micro_batch(c);
  r->stage = stage_create(r->be, mc, &c->lora, r->l0, r->l1, micro, c->max_len);
  hf_model_load_stage(r->hf, r->stage);
  /* The weights now live in the stage: drop the mapping so its pages leave this process. */
  int files = hf_model_files_opened(r->hf);
  double mapped_mib = current_rss_mib();
  hf_model_close(r->hf);
  r->hf = NULL;
  report_ranks(r, files, mapped_mib);
  lora_set_init(r->be, stage_lora(r->stage), c->seed);
  if (c->init_adapter[0] && !r->resume_state) peft_load(c->init_adapter, mc, r->be, stage_lora(r->stage));

  r->total_steps = run_config_total_steps(c, (int64_t)r->data.n);
  TrainerConfig tc = {0};
  tc.method = method;
  tc.freeze_scope = c->tvaccine.freeze_scope;
  tc.rho = c->rho;
  tc.S = c->tvaccine.S, tc.J = c->tvaccine.J, tc.K = c->tvaccine.K;
  tc.fixed_layers = c->tvaccine.layers, tc.num_fixed = c->tvaccine.n_layers;
  tc.optim = c->optim;
  tc.optim.total_steps = r->total_steps;
  tc.seed = c->seed;
  tc.activations = c->activations;
  tc.schedule = c->dist.schedule;
  tc.activation_budget = (size_t)c->activation_budget_mib << 20;
  r->trainer = trainer_create(r->comm, r->stage, &tc, micro);
  /* The paper activates a quarter of the layers or fewer (8 of 32 for Llama-2-7B, 5 of 28 for
   * Qwen2-7B); more defeats the memory saving and the targeting, e.g. the default 8 on a
   * small model. */
  if (sampling && r->rank == 0 && 4 * c->tvaccine.S > mc->num_layers)
    fprintf(stderr, "align: warning: tvaccine.S = %d activates more than a quarter of the "
            "model's %d layers (the paper: 8 of 32 for Llama-2-7B, 5 of 28 for Qwen2-7B); "
            "consider tvaccine.S = %d\n", c->tvaccine.S, mc->num_layers,
            mc->num_layers / 4 > 1 ? mc->num_layers / 4 : 1);

  if (r->rank == 0) {
    char line[512];
    printf("align: %s on %s: %d layers over %d rank(s), LoRA r %d alpha %g, %lld steps\n",
           method_name(c->method), c->model, mc->num_layers, r->size, c->lora.r,
           c->lora.alpha, (long long)r->total_steps);
    dataset_role_summary(&r->data_roles, c->data, DATA_ROLE_ALIGNMENT, "max_rows",
                         (size_t)c->max_rows, line, sizeof line);
    printf("align: %s\n", line);
    dataset_encode_summary(&r->data, c->data, line, sizeof line);
    printf("align: %s\n", line);
    if (r->has_probe) {
      dataset_role_summary(&r->probe_roles, c->tvaccine.probe_data, DATA_ROLE_HARMFUL,
                           "tvaccine.probe_samples", (size_t)c->tvaccine.probe_samples, line,
                           sizeof line);
      printf("align: probe set %s\n", line);
      dataset_encode_summary(&r->probe, c->tvaccine.probe_data, line, sizeof line);
      printf("align: probe set %s\n", line);
    }
  }
}

static void write_run_folder(AlignRun *r) {
  if (r->rank != 0) return;
  checkpoint_dir_create(r->cfg.out);
  char path[4096];
  snprintf(path, sizeof path, "%s/config.yaml", r->cfg.out);
  char *yaml = run_config_to_yaml(&r->cfg);
  hf_write_text_file(path, yaml);
  free(yaml);
  snprintf(path, sizeof path, "%s/log.jsonl", r->cfg.out);
  r->log = runlog_open(path, r->resume_state != NULL);
}

static void fmt_duration(char *buf, size_t n, double s) {
  if (!isfinite(s) || s < 0) s = 0;
  long t = (long)(s + 0.5);
  if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
  else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
  else snprintf(buf, n, "%lds", t);
}

/* The largest step memory of any rank this step (trainer and stage buffers: activations,
 * perturbations, receive buffers), in MiB. A collective: every rank calls it. */
static double step_memory_mib(AlignRun *r) {
  TrainerMemory m = trainer_take_memory_peak(r->trainer);
  int kib = (int)(trainer_memory_step_bytes(&m) >> 10); /* KiB: 2 TiB fit an int */
  return comm_allreduce_max_int(r->comm, kib) / 1024.0;
}

static void report_step(AlignRun *r, const StepReport *rep, double step_s, double elapsed,
                        int64_t done_here, size_t tokens) {
  double step_mib = step_memory_mib(r);
  if (r->rank != 0) return;
  int count;
  const int *act = trainer_active_layers(r->trainer, &count);
  char layers[256] = "all";
  if (r->cfg.method == METHOD_TVACCINE) {
    size_t off = 0;
    layers[off++] = '[';
    for (int k = 0; k < count && off < sizeof layers - 8; k++)
      off += (size_t)snprintf(layers + off, sizeof layers - off, "%s%d", k ? "," : "", act[k]);
    snprintf(layers + off, sizeof layers - off, "]");
  }
  double eta = elapsed / (double)done_here * (double)(r->total_steps - r->step - 1);
  char eta_s[32];
  fmt_duration(eta_s, sizeof eta_s, eta);
  double mem = peak_rss_mib();
  if (r->cfg.log_every > 0 && ((r->step + 1) % r->cfg.log_every == 0 || r->step + 1 == r->total_steps))
    printf("step %lld/%lld  loss %.4f  lr %.3e  layers %s  %.0f tok/s  ETA %s  mem %.0f MiB "
           "(step buffers %.0f MiB)\n",
           (long long)r->step + 1, (long long)r->total_steps, rep->loss, rep->lr, layers,
           tokens / step_s, eta_s, mem, step_mib);
  fflush(stdout);
  RunLog *log = r->log;
  runlog_begin(log);
  runlog_int(log, "step", r->step + 1);
  runlog_int(log, "total_steps", r->total_steps);
  runlog_num(log, "loss", rep->loss);
  if (r->cfg.method != METHOD_SFT) {
    runlog_num(log, "loss_unperturbed", rep->loss_pass1);
    runlog_num(log, "perturbation_grad_norm", rep->perturb_norm);
  }
  runlog_num(log, "grad_norm", rep->grad_norm);
  runlog_num(log, "lr", rep->lr);
  runlog_str(log, "active_layers", layers);
  runlog_num(log, "tokens_per_s", tokens / step_s);
  runlog_num(log, "step_s", step_s);
  runlog_num(log, "eta_s", eta);
  runlog_num(log, "peak_rss_mib", mem);
  runlog_num(log, "step_memory_mib", step_mib);
  if (rep->probed) {
    const double *p = trainer_layer_probs(r->trainer);
    char buf[64];
    for (int l = 0; l < stage_config(r->stage)->num_layers; l++) {
      snprintf(buf, sizeof buf, "p_layer_%d", l);
      runlog_num(log, buf, p[l]);
    }
  }
  runlog_end(log);
}

static void train(AlignRun *r) {
  size_t *idx = tv_malloc((size_t)r->cfg.batch_size * sizeof(size_t));
  size_t *pidx = tv_malloc((size_t)(r->cfg.tvaccine.probe_batch + 1) * sizeof(size_t));
  double t_start = now_s();
  int64_t first = r->step;
  int stopped = 0;
  for (; r->step < r->total_steps; r->step++) {
    if (comm_allreduce_max_int(r->comm, align_stop_requested())) {
      stopped = 1;
      break;
    }
    double t0 = now_s();
    int count = data_sampler_next(&r->sampler, idx);
    dataset_fill_batch(&r->data, idx, count, &r->batch);
    const Batch no_probe = {0}, *probe = &no_probe; /* the trainer reads its B */
    if (trainer_needs_probe(r->trainer, r->step)) {
      int pc = data_sampler_next(&r->probe_sampler, pidx);
      dataset_fill_batch(&r->probe, pidx, pc, &r->probe_batch);
      probe = &r->probe_batch;
    }
    StepReport rep;
    trainer_step(r->trainer, r->step, &r->batch, probe, &rep);
    double t1 = now_s();
    report_step(r, &rep, t1 - t0, t1 - t_start, r->step - first + 1, (size_t)r->batch.B * r->batch.T);
    if (r->cfg.save_every > 0 && (r->step + 1) % r->cfg.save_every == 0 && r->step + 1 < r->total_steps)
      align_save_checkpoint(r, r->step + 1);
  }
  free(idx);
  free(pidx);
  align_save_checkpoint(r, r->step);
  if (stopped) {
    if (r->rank == 0)
      printf("align: stop requested: checkpoint saved at step %lld of %lld; continue with "
             "--resume %s\n", (long long)r->step, (long long)r->total_steps, r->cfg.out);
    return;
  }
  align_save_adapter(r);
  if (r->rank == 0)
    printf("align: done: %lld steps in %.1f s; adapter in %s/adapter\n",
           (long long)(r->step - first), now_s() - t_start, r->cfg.out);
}

int align_run(const AlignArgs *args, int *argc, char ***argv) {
  AlignRun run = {0}, *r = &run;
  r->comm = comm_init(argc, argv);
  r->rank = comm_rank(r->comm);
  r->size = comm_size(r->comm);
  resolve_config(r, args);
  check_ranks_agree(r);
  align_install_signal_handlers();
  setup(r);
  if (r->resume_state) align_restore_checkpoint(r, r->resume_state);
  write_run_folder(r);
  train(r);
  runlog_close(r->log);
  if (r->resume_state) {
    checkpoint_state_free(r->resume_state);
    free(r->resume_state);
  }
  trainer_destroy(r->trainer);
  batch_free(&r->batch);
  if (r->has_probe) {
    batch_free(&r->probe_batch);
    data_sampler_free(&r->probe_sampler);
    encoded_set_free(&r->probe);
  }
  data_sampler_free(&r->sampler);
  encoded_set_free(&r->data);
  tokenizer_free(r->tok);
  stage_destroy(r->stage);
  backend_destroy(r->be);
  run_config_free(&r->cfg);
  comm_finalize(r->comm);
  return 0;
}
