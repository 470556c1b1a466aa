/* tvaccine: entry point and subcommand dispatch. */
#include <stdio.h>
#include <string.h>

#include "subcommands.h"

#define TV_VERSION "0.1.0"

static void usage(FILE *out) {
  fprintf(out,
          "usage: tvaccine <command> [options]\n"
          "\n"
          "Targeted Vaccine (T-Vaccine) safety alignment for Llama-family models.\n"
          "\n"
          "commands:\n"
          "  demo    train LoRA on a tiny built-in model and task; shows the loss going down\n"
          "  bench   time one LoRA training step against the machine's sgemm rate\n"
          "\n"
          "Run 'tvaccine <command> --help' for the options of a command.\n"
          "Other options: --help, --version.\n");
}

int main(int argc, char **argv) {
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
    printf("tvaccine %s\n", TV_VERSION);
    return 0;
  }
  if (!strcmp(cmd, "demo")) return cmd_demo(argc - 1, argv + 1);
  if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
  fprintf(stderr, "tvaccine: error: unknown command '%s' (try 'tvaccine --help')\n", cmd);
  return 2;
}
