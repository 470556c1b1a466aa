/* `tvaccine demo`: the whole study of SPEC sections 8 and 10 in one command. Builds the
 * synthetic world and pretrains its unaligned base, aligns it with sft, vaccine and tvaccine,
 * attacks each aligned model at every harmful fraction p, evaluates every model (harmful
 * score, fine-tune accuracy, a second benign accuracy, refusal rate) and reports a table and
 * plots. Each phase is another subcommand run as a child process (demo_phase.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "demo.h"
#include "llama_config.h"
#include "run_config.h"
#include "subcommands.h"
#include "synth.h"

/* The defaults printed are the key table's (run_config_defaults), so help cannot drift. */
static void demo_usage(FILE *out) {
  RunConfig rc;
  run_config_defaults(&rc);
  const RunDemo *d = &rc.demo;
  fprintf(out,
          "usage: tvaccine demo [--out DIR] [--quick] [--fresh] [--KEY VALUE ...] [--set KEY=VALUE ...]\n"
          "\n"
          "The study in one command, on the built-in synthetic safety world (SPEC section 10):\n"
          "build the world and pretrain its unaligned base model -> align it with sft, vaccine\n"
          "and tvaccine -> attack each aligned model (harmful fine-tuning on a poison mix) at\n"
          "every p -> generate answers to the harmful and the benign test prompts -> evaluate.\n"
          "Prints a table (harmful score HS, fine-tune accuracy FA, a second benign accuracy and\n"
          "the refusal rate per method and p; the base and the unattacked aligned models as\n"
          "reference rows; alignment step time and memory per method) and writes DIR/results.md,\n"
          "DIR/results.json and, with gnuplot, the plots DIR/hs_vs_p.{png,svg} and\n"
          "DIR/layer_probs.{png,svg} (T-Vaccine's layer probabilities over steps). Each phase is\n"
          "one subcommand in a child process, its output in DIR/logs/; a phase whose commands and\n"
          "inputs are unchanged since it finished (DIR/stamps/) is reused by the next run.\n"
          "\n"
          "  --out DIR             the demo's folder (default %s)\n"
          "  --seed S              seed of the world, the runs and the poison mixes (default %llu)\n"
          "  --quick               a tiny world and a few steps of everything: a smoke test of the\n"
          "                        whole pipeline (about 12 s of CPU); its numbers mean nothing\n"
          "  --fresh               redo every phase (forget the stamps)\n"
          "  --threads N           CPU threads of each phase (default: all cores)\n"
          "  --layers N            decoder layers of the base model (default %d)\n"
          "  --width D             hidden size (default %d)   --ffn F  MLP width (default %d)\n"
          "  --heads H             attention heads (default %d) --kv-heads K (default %d)\n"
          "  --pretrain-epochs E   pretraining epochs of the base model (default %d)\n"
          "  --align-steps N       alignment steps of each method (default %d)\n"
          "  --align-lr LR         alignment learning rate (default %g)\n"
          "  --rho R               perturbation intensity of vaccine and tvaccine (default %g)\n"
          "  --tvaccine-s S        layers T-Vaccine activates (default %d)\n"
          "  --tvaccine-j J        T-Vaccine resample interval (default %d)\n"
          "  --tvaccine-k K        T-Vaccine probe interval (default %d)\n"
          "  --attack-lr LR        attack learning rate (default %g)\n"
          "  --attack-steps N      attack steps (default %d)\n"
          "  --attack-n N          samples of each poison mix (default %d)\n"
          "  --p LIST              harmful fractions of the attacks (default %s)\n"
          "  --task T              the attack's benign task, scored as FA (default %s)\n"
          "  --second-task T       a second benign task, scored beside it (default %s)\n"
          "  --eval-prompts N      test prompts per measure (default %d)\n"
          "  --max-new-tokens N    token limit of each answer (default %d)\n"
          "\n"
          "Each option --KEY is the run-config key demo.KEY, '-' read as '_' (demo.attack_lr):\n"
          "--set demo.p=0,0.1 and --p=0,0.1 are --p 0,0.1.\n",
          d->out, (unsigned long long)d->seed, d->layers, d->width, d->ffn, d->heads, d->kv_heads,
          d->pretrain_epochs, d->align_steps, d->align_lr, d->rho, d->tvaccine_s, d->tvaccine_j,
          d->tvaccine_k, d->attack_lr, d->attack_steps, d->attack_n, d->p, d->task,
          d->second_task, d->eval_prompts, d->max_new_tokens);
  run_config_free(&rc);
}

/* --quick: every size and step count small, in one place. */
static void apply_quick(RunDemo *d) {
  d->layers = 2, d->width = 32, d->heads = 2, d->kv_heads = 1, d->ffn = 64;
  d->pretrain_epochs = 1;
  d->align_steps = 4, d->tvaccine_s = 1, d->tvaccine_j = 2, d->tvaccine_k = 3;
  d->attack_steps = 3, d->attack_n = 40;
  d->eval_prompts = 8, d->max_new_tokens = 12;
}

/* "0,0.05,0.1" -> p[]; one error line naming demo.p. */
static int parse_p_list(const char *text, double *p) {
  int n = 0;
  const char *s = text;
  while (*s) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v >= 0 && v <= 1))
      tv_die("demo.p '%s': expected comma-separated fractions in [0, 1]", text);
    if (n == DEMO_MAX_P) tv_die("demo.p '%s': at most %d fractions", text, DEMO_MAX_P);
    for (int i = 0; i < n; i++)
      if (p[i] == v) tv_die("demo.p '%s': %g is listed twice", text, v);
    p[n++] = v;
    s = end;
    if (*s == ',') s++;
    else if (*s) tv_die("demo.p '%s': expected comma-separated fractions in [0, 1]", text);
  }
  if (n == 0) tv_die("demo.p is empty: give at least one harmful fraction");
  return n;
}

typedef struct {
  const RunDemo *d;
  DemoRunner run;
  char world[4096];
  double p[DEMO_MAX_P];
  int n_p;
} Study;

static void add_threads(DemoArgs *a, const RunDemo *d) { demo_args_add(a, "--threads=%d", d->threads); }

static void world_phase(Study *st) {
  const RunDemo *d = st->d;
  DemoPhase ph = {.id = "world", .label = "world + pretrain the base"};
  snprintf(ph.dir, sizeof ph.dir, "%s", st->world);
  DemoArgs *a = &ph.cmds[ph.n_cmds++];
  demo_args_add(a, "tvaccine");
  demo_args_add(a, "synth");
  demo_args_add(a, "--out=%s", st->world);
  demo_args_add(a, "--seed=%llu", (unsigned long long)d->seed);
  demo_args_add(a, "--layers=%d", d->layers);
  demo_args_add(a, "--width=%d", d->width);
  demo_args_add(a, "--heads=%d", d->heads);
  demo_args_add(a, "--kv-heads=%d", d->kv_heads);
  demo_args_add(a, "--ffn=%d", d->ffn);
  demo_args_add(a, "--epochs=%d", d->pretrain_epochs);
  add_threads(a, d);
  demo_run_phase(&st->run, &ph);
}

static void align_phase(Study *st, Method m) {
  const RunDemo *d = st->d;
  DemoPhase ph = {.deps = {"world"}};
  snprintf(ph.id, sizeof ph.id, "align-%s", method_names[m]);
  snprintf(ph.label, sizeof ph.label, "align %s", method_names[m]);
  snprintf(ph.dir, sizeof ph.dir, "%s/align/%s", st->run.out, method_names[m]);
  DemoArgs *a = &ph.cmds[ph.n_cmds++];
  demo_args_add(a, "tvaccine");
  demo_args_add(a, "align");
  demo_args_add(a, "--config=%s/align.yaml", st->world);
  demo_args_add(a, "--method=%s", method_names[m]);
  demo_args_add(a, "--out=%s", ph.dir);
  demo_args_add(a, "--seed=%llu", (unsigned long long)d->seed);
  demo_args_add(a, "--max-steps=%d", d->align_steps);
  demo_args_add(a, "--rho=%.17g", d->rho);
  demo_args_add(a, "--set=optim.lr=%.17g", d->align_lr);
  demo_args_add(a, "--set=tvaccine.S=%d", d->tvaccine_s);
  demo_args_add(a, "--set=tvaccine.J=%d", d->tvaccine_j);
  demo_args_add(a, "--set=tvaccine.K=%d", d->tvaccine_k);
  demo_args_add(a, "--set=log_every=50");
  add_threads(a, d);
  demo_run_phase(&st->run, &ph);
}

static void attack_dir(const Study *st, Method m, int i, char *buf, size_t n) {
  snprintf(buf, n, "%s/attack/%s-p%g", st->run.out, method_names[m], st->p[i]);
}

static void attack_phase(Study *st, Method m, int i) {
  const RunDemo *d = st->d;
  DemoPhase ph = {.deps = {"world"}};
  char align_id[64];
  snprintf(align_id, sizeof align_id, "align-%s", method_names[m]);
  ph.deps[1] = align_id;
  snprintf(ph.id, sizeof ph.id, "attack-%s-p%g", method_names[m], st->p[i]);
  snprintf(ph.label, sizeof ph.label, "attack %s p=%g", method_names[m], st->p[i]);
  attack_dir(st, m, i, ph.dir, sizeof ph.dir);
  DemoArgs *a = &ph.cmds[ph.n_cmds++];
  demo_args_add(a, "tvaccine");
  demo_args_add(a, "attack");
  demo_args_add(a, "--model=%s/base", st->world);
  demo_args_add(a, "--adapter=%s/align/%s/adapter", st->run.out, method_names[m]);
  demo_args_add(a, "--harmful=%s/attack_harmful.json", st->world);
  demo_args_add(a, "--benign=%s/benign_%s_train.json", st->world, d->task);
  demo_args_add(a, "--out=%s", ph.dir);
  demo_args_add(a, "--p=%.17g", st->p[i]);
  demo_args_add(a, "--n=%d", d->attack_n);
  demo_args_add(a, "--seed=%llu", (unsigned long long)d->seed);
  demo_args_add(a, "--set=optim.lr=%.17g", d->attack_lr);
  demo_args_add(a, "--set=max_steps=%d", d->attack_steps);
  demo_args_add(a, "--set=max_len=96");
  demo_args_add(a, "--set=log_every=50");
  demo_args_add(a, "--set=threads=%d", d->threads);
  demo_run_phase(&st->run, &ph);
}

/* generate + eval of one prompt set into DIR/<name>.jsonl, <name>_summary.json. */
static void add_measure(DemoPhase *ph, const Study *st, const char *model, const char *adapter,
                        const char *prompts, const char *name, const char *task) {
  const RunDemo *d = st->d;
  DemoArgs *g = &ph->cmds[ph->n_cmds++];
  demo_args_add(g, "tvaccine");
  demo_args_add(g, "generate");
  demo_args_add(g, "--model=%s", model);
  if (adapter) demo_args_add(g, "--adapter=%s", adapter);
  demo_args_add(g, "--prompts=%s/%s", st->world, prompts);
  demo_args_add(g, "--max-prompts=%d", d->eval_prompts);
  demo_args_add(g, "--max-new-tokens=%d", d->max_new_tokens);
  demo_args_add(g, "--out=%s/%s.jsonl", ph->dir, name);
  add_threads(g, d);
  DemoArgs *e = &ph->cmds[ph->n_cmds++];
  demo_args_add(e, "tvaccine");
  demo_args_add(e, "eval");
  demo_args_add(e, "--answers=%s/%s.jsonl", ph->dir, name);
  if (task) demo_args_add(e, "--task=%s", task);
  else demo_args_add(e, "--judge=synth");
  demo_args_add(e, "--world=%s", st->world);
  demo_args_add(e, "--out=%s/%s_verdicts.jsonl", ph->dir, name);
  demo_args_add(e, "--summary=%s/%s_summary.json", ph->dir, name);
  add_threads(e, d);
}

/* Evaluates a model (base folder + optional adapter) as phase `id`; returns its folder. */
static void eval_phase(Study *st, const char *id, const char *label, const char *dep,
                       const char *model, const char *adapter, DemoCell *cell) {
  const RunDemo *d = st->d;
  DemoPhase ph = {.deps = {"world", dep}};
  snprintf(ph.id, sizeof ph.id, "eval-%s", id);
  snprintf(ph.label, sizeof ph.label, "evaluate %s", label);
  snprintf(ph.dir, sizeof ph.dir, "%s/eval/%s", st->run.out, id);
  char prompts[128];
  add_measure(&ph, st, model, adapter, "harmful_test.json", "harmful", NULL);
  snprintf(prompts, sizeof prompts, "benign_%s_test.json", d->task);
  add_measure(&ph, st, model, adapter, prompts, "task", d->task);
  snprintf(prompts, sizeof prompts, "benign_%s_test.json", d->second_task);
  add_measure(&ph, st, model, adapter, prompts, "task2", d->second_task);
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", ph.dir);
  demo_run_phase(&st->run, &ph);
  demo_read_eval(dir, cell);
}

static void check_settings(const RunDemo *d) {
  LlamaConfig c = llama_config_default(256, d->width, d->ffn, d->layers, d->heads, d->kv_heads);
  char msg[256];
  if (llama_config_validate(&c, msg, sizeof msg))
    tv_die("demo: the base model of demo.layers/width/ffn/heads/kv_heads: %s", msg);
  if (d->tvaccine_s > d->layers)
    tv_die("demo.tvaccine_s %d is more than the model's %d layers (demo.layers)", d->tvaccine_s,
           d->layers);
  if (!strcmp(d->task, d->second_task))
    tv_die("demo.second_task '%s' must differ from demo.task: it is the second benign accuracy", d->second_task);
}

/* The world's tasks are known once it exists: the task names are checked right after it. */
static void check_tasks(const Study *st) {
  SynthWorld *w = synth_load_world(st->world);
  const char *keys[2] = {"demo.task", "demo.second_task"}, *names[2] = {st->d->task, st->d->second_task};
  for (int k = 0; k < 2; k++)
    if (synth_task_index(w, names[k]) < 0) {
      char list[256] = "";
      for (int t = 0; t < w->n_tasks; t++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", t ? ", " : "",
                 w->tasks[t].name);
      tv_die("%s '%s' is not a task of the world (its tasks: %s)", keys[k], names[k], list);
    }
  synth_world_free(w);
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
  RunDemo d = rc.demo;
  if (d.quick) apply_quick(&d);
  if (!d.out[0]) tv_die("demo.out is empty: give the demo's folder");
  check_settings(&d);
  Study st = {.d = &d};
  st.n_p = parse_p_list(d.p, st.p);
  int total = 1 + METHOD_COUNT + 1 + METHOD_COUNT + 2 * METHOD_COUNT * st.n_p;
  demo_runner_init(&st.run, d.out, d.fresh, total);
  snprintf(st.world, sizeof st.world, "%s/world", d.out);
  printf("demo: T-Vaccine against SFT and Vaccine on the synthetic world, %d phases in %s%s "
         "(progress of each phase in %s/logs/)\n", total, d.out,
         d.quick ? " (--quick: tiny settings, the numbers mean nothing)" : "", d.out);
  fflush(stdout);

  DemoResults res = {.settings = &d, .n_p = st.n_p, .task = d.task, .task2 = d.second_task, .align_steps = d.align_steps};
  memcpy(res.p, st.p, sizeof st.p);
  world_phase(&st);
  check_tasks(&st);
  for (int m = 0; m < METHOD_COUNT; m++) align_phase(&st, (Method)m);
  char model[4200], adapter[4096];
  snprintf(model, sizeof model, "%s/base", st.world);
  eval_phase(&st, "base", "the unaligned base", NULL, model, NULL, &res.base);
  for (int m = 0; m < METHOD_COUNT; m++) {
    char id[64], label[64], dep[64];
    snprintf(id, sizeof id, "%s-aligned", method_names[m]);
    snprintf(label, sizeof label, "%s, aligned, not attacked", method_names[m]);
    snprintf(dep, sizeof dep, "align-%s", method_names[m]);
    snprintf(adapter, sizeof adapter, "%s/align/%s/adapter", d.out, method_names[m]);
    eval_phase(&st, id, label, dep, model, adapter, &res.aligned[m]);
  }
  for (int m = 0; m < METHOD_COUNT; m++)
    for (int i = 0; i < st.n_p; i++) {
      attack_phase(&st, (Method)m, i);
      char id[64], label[64], dep[64], dir[4096];
      snprintf(id, sizeof id, "%s-p%g", method_names[m], st.p[i]);
      snprintf(label, sizeof label, "%s, attacked at p=%g", method_names[m], st.p[i]);
      snprintf(dep, sizeof dep, "attack-%s-p%g", method_names[m], st.p[i]);
      attack_dir(&st, (Method)m, i, dir, sizeof dir);
      char merged[4200], attack_adapter[4200];
      snprintf(merged, sizeof merged, "%s/merged", dir);
      snprintf(attack_adapter, sizeof attack_adapter, "%s/run/adapter", dir);
      eval_phase(&st, id, label, dep, merged, attack_adapter, &res.attacked[m][i]);
    }
  for (int m = 0; m < METHOD_COUNT; m++) {
    char log[4096];
    snprintf(log, sizeof log, "%s/align/%s/log.jsonl", d.out, method_names[m]);
    demo_read_align_log(log, &res, (Method)m);
  }
  printf("demo: %d of %d phases ran, %d reused, %.0f s\n\n", st.run.ran, total, total - st.run.ran,
         now_s() - st.run.t0);
  demo_write_report(d.out, &res);
  char tv_log[4096];
  snprintf(tv_log, sizeof tv_log, "%s/align/tvaccine/log.jsonl", d.out);
  demo_write_plots(d.out, &res, tv_log, d.layers);
  run_config_free(&rc);
  return 0;
}
