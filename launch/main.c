/* tvaccine: entry point and subcommand dispatch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cpu/blas_select.h"
#include "subcommands.h"

#define TV_VERSION "0.1.0"

static void usage(FILE *out) {
  fprintf(out,
          "usage: tvaccine <command> [options]\n"
          "\n"
          "Targeted Vaccine (T-Vaccine) safety alignment for Llama-family models.\n"
          "\n"
          "commands:\n"
          "  align   safety alignment with sft, vaccine or tvaccine (T-Vaccine)\n"
          "  synth   build the synthetic safety world and pretrain its unaligned base model\n"
          "  export  write an adapter as a PEFT folder, or merged into a Hugging Face model\n"
          "  attack  harmful fine-tuning of an aligned model on a poison mix (p, n)\n"
          "  generate  greedy answers of a model (+ adapter) to a prompt file, as JSON Lines\n"
          "  eval    harmful score (classifier or synthetic judge), fine-tune accuracy, refusal rate\n"
          "  demo    the whole study in one command: synthetic world, align (sft, vaccine,\n"
          "          tvaccine), attack at each p, evaluate; a table and plots\n"
          "  bench   time one LoRA training step against the machine's sgemm rate\n"
          "  plan    per-rank GPU memory of a run and whether it fits (config.json only)\n"
          "\n"
          "Run 'tvaccine <command> --help' for the options of a command.\n"
          "Other options: --help, --version.\n");
}

/* Restarts once with the variables the CPU backend wants set before its libraries load (a
 * better OPENBLAS_CORETYPE, the OpenMP wait policy); values the user or the environment
 * already set are always respected, so the restarted process does not restart again. */
static void restart_with_start_env(char **argv) {
  EnvVar want[CPU_START_ENV_MAX];
  int n = backend_cpu_start_env(want);
  if (n == 0) return;
  int asks_for_help = 0;
  for (char **a = argv + 1; *a; a++)
    asks_for_help |= !strcmp(*a, "--help") || !strcmp(*a, "-h") || !strcmp(*a, "--version");
  for (int i = 0; i < n; i++) {
    if (!strcmp(want[i].name, "OPENBLAS_CORETYPE") && !asks_for_help)
      fprintf(stderr,
              "tvaccine: note: OpenBLAS picked its %s kernels on this CPU; restarting with "
              "OPENBLAS_CORETYPE=%s (set OPENBLAS_CORETYPE to choose yourself)\n",
              backend_cpu_blas_name(), want[i].value);
    setenv(want[i].name, want[i].value, 0);
  }
  execv("/proc/self/exe", argv);
  /* exec failed: carry on with the libraries as they started */
}

/* The value of variable name in the environment this process STARTED with, which is what
 * libgomp read when it loaded (setenv later changes getenv, not that): /proc/self/environ,
 * or getenv where /proc is missing. NULL when unset. */
static const char *start_value(const char *name, char *buf, size_t n) {
  FILE *f = fopen("/proc/self/environ", "rb");
  if (!f) return getenv(name);
  size_t len = strlen(name), used = 0;
  int c, found = 0;
  char line[256];
  while ((c = fgetc(f)) != EOF) {
    if (c) {
      if (used + 1 < sizeof line) line[used++] = (char)c;
      continue;
    }
    line[used] = '\0';
    if (used > len && !strncmp(line, name, len) && line[len] == '=') {
      snprintf(buf, n, "%s", line + len + 1);
      found = 1;
      break;
    }
    used = 0;
  }
  fclose(f);
  return found ? buf : NULL;
}

/* "GOMP_SPINCOUNT=10000", "OMP_WAIT_POLICY=passive", both, or "OpenMP's default": the wait
 * policy the OpenMP runtime started with. */
static void wait_policy_text(char *buf, size_t n) {
  char pb[64], sb[64];
  const char *policy = start_value("OMP_WAIT_POLICY", pb, sizeof pb);
  const char *spin = start_value("GOMP_SPINCOUNT", sb, sizeof sb);
  if (!policy && !spin)
    snprintf(buf, n, "OpenMP's default");
  else
    snprintf(buf, n, "%s%s%s%s%s", policy ? "OMP_WAIT_POLICY=" : "", policy ? policy : "",
             policy && spin ? " " : "", spin ? "GOMP_SPINCOUNT=" : "", spin ? spin : "");
}

int main(int argc, char **argv) {
  restart_with_start_env(argv);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(cmd, "--version")) {
    char waits[160];
    wait_policy_text(waits, sizeof waits);
    printf("tvaccine %s (OpenBLAS kernels: %s; OpenMP waits: %s)\n", TV_VERSION,
           backend_cpu_blas_name(), waits);
    return 0;
  }
  if (!strcmp(cmd, "demo")) return cmd_demo(argc - 1, argv + 1);
  if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
  if (!strcmp(cmd, "align")) return cmd_align(argc - 1, argv + 1);
  if (!strcmp(cmd, "synth")) return cmd_synth(argc - 1, argv + 1);
  if (!strcmp(cmd, "export")) return cmd_export(argc - 1, argv + 1);
  if (!strcmp(cmd, "generate")) return cmd_generate(argc - 1, argv + 1);
  if (!strcmp(cmd, "eval")) return cmd_eval(argc - 1, argv + 1);
  if (!strcmp(cmd, "attack")) return cmd_attack(argc - 1, argv + 1);
  if (!strcmp(cmd, "plan")) return cmd_plan(argc - 1, argv + 1);
  fprintf(stderr, "tvaccine: error: unknown command '%s' (try 'tvaccine --help')\n", cmd);
  return 2;
}
