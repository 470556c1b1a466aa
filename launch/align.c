/* `tvaccine align`: safety alignment with sft, vaccine or tvaccine (SPEC sections 4-7) on
 * one or many MPI ranks: config and overrides, model, data, the step loop, outputs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "align_run.h"
#include "check.h"
#include "subcommands.h"

static void align_usage(FILE *out) {
  fprintf(out,
          "usage: tvaccine align --config FILE [--set KEY=VALUE ...] [--KEY VALUE ...] [--overwrite]\n"
          "       tvaccine align --resume RUN_DIR|CHECKPOINT [--out DIR] [--set KEY=VALUE ...]\n"
          "\n"
          "Aligns a Hugging Face Llama-family model with LoRA using method sft, vaccine or\n"
          "tvaccine (Targeted Vaccine). Run under mpirun to split the layers over ranks.\n"
          "\n"
          "  --config FILE        YAML run config (see configs/); keys absent keep defaults\n"
          "  --set KEY=VALUE      override any config key, dotted for nested ones:\n"
          "                       --set tvaccine.S=2 --set lora.r=16 --set optim.lr=1e-4\n"
          "  --KEY VALUE          the same for a top-level key, '-' for '_':\n"
          "                       --out DIR, --method tvaccine, --rho 3, --max-steps 100,\n"
          "                       --init-adapter DIR, --seed 1, --threads 2, --data FILE\n"
          "  --out DIR            the run folder: created with its parents, locked while the\n"
          "                       run lasts; a new run refuses a folder that is not empty\n"
          "  --overwrite          let a new run replace an earlier run's files in --out\n"
          "  --resume PATH        continue a run from its latest checkpoint (a run folder) or\n"
          "                       from one checkpoint file, in that run folder (or in a new\n"
          "                       --out). The checkpoint's config is used; --config is refused;\n"
          "                       --set may change only out, save_every, log_every, threads,\n"
          "                       max_steps / epochs (to lengthen the run) and the input paths\n"
          "                       (model, tokenizer, data, tvaccine.probe_data), whose contents\n"
          "                       must be the same; any other change is an error naming the key\n"
          "  --help               this text\n"
          "\n"
          "Outputs in the run folder (out): config.yaml (the resolved config), log.jsonl (one\n"
          "line per step; layer probabilities whenever they are recomputed), checkpoints/\n"
          "(HDF5, every save_every steps and at the end) and adapter/ (a PEFT LoRA folder).\n"
          "SIGTERM, SIGINT or SIGUSR1 saves the last completed step within a second, without\n"
          "waiting for the step in flight, and exits 0 (every rank, under mpirun or srun).\n"
          "A step whose loss or gradient norm is NaN or inf stops the run before the optimizer\n"
          "step, with an error; the last good state is saved as a checkpoint.\n");
}

/* --KEY VALUE -> "key=value" with '-' turned into '_' in the key. */
static char *assignment_of(const char *option, const char *value) {
  size_t n = strlen(option) + strlen(value) + 2;
  char *a = tv_malloc(n);
  snprintf(a, n, "%s=%s", option, value);
  for (char *p = a; *p && *p != '='; p++)
    if (*p == '-') *p = '_';
  return a;
}

int cmd_align(int argc, char **argv) {
  AlignArgs args = {0};
  args.overrides = tv_calloc((size_t)argc + 1, sizeof(char *));
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      align_usage(stdout);
      return 0;
    }
    if (strncmp(a, "--", 2) != 0) tv_die("align: unexpected argument '%s' (try --help)", a);
    if (!strcmp(a, "--overwrite")) {
      args.overwrite = 1;
      continue;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    char key[256];
    const char *value;
    if (eq) { /* --key=value */
      snprintf(key, sizeof key, "%.*s", (int)(eq - name), name);
      value = eq + 1;
    } else {
      if (i + 1 >= argc) tv_die("align: option --%s needs a value", name);
      snprintf(key, sizeof key, "%s", name);
      value = argv[++i];
    }
    if (!strcmp(key, "config")) {
      args.config_path = value;
    } else if (!strcmp(key, "set")) {
      if (!strchr(value, '=')) tv_die("align: --set expects KEY=VALUE, got '%s'", value);
      args.overrides[args.n_overrides++] = strdup(value);
    } else {
      if (!strcmp(key, "resume")) args.resume = value;
      args.overrides[args.n_overrides++] = assignment_of(key, value);
    }
  }
  if (!args.config_path && !args.resume)
    tv_die("align: give a run config with --config FILE (or --resume RUN_DIR); try --help");
  if (args.overwrite && args.resume)
    tv_die("align: --overwrite is for a new run; --resume continues a run in its own folder");
  int rc = align_run(&args, &argc, &argv);
  for (int i = 0; i < args.n_overrides; i++) free(args.overrides[i]);
  free(args.overrides);
  return rc;
}
