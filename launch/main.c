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
          "  demo    train LoRA on a tiny built-in model and task; shows the loss going down\n"
          "  bench   time one LoRA training step against the machine's sgemm rate\n"
          "  plan    per-rank GPU memory of a run and whether it fits (config.json only)\n"
          "\n"
          "Run 'tvaccine <command> --help' for the options of a command.\n"
          "Other options: --help, --version.\n");
}

/* When OpenBLAS fell back to generic kernels on a CPU with AVX2/AVX-512, restart once with
 * OPENBLAS_CORETYPE set (OpenBLAS reads it only at load time). A value the user or the
 * environment already set is always respected. */
static void upgrade_blas_kernels(char **argv) {
  if (getenv("OPENBLAS_CORETYPE")) return;
  const char *better = backend_cpu_blas_upgrade();
  if (!better) return;
  int asks_for_help = 0;
  for (char **a = argv + 1; *a; a++)
    asks_for_help |= !strcmp(*a, "--help") || !strcmp(*a, "-h") || !strcmp(*a, "--version");
  if (!asks_for_help)
    fprintf(stderr,
          "tvaccine: note: OpenBLAS picked its %s kernels on this CPU; restarting with "
          "OPENBLAS_CORETYPE=%s (set OPENBLAS_CORETYPE to choose yourself)\n",
          backend_cpu_blas_name(), better);
  setenv("OPENBLAS_CORETYPE", better, 1);
  execv("/proc/self/exe", argv);
  /* exec failed: carry on with the kernels we have */
}

int main(int argc, char **argv) {
  upgrade_blas_kernels(argv);
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
    printf("tvaccine %s (OpenBLAS kernels: %s)\n", TV_VERSION, backend_cpu_blas_name());
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
