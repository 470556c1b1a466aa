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
#include "run_setup.h"
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

/* One line per rank after loading: its place in the grid, its layers, the weight files it
 * mapped, and its resident memory while mapped and after the mapping is dropped. */
static void report_ranks(AlignRun *r, int files, double mapped_mib) {
  enum { F = 7 };
  int n = r->size;
  double *info = tv_calloc((size_t)n * F, sizeof(double));
  double mine[F] = {r->replica, r->stage_rank, r->l0, r->l1, files, mapped_mib, current_rss_mib()};
  for (int j = 0; j < F; j++) info[F * r->rank + j] = mine[j];
  comm_allreduce_sum(r->comm, info, F * n);
  if (r->rank == 0)
    for (int k = 0; k < n; k++) {
      const double *x = info + F * k;
      printf("align: rank %d (replica %d, stage %d): layers [%d, %d) from %d weight file(s), %s "
             "matrices; resident %.0f MiB while mapped, %.0f MiB after\n", k, (int)x[0], (int)x[1],
             (int)x[2], (int)x[3], (int)x[4], tv_dtype_name(stage_weight_dtype(r->stage)), x[5],
             x[6]);
    }
  free(info);
}

/* The data x pipeline grid of dist.data_parallel (after the ranks agree on the config, so
 * every rank splits alike). */
static void split_grid(AlignRun *r) {
  r->pipe = comm_split_grid(r->comm, r->cfg.dist.data_parallel);
  r->stage_rank = comm_rank(r->pipe);
  r->stages = comm_size(r->pipe);
  r->replica = comm_replica(r->pipe);
  r->replicas = comm_num_replicas(r->pipe);
  const RunDist *d = &r->cfg.dist;
  if (d->n_stages > 0 && d->n_stages != r->stages)
    tv_die("dist.stages: %d stage sizes for %d pipeline stages (%d rank(s) / "
           "dist.data_parallel %d): list one size per stage", d->n_stages, r->stages, r->size,
           r->replicas);
}

/* Stage sizes: dist.stages when given, else under dist.split cost the head (V x D) weighs
 * against a decoder layer's projections, so the last stage takes fewer layers (config M on 2
 * ranks: 5 + 3). */
static void split_layers(AlignRun *r, const LlamaConfig *mc) {
  int L = mc->num_layers, P = r->stages;
  const RunDist *d = &r->cfg.dist;
  if (P > L)
    tv_die("%d pipeline stages (%d rank(s) / dist.data_parallel %d) for the %d decoder layers "
           "of %s: every stage needs at least one layer; use fewer ranks or a larger "
           "dist.data_parallel", P, r->size, r->replicas, L, r->cfg.model);
  int *sizes = tv_malloc((size_t)P * sizeof(int));
  run_setup_stage_sizes(d, mc, P, r->cfg.model, sizes);
  comm_set_layer_split(r->pipe, L, sizes);
  free(sizes);
  comm_rank_layers(r->pipe, L, r->stage_rank, &r->l0, &r->l1);
}

/* A config function's error message, if any, is the run's one error line. */
static void check_config(const char *err) {
  if (err) tv_die("%s", err);
}

/* Whether an override sets `key` ("key=..."). */
static int overrides_set(const AlignArgs *args, const char *key) {
  size_t n = strlen(key);
  for (int i = 0; i < args->n_overrides; i++)
    if (!strncmp(args->overrides[i], key, n) && args->overrides[i][n] == '=') return 1;
  return 0;
}

/* The run folder a checkpoint file lies in (".../RUN/checkpoints/step-N.h5" -> ".../RUN"),
 * malloc'd, or NULL when it does not lie in a checkpoints folder. */
static char *run_folder_of_checkpoint(const char *file) {
  char *dir = strdup(file);
  char *slash = strrchr(dir, '/');
  if (!slash) return free(dir), NULL;
  *slash = 0;
  const char *base = strrchr(dir, '/');
  base = base ? base + 1 : dir;
  if (strcmp(base, "checkpoints") != 0) return free(dir), NULL;
  if (base == dir) return strcpy(dir, "."), dir;
  dir[base - dir - 1] = 0;
  return dir;
}

static uint64_t digest_of_file(const char *path) {
  uint64_t d = RUN_DIGEST_SEED;
  char err[4200];
  if (!run_digest_file(path, &d, err, sizeof err)) tv_die("%s", err);
  return d;
}

/* Every rank resolves its config and reads its data files itself (on a cluster, possibly
 * from different disks): rank 0's digests are the reference, and the first rank that
 * differs ends the run in one line naming it and the file. */
static void check_ranks_agree(AlignRun *r) {
  if (r->size == 1) return;
  const RunConfig *c = &r->cfg;
  char *yaml = run_config_to_yaml(c);
  int bad = comm_first_rank_differing(r->comm, run_digest_bytes(RUN_DIGEST_SEED, yaml, strlen(yaml)));
  free(yaml);
  if (bad >= 0 && r->rank != 0) comm_barrier(r->comm); /* rank 0 reports and ends the job */
  if (bad >= 0)
    tv_die("align: rank %d resolved a different config from rank 0's (config file or --set "
           "overrides differ): every rank must run the same command", bad);
  const char *files[] = {c->data, c->method == METHOD_TVACCINE ? c->tvaccine.probe_data : ""};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    if (!files[i][0]) continue;
    bad = comm_first_rank_differing(r->comm, digest_of_file(files[i]));
    if (bad >= 0 && r->rank != 0) comm_barrier(r->comm);
    if (bad >= 0)
      tv_die("align: %s: rank %d reads different bytes from rank 0: every rank must see the "
             "same data files", files[i], bad);
  }
}

/* New run: defaults <- config file <- overrides in order. Resume: the checkpoint's own config
 * <- overrides, then every key that changes the numbers must still equal the checkpoint's;
 * out defaults to the folder resumed, never to the folder stored in the checkpoint. */
static void resolve_config(AlignRun *r, const AlignArgs *args) {
  char err[RUN_CONFIG_ERR_MAX];
  run_config_defaults(&r->cfg);
  const char *resume = args->resume;
  for (int i = 0; i < args->n_overrides; i++)
    if (!strncmp(args->overrides[i], "resume=", 7)) resume = args->overrides[i] + 7;
  if (resume && *resume && args->config_path)
    tv_die("align: --config and --resume cannot be combined: a resumed run keeps its "
           "checkpoint's config; change what may change with --set KEY=VALUE (see --help)");
  if (resume && *resume) {
    char *path = NULL;
    struct stat st;
    if (stat(resume, &st) != 0) tv_die("--resume %s: %s", resume, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
      path = checkpoint_find_latest(resume, NULL, err, sizeof err);
      if (!path) tv_die("--resume %s: %s", resume, err);
      r->resume_dir = strdup(resume);
    } else {
      path = strdup(resume);
      r->resume_dir = run_folder_of_checkpoint(resume);
    }
    r->resume_state = tv_calloc(1, sizeof(CheckpointState));
    if (checkpoint_load(path, r->resume_state, err, sizeof err)) tv_die("%s", err);
    const char *yaml = r->resume_state->config_yaml;
    check_config(run_config_load_text(&r->cfg, yaml, strlen(yaml), path, err, sizeof err));
    RunConfig saved;
    run_config_copy(&saved, &r->cfg);
    for (int i = 0; i < args->n_overrides; i++)
      check_config(run_config_set(&r->cfg, args->overrides[i], err, sizeof err));
    if (!overrides_set(args, "out")) {
      if (!r->resume_dir)
        tv_die("--resume %s: the checkpoint is not in a run folder's checkpoints/; say where "
               "the run continues with --out DIR", resume);
      free(r->cfg.out);
      r->cfg.out = strdup(r->resume_dir);
    }
    check_config(run_config_check_resume(&saved, &r->cfg, err, sizeof err));
    run_config_free(&saved);
    if (r->rank == 0)
      printf("align: resuming %s at step %lld in %s\n", path,
             (long long)r->resume_state->step, r->cfg.out);
    free(path);
  } else {
    if (args->config_path)
      check_config(run_config_load(&r->cfg, args->config_path, err, sizeof err));
    for (int i = 0; i < args->n_overrides; i++)
      check_config(run_config_set(&r->cfg, args->overrides[i], err, sizeof err));
    if (r->cfg.resume[0])
      tv_die("resume: set in %s; continue a run with 'tvaccine align --resume RUN_DIR' alone",
             args->config_path ? args->config_path : "the command line");
  }
  check_config(run_config_validate(&r->cfg, err, sizeof err));
}

/* Inputs named by the config exist before anything is loaded (their contents are checked as
 * they load). */
static void check_inputs_present(const RunConfig *c) {
  struct {
    const char *key, *path;
    int dir;
  } inputs[] = {
      {"model", c->model, 1},
      {"tokenizer", run_config_tokenizer(c), 1},
      {"data", c->data, 0},
      {"tvaccine.probe_data", c->method == METHOD_TVACCINE ? c->tvaccine.probe_data : "", 0},
      {"init_adapter", c->init_adapter, 1},
  };
  for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
    const char *p = inputs[i].path;
    if (!p[0]) continue;
    struct stat st;
    if (stat(p, &st) != 0) tv_die("%s %s: %s", inputs[i].key, p, strerror(errno));
    if (inputs[i].dir && !S_ISDIR(st.st_mode)) tv_die("%s %s: not a folder", inputs[i].key, p);
    if (!inputs[i].dir && S_ISDIR(st.st_mode)) tv_die("%s %s: a folder, not a file", inputs[i].key, p);
  }
}

/* Rank 0 takes the run folder before anything is loaded; the other ranks wait for it (they
 * write preemption parts into it). */
static void take_run_folder(AlignRun *r, const AlignArgs *args) {
  int ok = 1;
  if (r->rank == 0) {
    RunDirMode mode = args->overwrite ? RUN_DIR_OVERWRITE : RUN_DIR_NEW;
    if (r->resume_state && r->resume_dir && run_dir_same(r->resume_dir, r->cfg.out))
      mode = RUN_DIR_RESUME;
    char err[4200];
    r->dir = run_dir_acquire(r->cfg.out, mode, err, sizeof err);
    if (!r->dir) tv_die("%s", err);
    checkpoint_dir_create(r->cfg.out);
  }
  comm_broadcast(r->comm, &ok, sizeof ok, 0);
}

/* Digests of the tokenizer files and data sets, compared with the checkpoint's on resume. */
static uint64_t digest_files(const char *const *paths, int n, int required) {
  uint64_t d = RUN_DIGEST_SEED;
  char err[4200];
  for (int i = 0; i < n; i++) {
    if (!required && access(paths[i], F_OK) != 0) continue;
    if (!run_digest_file(paths[i], &d, err, sizeof err)) tv_die("%s", err);
  }
  return d;
}

static void check_digests(AlignRun *r) {
  const CheckpointState *st = r->resume_state;
  if (!st || r->rank != 0) return;
  struct {
    const char *key;
    uint64_t saved, now;
  } d[] = {{"model", st->model_digest, r->model_digest},
           {"tokenizer", st->tokenizer_digest, r->tokenizer_digest},
           {"data", st->data_digest, r->data_digest},
           {"tvaccine.probe_data", st->probe_digest, r->probe_digest}};
  for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
    if (d[i].saved != d[i].now)
      tv_die("%s: its contents differ from what the checkpoint's run read (digest %016llx, "
             "now %016llx); a resumed run must read the same inputs", d[i].key,
             (unsigned long long)d[i].saved, (unsigned long long)d[i].now);
}

/* The first probe_samples harmful rows of the probe file (SPEC section 9 data roles). */
static void load_probe_set(AlignRun *r) {
  const RunTVaccine *tv = &r->cfg.tvaccine;
  ExampleSet chosen;
  r->probe_digest = digest_files((const char *const *)&tv->probe_data, 1, 1);
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

/* Sum mod 2^64 of one value per stage of a pipeline, exact: 16-bit pieces summed as doubles. */
static uint64_t sum_over_stages(AlignRun *r, uint64_t x) {
  double piece[4];
  for (int k = 0; k < 4; k++) piece[k] = (double)((x >> (16 * k)) & 0xffff);
  comm_allreduce_sum(r->pipe, piece, 4);
  uint64_t sum = 0;
  for (int k = 0; k < 4; k++) sum += (uint64_t)piece[k] << (16 * k);
  return sum;
}

static void setup(AlignRun *r) {
  RunConfig *c = &r->cfg;
  /* Everything that can be checked cheaply is, before minutes of weight loading and before
   * memory sized by config.json is taken: the folder's config and tensor headers, the
   * tokenizer against the model's vocabulary, the adapter's config, then the data. */
  const char *tok_dir = run_config_tokenizer(c);
  char *tok_files[2] = {hf_path_join(tok_dir, "tokenizer.json"),
                        hf_path_join(tok_dir, "tokenizer_config.json")};
  r->tokenizer_digest = digest_files((const char *const *)tok_files, 1, 1) ^
                        digest_files((const char *const *)tok_files + 1, 1, 0);
  free(tok_files[0]), free(tok_files[1]);
  r->tok = tokenizer_load(tok_dir);
  r->hf = hf_model_open(c->model);
  r->model_cfg = hf_model_config(r->hf)->cfg; /* kept: the folder is closed after loading */
  const LlamaConfig *mc = &r->model_cfg;
  split_layers(r, mc);
  hf_model_check_stage(r->hf, r->l0, r->l1);
  if (tokenizer_vocab_size(r->tok) > mc->vocab_size)
    tv_die("tokenizer %s: its ids reach %d, beyond the model's vocab_size %d (%s/config.json)",
           tok_dir, tokenizer_vocab_size(r->tok) - 1, mc->vocab_size, c->model);
  if (c->init_adapter[0] && !r->resume_state) peft_check_config(c->init_adapter, mc, &c->lora);

  r->data_digest = digest_files((const char *const *)&c->data, 1, 1);
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

  int micro = run_config_micro_batch(c);
  r->stage = run_setup_hf_stage(r->be, r->hf, &c->lora, r->l0, r->l1, micro, c->max_len,
                                run_config_weight_dtype(c));
  r->model_digest = sum_over_stages(r, hf_model_digest(r->hf));
  /* The weights now live in the stage: drop the mapping so its pages leave this process. */
  int files = hf_model_files_opened(r->hf);
  double mapped_mib = current_rss_mib();
  hf_model_close(r->hf);
  r->hf = NULL;
  report_ranks(r, files, mapped_mib);
  lora_set_init(r->be, stage_lora(r->stage), c->seed);
  if (c->init_adapter[0] && !r->resume_state) peft_load(c->init_adapter, mc, r->be, stage_lora(r->stage));

  r->total_steps = run_config_total_steps(c, (int64_t)r->data.n);
  TrainerConfig tc = run_setup_trainer_config(c, r->total_steps);
  r->trainer = trainer_create(r->pipe, r->stage, &tc, micro);
  /* The paper activates a quarter of the layers or fewer (8 of 32 for Llama-2-7B, 5 of 28 for
   * Qwen2-7B); more defeats the memory saving and the targeting, e.g. the default 8 on a
   * 16-layer model. Models under 8 layers are left alone: the synthetic 4-layer world needs
   * 2 of its layers to align at all (bench/results/study_sweep.md). */
  if (sampling && r->rank == 0 && mc->num_layers >= 8 && 4 * c->tvaccine.S > mc->num_layers)
    fprintf(stderr, "align: warning: tvaccine.S = %d activates more than a quarter of the "
            "model's %d layers (the paper: 8 of 32 for Llama-2-7B, 5 of 28 for Qwen2-7B); "
            "consider tvaccine.S = %d\n", c->tvaccine.S, mc->num_layers,
            mc->num_layers / 4 > 1 ? mc->num_layers / 4 : 1);

  if (r->rank == 0) {
    char line[512];
    printf("align: %s on %s: %d layers over %d rank(s) (%d pipeline replica(s) of %d "
           "stage(s)), LoRA r %d alpha %g, %lld steps\n", method_name(c->method), c->model,
           mc->num_layers, r->size, r->replicas, r->stages, c->lora.r, c->lora.alpha,
           (long long)r->total_steps);
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
  char path[4096];
  snprintf(path, sizeof path, "%s/config.yaml", r->cfg.out);
  char *yaml = run_config_to_yaml(&r->cfg);
  hf_write_text_file(path, yaml);
  free(yaml);
  snprintf(path, sizeof path, "%s/log.jsonl", r->cfg.out);
  if (r->resume_state) {
    char from[4096];
    snprintf(from, sizeof from, "%s/log.jsonl", r->resume_dir ? r->resume_dir : r->cfg.out);
    r->log = runlog_open_resumed(path, r->resume_dir ? from : NULL, r->resume_state->step);
  } else {
    r->log = runlog_open(path, 0);
  }
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

/* A step whose loss or gradient norm is not finite made no update (trainer_step), but it did
 * move the data cursor and maybe the sampling state; the state kept at the end of the last
 * good step is saved before the run stops with an error. */
static void stop_on_nonfinite(AlignRun *r, const StepReport *rep) {
  /* A save_every checkpoint of that step is already there: it stays as it is. */
  int saved = r->cfg.save_every > 0 && r->step > 0 && r->step % r->cfg.save_every == 0;
  if (!saved) preempt_save_kept(r->preempt);
  if (r->rank == 0) {
    char *path = checkpoint_path(r->cfg.out, r->step);
    fprintf(stderr,
            "tvaccine: error: step %lld: the loss is %g and the gradient norm %g: stopped "
            "before the optimizer step; %s holds the last good state (step %lld) -- lower "
            "optim.lr or set optim.max_grad_norm\n",
            (long long)r->step + 1, rep->loss, rep->grad_norm, path, (long long)r->step);
    free(path);
  }
}

/* Returns 0, or 1 when the run stopped on a non-finite step. */
static int train(AlignRun *r) {
  size_t *idx = tv_malloc((size_t)r->cfg.batch_size * sizeof(size_t));
  size_t *pidx = tv_malloc((size_t)(r->cfg.tvaccine.probe_batch + 1) * sizeof(size_t));
  double t_start = now_s();
  int64_t first = r->step;
  r->preempt = preempt_start(r);
  /* Test hook: rank 0 stalls this long inside every step (the other ranks then wait inside
   * MPI), to test preemption of long steps on a tiny model. */
  const char *stall_env = getenv("TVACCINE_TEST_STEP_STALL_S");
  double stall_s = stall_env && r->rank == 0 ? atof(stall_env) : 0;
  for (; r->step < r->total_steps; r->step++) {
    double t0 = now_s();
    if (stall_s > 0) usleep((useconds_t)(stall_s * 1e6));
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
    if (rep.nonfinite) {
      stop_on_nonfinite(r, &rep);
      break;
    }
    preempt_keep(r->preempt, r, r->step + 1);
    double t1 = now_s();
    report_step(r, &rep, t1 - t0, t1 - t_start, r->step - first + 1, (size_t)r->batch.B * r->batch.T);
    if (r->cfg.save_every > 0 && (r->step + 1) % r->cfg.save_every == 0 && r->step + 1 < r->total_steps)
      align_save_checkpoint(r, r->step + 1);
  }
  free(idx);
  free(pidx);
  if (r->step < r->total_steps) {
    preempt_stop(r->preempt);
    return 1;
  }
  align_save_checkpoint(r, r->step);
  align_save_adapter(r);
  preempt_stop(r->preempt);
  if (r->rank == 0)
    printf("align: done: %lld steps in %.1f s; adapter in %s/adapter\n",
           (long long)(r->step - first), now_s() - t_start, r->cfg.out);
  return 0;
}

int align_run(const AlignArgs *args, int *argc, char ***argv) {
  AlignRun run = {0}, *r = &run;
  r->comm = comm_init(argc, argv);
  r->rank = comm_rank(r->comm);
  r->size = comm_size(r->comm);
  resolve_config(r, args);
  /* One GPU per rank: the rank's index on its node (device: cuda). First, since a missing
   * device is known before any file is read. */
  r->be = backend_create(r->cfg.device, comm_local_rank(r->comm), r->cfg.threads);
  check_inputs_present(&r->cfg);
  check_ranks_agree(r);
  split_grid(r);
  take_run_folder(r, args);
  setup(r);
  if (r->resume_state) {
    align_restore_checkpoint(r, r->resume_state);
    check_digests(r);
  }
  write_run_folder(r);
  int rc = train(r);
  runlog_close(r->log);
  run_dir_release(r->dir);
  free(r->resume_dir);
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
  return rc;
}
