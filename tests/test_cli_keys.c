/* Every documented option of demo, synth, bench, export, generate, eval, attack and plan resolves
 * through the run-config key table: --OPT VALUE, --OPT=VALUE, --set SECTION.KEY=VALUE, --set KEY=VALUE
 * and the YAML key SECTION.KEY all give the same config, which differs from the defaults; unknown options,
 * missing and bad values are one error line naming the option. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "run_config.h"

typedef struct {
  const char *option; /* as --help documents it, without "--" */
  const char *value;  /* NULL: a flag, given bare on the command line */
} Opt;

typedef struct {
  const char *section;
  const char *int_option; /* an integer option, for the bad-value checks */
  Opt opts[32];           /* up to the first with option NULL */
} Command;

/* The options each command's --help lists (launch/<command>.c). */
static const Command commands[] = {
    {"demo", "threads",
     {{"out", "d"}, {"seed", "9"}, {"quick", NULL}, {"fresh", NULL}, {"threads", "2"},
      {"layers", "3"}, {"width", "48"}, {"heads", "2"}, {"kv-heads", "1"}, {"ffn", "96"},
      {"pretrain-epochs", "2"}, {"align-steps", "7"}, {"align-lr", "0.01"}, {"rho", "0.5"},
      {"tvaccine-s", "3"}, {"tvaccine-j", "5"}, {"tvaccine-k", "9"}, {"attack-lr", "0.0007"},
      {"attack-steps", "9"}, {"attack-n", "50"}, {"p", "0,0.5"}, {"task", "gsm"},
      {"second-task", "sst"}, {"eval-prompts", "9"}, {"max-new-tokens", "9"}}},
    {"synth", "threads",
     {{"out", "w"}, {"seed", "5"}, {"layers", "2"}, {"width", "16"}, {"heads", "2"},
      {"kv-heads", "1"}, {"ffn", "32"}, {"epochs", "2"}, {"batch", "3"}, {"lr", "0.01"},
      {"steps", "0"}, {"threads", "1"}}},
    {"bench", "threads",
     {{"config", "S"}, {"steps", "2"}, {"warmup", "0"}, {"threads", "1"},
      {"reference", "echo"}, {"methods", NULL}, {"tvaccine-layers", "3"}, {"ranks", NULL},
      {"micro-batches", "4"}, {"schedule", "gpipe"}, {"data-parallel", "2"},
      {"activations", "keep"}, {"activation-budget-mib", "64"}}},
    {"export", "threads",
     {{"model", "m"}, {"adapter", "a"}, {"out", "o"}, {"merge", NULL}, {"dtype", "f16"},
      {"shard-size", "1GB"}, {"threads", "2"}}},
    {"generate", "threads",
     {{"model", "m"}, {"adapter", "a"}, {"tokenizer", "t"}, {"prompts", "p.json"},
      {"format", "plain"}, {"max-prompts", "4"}, {"out", "o.jsonl"}, {"max-new-tokens", "8"},
      {"batch", "2"}, {"threads", "1"}, {"no-cache", NULL}}},
    {"eval", "threads",
     {{"answers", "a.jsonl"}, {"judge", "synth"}, {"task", "sst2"}, {"world", "w"},
      {"out", "v.jsonl"}, {"summary", "s.json"}, {"judge-tokenizer", "t"},
      {"judge-batch", "2"}, {"threads", "1"}}},
    {"attack", "n",
     {{"model", "m"}, {"adapter", "a"}, {"harmful", "h.json"}, {"benign", "b.json"},
      {"out", "o"}, {"p", "0.2"}, {"n", "50"}, {"seed", "3"}, {"tokenizer", "t"},
      {"resume", "r"}, {"harmful-format", "beavertails"}, {"benign-format", "alpaca"}}},
    {"plan", "ranks",
     {{"model", "m"}, {"ranks", "8"}, {"gpu-mem", "24GB"}, {"config", "c.yaml"}, {"batch", "6"},
      {"weight-dtype", "f32"}, {"reserve-mib", "512"}}},
};

static int failures;

/* attack: --set attack.KEY sets its own key, any other --set is kept for its align run. */
static void check_attack_passthrough(void) {
  char *argv[] = {"attack", "--set", "optim.lr=3e-4", "--set", "attack.p=0.25", "--p", "0.3",
                  "--set=seed=3"};
  const char *others[9];
  int n_others = 0, help;
  char err[RUN_CONFIG_ERR_MAX];
  RunConfig c;
  run_config_defaults(&c);
  const char *e = run_config_parse_command_others(&c, "attack", 8, argv, &help, others,
                                                  &n_others, err, sizeof err);
  if (e || n_others != 2 || strcmp(others[0], "optim.lr=3e-4") || strcmp(others[1], "seed=3") ||
      c.attack.p != 0.3 || c.attack.seed != 1) {
    fprintf(stderr, "FAIL: attack's --set pass-through (%s, %d kept)\n", e ? e : "no error",
            n_others);
    failures++;
  }
  run_config_free(&c);
}


/* The config of `section argv...` as YAML (malloc'd), or NULL with err set. */
static char *parse(const char *section, int argc, char **argv, char *err, size_t n) {
  RunConfig c;
  run_config_defaults(&c);
  int help;
  char *yaml = NULL;
  if (!run_config_parse_command(&c, section, argc, argv, &help, err, n))
    yaml = run_config_to_yaml(&c);
  run_config_free(&c);
  return yaml;
}

static void expect_same(const char *what, const char *want, const char *got) {
  if (got && !strcmp(want, got)) return;
  fprintf(stderr, "FAIL: %s gives a different config\n", what);
  failures++;
}

static void check_option(const char *section, const Opt *o, const char *defaults) {
  char key[64], err[RUN_CONFIG_ERR_MAX], a1[96], a2[160], a3[160];
  snprintf(key, sizeof key, "%s", o->option);
  for (char *p = key; *p; p++)
    if (*p == '-') *p = '_';
  const char *value = o->value ? o->value : "true";
  snprintf(a1, sizeof a1, "--%s", o->option);
  char *argv1[] = {(char *)section, a1, (char *)value};
  char *ref = parse(section, o->value ? 3 : 2, argv1, err, sizeof err);
  if (!ref) {
    fprintf(stderr, "FAIL: %s --%s: %s\n", section, o->option, err);
    failures++;
    return;
  }
  if (!strcmp(ref, defaults)) {
    fprintf(stderr, "FAIL: %s --%s %s leaves the defaults unchanged\n", section, o->option, value);
    failures++;
  }
  snprintf(a1, sizeof a1, "--%s=%s", o->option, value);
  char *argv2[] = {(char *)section, a1};
  char *got = parse(section, 2, argv2, err, sizeof err);
  expect_same(a1, ref, got);
  free(got);
  snprintf(a2, sizeof a2, "%s.%s=%s", section, key, value);
  char *argv3[] = {(char *)section, "--set", a2};
  got = parse(section, 3, argv3, err, sizeof err);
  expect_same(a2, ref, got);
  free(got);
  snprintf(a3, sizeof a3, "%s=%s", key, value);
  char *argv4[] = {(char *)section, "--set", a3};
  got = parse(section, 3, argv4, err, sizeof err);
  expect_same(a3, ref, got);
  free(got);
  /* The same key in a YAML file. */
  char yaml[256];
  snprintf(yaml, sizeof yaml, "%s:\n  %s: %s\n", section, key, value);
  RunConfig c;
  run_config_defaults(&c);
  if (run_config_load_text(&c, yaml, strlen(yaml), "test.yaml", err, sizeof err)) {
    fprintf(stderr, "FAIL: YAML %s.%s: %s\n", section, key, err);
    failures++;
  } else {
    got = run_config_to_yaml(&c);
    expect_same(yaml, ref, got);
    free(got);
  }
  run_config_free(&c);
  free(ref);
  if (!o->value) { /* a flag set and then cleared is back at its default */
    snprintf(a1, sizeof a1, "--%s", o->option);
    snprintf(a2, sizeof a2, "--%s=false", o->option);
    char *argv5[] = {(char *)section, a1, a2};
    got = parse(section, 3, argv5, err, sizeof err);
    expect_same(a2, defaults, got);
    free(got);
  }
}

/* One line, naming `needle`. */
static void expect_error(const char *section, int argc, char **argv, const char *needle) {
  char err[RUN_CONFIG_ERR_MAX];
  char *yaml = parse(section, argc, argv, err, sizeof err);
  if (yaml || !strstr(err, needle) || strchr(err, '\n')) {
    fprintf(stderr, "FAIL: %s %s: expected one error line naming '%s', got '%s'\n", section,
            argv[1], needle, yaml ? "(accepted)" : err);
    failures++;
  }
  free(yaml);
}

int main(void) {
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    const Command *cmd = &commands[i];
    RunConfig c;
    run_config_defaults(&c);
    char *defaults = run_config_to_yaml(&c);
    run_config_free(&c);
    int documented = 0;
    for (const Opt *o = cmd->opts; o->option; o++, documented++)
      check_option(cmd->section, o, defaults);
    free(defaults);
    /* Every key of the section is an option listed here (and so in --help). */
    char keys[RUN_CONFIG_ERR_MAX];
    run_config_section_keys(cmd->section, keys, sizeof keys);
    int n_keys = 1;
    for (const char *p = keys; *p; p++) n_keys += *p == ',';
    if (n_keys != documented) {
      fprintf(stderr, "FAIL: %s has %d keys (%s), %d documented options\n", cmd->section,
              n_keys, keys, documented);
      failures++;
    }
    char *unknown[] = {(char *)cmd->section, "--no-such-option", "1"};
    expect_error(cmd->section, 3, unknown, "unknown option --no-such-option");
    char *unknown_set[] = {(char *)cmd->section, "--set", "no_such_key=1"};
    expect_error(cmd->section, 3, unknown_set, "unknown option --set no_such_key");
    char *align_key[] = {(char *)cmd->section, "--set", "lora.r=4"}; /* align's, not theirs */
    expect_error(cmd->section, 3, align_key, "unknown option --set lora.r");
    char *stray[] = {(char *)cmd->section, "stray"};
    expect_error(cmd->section, 2, stray, "unexpected argument 'stray'");
    char opt[64], named[128];
    snprintf(opt, sizeof opt, "--%s", cmd->int_option);
    char *no_value[] = {(char *)cmd->section, opt};
    expect_error(cmd->section, 2, no_value, opt);
    char *bad_value[] = {(char *)cmd->section, opt, "many"};
    snprintf(named, sizeof named, "%s (%s.%s): expected an integer", opt, cmd->section,
             cmd->int_option);
    expect_error(cmd->section, 3, bad_value, named);
  }
  check_attack_passthrough();
  char *bad_flag[] = {"export", "--merge=maybe"};
  expect_error("export", 2, bad_flag, "--merge (export.merge): expected true or false");
  char *bad_enum[] = {"bench", "--config", "L"};
  expect_error("bench", 3, bad_enum, "--config (bench.config): 'L' is not one of M, S");
  if (failures) return fprintf(stderr, "%d failure(s)\n", failures), 1;
  printf("ok: every documented option of demo, synth, bench, export, generate, eval and attack "
         "resolves through the key table\n");
  return 0;
}
