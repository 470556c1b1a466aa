/* The YAML run config: defaults, loading over them, every kind of mistake ending in one line
 * that names the key (and file and line), --set overrides, the writer's round trip, configs/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "run_config.h"
#include "test_util.h"

static char tmpdir[] = "/tmp/tv_run_config_XXXXXX";
static char err[RUN_CONFIG_ERR_MAX];

/* Writes text to <tmpdir>/name and returns the path (static buffer). */
static const char *write_file(const char *name, const char *text) {
  static char path[256];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "w");
  if (!f) {
    perror(path);
    exit(1);
  }
  fputs(text, f);
  fclose(f);
  return path;
}

/* Loads text as file run.yaml over the defaults; returns the error or NULL. */
static const char *load_str(RunConfig *c, const char *text) {
  return run_config_load(c, write_file("run.yaml", text), err, sizeof err);
}

/* A load that must fail with one line containing every given piece, and leave *c as it was. */
static void expect_load_error(const char *text, const char *p1, const char *p2, const char *p3) {
  RunConfig c;
  run_config_defaults(&c);
  char *before = run_config_to_yaml(&c);
  const char *e = load_str(&c, text);
  EXPECT(e != NULL, "loading %s should fail", text);
  if (e) {
    EXPECT(!strchr(e, '\n'), "error is one line: %s", e);
    const char *parts[] = {p1, p2, p3};
    for (int i = 0; i < 3; i++)
      if (parts[i])
        EXPECT(strstr(e, parts[i]) != NULL, "'%s' in error: %s (input: %s)", parts[i], e, text);
  }
  char *after = run_config_to_yaml(&c);
  EXPECT(!strcmp(before, after), "config unchanged after failed load of %s", text);
  free(before);
  free(after);
  run_config_free(&c);
}

static void expect_set_error(RunConfig *c, const char *assignment, const char *p1, const char *p2) {
  char *before = run_config_to_yaml(c);
  const char *e = run_config_set(c, assignment, err, sizeof err);
  EXPECT(e != NULL, "--set %s should fail", assignment);
  if (e) {
    EXPECT(!strchr(e, '\n'), "error is one line: %s", e);
    if (p1) EXPECT(strstr(e, p1) != NULL, "'%s' in error: %s", p1, e);
    if (p2) EXPECT(strstr(e, p2) != NULL, "'%s' in error: %s", p2, e);
  }
  char *after = run_config_to_yaml(c);
  EXPECT(!strcmp(before, after), "config unchanged after failed --set %s", assignment);
  free(before);
  free(after);
}

static void set_ok(RunConfig *c, const char *assignment) {
  const char *e = run_config_set(c, assignment, err, sizeof err);
  EXPECT(e == NULL, "--set %s: %s", assignment, e ? e : "");
}

static void test_defaults(void) {
  RunConfig c;
  run_config_defaults(&c);
  EXPECT(c.method == METHOD_TVACCINE && c.data_format == DATASET_FORMAT_AUTO, "method/format");
  EXPECT(!strcmp(c.model, "") && !strcmp(c.data, "") && !strcmp(c.out, "") && !strcmp(c.resume, ""),
         "strings empty");
  EXPECT(c.max_len == 200 && c.epochs == 20 && c.max_steps == 0 && c.batch_size == 10, "sizes");
  EXPECT(
      c.micro_batch == 0 && c.seed == 42 && c.threads == 0 && c.save_every == 0 && c.log_every == 1,
      "run");
  EXPECT(c.rho == 3.0, "rho %g", c.rho);
  EXPECT(
      c.lora.r == 8 && c.lora.alpha == 1.0f && c.lora.dropout == 0.1f && c.lora.target_mask == 0x7f,
      "lora");
  EXPECT(c.optim.lr == 1e-3f && c.optim.weight_decay == 0.1f && c.optim.warmup_ratio == 0.1 &&
             c.optim.max_grad_norm == 1.0f && c.optim.beta1 == 0.9 && c.optim.beta2 == 0.999 &&
             c.optim.eps == 1e-8f,
         "optim");
  EXPECT(c.tvaccine.S == 8 && c.tvaccine.J == 20 && c.tvaccine.K == 200 &&
             c.tvaccine.probe_samples == 200 && c.tvaccine.probe_batch == 1 &&
             c.tvaccine.freeze_scope == FREEZE_LAYER && c.tvaccine.n_layers == 0 &&
             !strcmp(c.tvaccine.probe_data, ""),
         "tvaccine");
  /* Defaults lack only the required paths. */
  const char *e = run_config_validate(&c, err, sizeof err);
  EXPECT(e && strstr(e, "model: required"), "model required: %s", e ? e : "(passed)");
  set_ok(&c, "model=/m");
  e = run_config_validate(&c, err, sizeof err);
  EXPECT(e && strstr(e, "data: required"), "data required: %s", e ? e : "(passed)");
  set_ok(&c, "data=/d.jsonl");
  e = run_config_validate(&c, err, sizeof err);
  EXPECT(e && strstr(e, "out: required"), "out required: %s", e ? e : "(passed)");
  set_ok(&c, "out=runs/x");
  e = run_config_validate(&c, err, sizeof err);
  EXPECT(e == NULL, "defaults + paths validate: %s", e ? e : "");
  EXPECT(!strcmp(run_config_tokenizer(&c), "/m"), "tokenizer falls back to the model");
  EXPECT(run_config_total_steps(&c, 95) == 20 * 10, "20 epochs of ceil(95 / 10)");
  EXPECT(run_config_micro_batch(&c) == 10, "micro_batch 0 = batch");
  EXPECT(!strcmp(method_name(METHOD_VACCINE), "vaccine") &&
             !strcmp(dataset_format_name(DATASET_FORMAT_REFUSAL), "refusal") &&
             !strcmp(freeze_scope_name(FREEZE_ATTENTION), "attention"),
         "names");
  run_config_free(&c);
}

static const char *FULL =
    "# every key, none at its default\n"
    "method: vaccine\nmodel: /models/llama\ntokenizer: /models/tok\ndata: data/align.json\n"
    "data_format: alpaca\nmax_len: 128\nepochs: 3\nmax_steps: 77\nbatch_size: 8\nmicro_batch: 2\n"
    "seed: 18446744073709551615\nthreads: 4\nout: runs/a\nsave_every: 10\nlog_every: 5\n"
    "init_adapter: adapters/x\nresume: runs/a/step_10.h5\nrho: 0.5\n"
    "lora:\n  r: 16\n  alpha: 32\n  dropout: 0.05\n  target_modules: [v_proj, q_proj]\n"
    "optim:\n  lr: 3.0e-4\n  weight_decay: 0\n  warmup_ratio: 0.03\n  max_grad_norm: 0\n"
    "  adam_beta1: 0.8\n  adam_beta2: 0.95\n  adam_epsilon: 1e-6\n"
    "tvaccine: {S: 2, J: 5, K: 1, probe_data: \"h.jsonl\", probe_samples: 50, probe_batch: 2,\n"
    "           freeze_scope: attention, layers: [3, 0, 5]}\n";

static void test_full_file(void) {
  RunConfig c;
  run_config_defaults(&c);
  const char *e = load_str(&c, FULL);
  EXPECT(e == NULL, "full file: %s", e ? e : "");
  EXPECT(c.method == METHOD_VACCINE && !strcmp(c.model, "/models/llama") &&
             !strcmp(c.tokenizer, "/models/tok") && !strcmp(c.data, "data/align.json") &&
             c.data_format == DATASET_FORMAT_ALPACA,
         "top strings/enums");
  EXPECT(c.max_len == 128 && c.epochs == 3 && c.max_steps == 77 && c.batch_size == 8 &&
             c.micro_batch == 2,
         "sizes");
  EXPECT(c.seed == UINT64_MAX && c.threads == 4 && !strcmp(c.out, "runs/a") && c.save_every == 10 &&
             c.log_every == 5,
         "run");
  EXPECT(!strcmp(c.init_adapter, "adapters/x") && !strcmp(c.resume, "runs/a/step_10.h5") &&
             c.rho == 0.5,
         "adapter/resume/rho");
  EXPECT(c.lora.r == 16 && c.lora.alpha == 32.0f && c.lora.dropout == 0.05f &&
             c.lora.target_mask == ((1u << LORA_Q) | (1u << LORA_V)),
         "lora mask %x", c.lora.target_mask);
  EXPECT(c.optim.lr == 3e-4f && c.optim.weight_decay == 0 && c.optim.warmup_ratio == 0.03 &&
             c.optim.max_grad_norm == 0 && c.optim.beta1 == 0.8 && c.optim.beta2 == 0.95 &&
             c.optim.eps == 1e-6f,
         "optim");
  EXPECT(c.tvaccine.S == 2 && c.tvaccine.J == 5 && c.tvaccine.K == 1 &&
             !strcmp(c.tvaccine.probe_data, "h.jsonl") && c.tvaccine.probe_samples == 50 &&
             c.tvaccine.probe_batch == 2 && c.tvaccine.freeze_scope == FREEZE_ATTENTION,
         "tvaccine");
  EXPECT(c.tvaccine.n_layers == 3 && c.tvaccine.layers[0] == 3 && c.tvaccine.layers[1] == 0 &&
             c.tvaccine.layers[2] == 5,
         "layers in the given order");
  EXPECT(run_config_validate(&c, err, sizeof err) == NULL, "full validates: %s", err);
  EXPECT(run_config_total_steps(&c, 1000) == 77, "max_steps overrides");
  /* A second file changes only what it names; absent keys keep the values already there. */
  e = load_str(&c, "epochs: 4\ntvaccine:\n  S: 3\n");
  EXPECT(e == NULL && c.epochs == 4 && c.tvaccine.S == 3 && c.tvaccine.J == 5 && c.max_len == 128 &&
             c.tvaccine.n_layers == 3,
         "partial file over a loaded config: %s", e ? e : "");
  /* An empty list in a file clears the list (it is not the same as absent). */
  e = load_str(&c, "tvaccine: {layers: []}\n");
  EXPECT(e == NULL && c.tvaccine.n_layers == 0, "layers: [] clears: %s", e ? e : "");
  /* Empty and comment-only files change nothing. */
  EXPECT(load_str(&c, "") == NULL && load_str(&c, "# nothing\n") == NULL && c.epochs == 4,
         "empty file");
  run_config_free(&c);
}

static void test_mistakes(void) {
  /* Unknown keys, top level and nested, with file and line; case matters. */
  expect_load_error("epochs: 2\nrhoo: 1\n", "unknown key 'rhoo'", "run.yaml, line 2",
                    "did you mean 'rho'");
  expect_load_error("tvaccine:\n  S: 2\n  rhoo: 1\n", "unknown key 'tvaccine.rhoo'",
                    "run.yaml, line 3", NULL);
  expect_load_error("lora: {r: 4, alpah: 2}\n", "unknown key 'lora.alpah'", "line 1",
                    "did you mean 'lora.alpha'");
  expect_load_error("Epochs: 3\n", "unknown key 'Epochs'", "did you mean 'epochs'", NULL);
  expect_load_error("lora: {R: 3}\n", "unknown key 'lora.R'", NULL, NULL);
  expect_load_error("loraa:\n  r: 4\n", "unknown key 'loraa'", NULL, NULL);
  /* Wrong types. */
  expect_load_error("max_len: 100\nlora:\n  r: eight\n", "lora.r: expected an integer, got 'eight'",
                    "run.yaml, line 3", NULL);
  expect_load_error("epochs: 3.5\n", "epochs: expected an integer, got '3.5'", "line 1", NULL);
  expect_load_error("epochs: 0x10\n", "epochs: expected an integer", NULL, NULL);
  expect_load_error("optim:\n  lr: fast\n", "optim.lr: expected a number, got 'fast'", "line 2",
                    NULL);
  expect_load_error("optim: {lr: .nan}\n", "optim.lr: expected a number", NULL, NULL);
  expect_load_error("rho: nan\n", "rho: expected a finite number, got 'nan'", NULL, NULL);
  expect_load_error("seed: abc\n", "seed: expected an integer, got 'abc'", NULL, NULL);
  expect_load_error("epochs: [1, 2]\n", "epochs: expected a single value, got a list", "line 1",
                    NULL);
  expect_load_error("lora: 5\n", "lora: expected a mapping of keys", NULL, NULL);
  expect_load_error("lora: {r: [1]}\n", "lora.r: expected a single value, got a list", NULL, NULL);
  expect_load_error("lora: {target_modules: q_proj}\n", "lora.target_modules: expected a list",
                    NULL, NULL);
  expect_load_error("tvaccine: {layers: [1, x]}\n", "tvaccine.layers: expected an integer", "'x'",
                    NULL);
  expect_load_error("- method\n- sft\n", "expected a mapping of keys at the top level", NULL, NULL);
  /* Out of range, several keys. */
  expect_load_error("optim:\n  lr: -1\n", "optim.lr: -1 is out of range: must be >= 0", "line 2",
                    NULL);
  expect_load_error("max_len: 7\n", "max_len: 7 is out of range: must be in 8..65536", NULL, NULL);
  expect_load_error("max_len: 99999999999\n", "max_len: 99999999999 is out of range", NULL, NULL);
  expect_load_error("lora: {dropout: 1}\n", "lora.dropout: 1 is out of range: must be in [0, 1)",
                    NULL, NULL);
  expect_load_error("lora: {alpha: 0}\n", "lora.alpha: 0 is out of range: must be > 0", NULL, NULL);
  expect_load_error("optim: {warmup_ratio: 1.5}\n",
                    "optim.warmup_ratio: 1.5 is out of range: must be in [0, 1]", NULL, NULL);
  expect_load_error("optim: {adam_beta2: 1}\n", "optim.adam_beta2: 1 is out of range", NULL, NULL);
  expect_load_error("optim: {lr: 1e50}\n", "optim.lr: 1e50 is out of range", NULL, NULL);
  expect_load_error("rho: -0.5\n", "rho: -0.5 is out of range: must be >= 0", NULL, NULL);
  expect_load_error("tvaccine: {S: 0}\n", "tvaccine.S: 0 is out of range", NULL, NULL);
  expect_load_error("tvaccine: {J: 0}\n", "tvaccine.J: 0 is out of range: must be >= 1", NULL,
                    NULL);
  expect_load_error("tvaccine: {K: -3}\n", "tvaccine.K: -3 is out of range", NULL, NULL);
  expect_load_error("tvaccine: {probe_batch: 0}\n", "tvaccine.probe_batch: 0 is out of range", NULL,
                    NULL);
  expect_load_error("log_every: 0\n", "log_every: 0 is out of range", NULL, NULL);
  expect_load_error("seed: -1\n", "seed: -1 is out of range", NULL, NULL);
  expect_load_error("seed: 18446744073709551616\n", "seed: 18446744073709551616 is out of range",
                    NULL, NULL);
  expect_load_error("tvaccine: {layers: [2, -1]}\n",
                    "tvaccine.layers: -1 is out of range: must be in 0..", NULL, NULL);
  expect_load_error("tvaccine: {layers: [2, 4, 2]}\n", "tvaccine.layers: layer 2 is listed twice",
                    NULL, NULL);
  /* Bad enums and names: exact and case-sensitive. */
  expect_load_error("method: tvacine\n", "method: 'tvacine' is not one of sft, vaccine, tvaccine",
                    "line 1", NULL);
  expect_load_error("data_format: json\n",
                    "data_format: 'json' is not one of auto, alpaca, beavertails, refusal", NULL,
                    NULL);
  expect_load_error("tvaccine:\n  freeze_scope: Layer\n",
                    "tvaccine.freeze_scope: 'Layer' is not one of layer, attention", "line 2",
                    NULL);
  expect_load_error("lora: {target_modules: [q_proj, q]}\n",
                    "lora.target_modules: 'q' is not one of q_proj", NULL, NULL);
  expect_load_error("lora: {target_modules: [q_proj, q_proj]}\n", "'q_proj' is listed twice", NULL,
                    NULL);
  expect_load_error("lora: {target_modules: []}\n", "lora.target_modules: must name at least one",
                    NULL, NULL);
  /* Duplicate keys, top level, nested and whole sections, with the second one's line. */
  expect_load_error("epochs: 3\nmax_len: 64\nepochs: 4\n", "duplicate key 'epochs'",
                    "run.yaml, line 3", NULL);
  expect_load_error("lora:\n  r: 2\n  alpha: 1\n  r: 3\n", "duplicate key 'lora.r'", "line 4",
                    NULL);
  expect_load_error("lora: {r: 2}\nlora: {r: 3}\n", "duplicate key 'lora'", "line 2", NULL);
  /* Malformed YAML: libyaml's problem and position. */
  expect_load_error("lora: {r: 4\nepochs: 2\n", "YAML syntax error", "run.yaml, line", NULL);
  expect_load_error("epochs: 1\n\tmax_len: 2\n", "YAML syntax error", "line 2", NULL);
  expect_load_error("model: \"unterminated\n", "YAML syntax error", NULL, NULL);
  expect_load_error("epochs: 1\n---\nepochs: 2\n", "more than one YAML document", NULL, NULL);
  /* A missing file. */
  RunConfig c;
  run_config_defaults(&c);
  const char *e = run_config_load(&c, "/nonexistent/run.yaml", err, sizeof err);
  EXPECT(
      e && strstr(e, "cannot read run config /nonexistent/run.yaml") && strstr(e, "No such file"),
      "missing file: %s", e ? e : "(loaded)");
  run_config_free(&c);
}

static void test_set(void) {
  RunConfig c;
  run_config_defaults(&c);
  set_ok(&c, "tvaccine.S=2");
  set_ok(&c, "epochs=7");
  set_ok(&c, "method=sft");
  set_ok(&c, "optim.lr=1e-4");
  set_ok(&c, "lora.target_modules=[q_proj,v_proj]");
  set_ok(&c, "tvaccine.layers=[1, 5]");
  set_ok(&c, "model=/a path/with: colon # and hash \"quoted\" \\ slash");
  set_ok(&c, "lora={r: 4, alpha: 2}");
  EXPECT(c.tvaccine.S == 2 && c.epochs == 7 && c.method == METHOD_SFT && c.optim.lr == 1e-4f,
         "scalars");
  EXPECT(c.lora.target_mask == ((1u << LORA_Q) | (1u << LORA_V)), "modules %x", c.lora.target_mask);
  EXPECT(c.tvaccine.n_layers == 2 && c.tvaccine.layers[0] == 1 && c.tvaccine.layers[1] == 5,
         "layers");
  EXPECT(!strcmp(c.model, "/a path/with: colon # and hash \"quoted\" \\ slash"),
         "literal string: %s", c.model);
  EXPECT(c.lora.r == 4 && c.lora.alpha == 2.0f && c.lora.dropout == 0.1f,
         "flow mapping sets only its keys");
  set_ok(&c, "tvaccine.layers=[]");
  EXPECT(c.tvaccine.n_layers == 0, "empty list clears");
  set_ok(&c, "tokenizer=");
  EXPECT(!strcmp(c.tokenizer, ""), "empty value");
  /* The same rules and messages as a file, with no line numbers. */
  expect_set_error(&c, "tvaccine.rhoo=1", "unknown key 'tvaccine.rhoo' in --set tvaccine.rhoo=1",
                   "did you mean 'rho'");
  expect_set_error(&c, "Epochs=1", "unknown key 'Epochs'", NULL);
  expect_set_error(&c, "lora.r=eight", "lora.r: expected an integer, got 'eight'",
                   "(--set lora.r=eight)");
  expect_set_error(&c, "optim.lr=-1", "optim.lr: -1 is out of range: must be >= 0", NULL);
  expect_set_error(&c, "method=tvacine", "method: 'tvacine' is not one of sft, vaccine, tvaccine",
                   NULL);
  expect_set_error(&c, "lora.target_modules=[q_proj,x]", "lora.target_modules: 'x' is not one of",
                   NULL);
  expect_set_error(&c, "lora.target_modules=q_proj", "lora.target_modules: expected a list", NULL);
  expect_set_error(&c, "tvaccine.layers=[1,1]", "layer 1 is listed twice", NULL);
  expect_set_error(&c, "lora.target_modules=[q_proj", "YAML syntax error", NULL);
  expect_set_error(&c, "lora=5", "lora: expected a mapping of keys", NULL);
  expect_set_error(&c, "lora.r.x=1", "lora.r: expected a single value", NULL);
  expect_set_error(&c, "epochs", "--set expects key=value, got 'epochs'", NULL);
  expect_set_error(&c, "=3", "--set expects key=value", NULL);
  expect_set_error(&c, "lora..r=1", "is not a key", NULL);
  expect_set_error(&c, "lora r=1", "is not a key", NULL);
  expect_set_error(&c, "lora={r: 2, r: 3}", "duplicate key 'lora.r'", NULL);
  run_config_free(&c);
}

static void test_round_trip(void) {
  RunConfig a, b;
  run_config_defaults(&a);
  EXPECT(load_str(&a, FULL) == NULL, "load full: %s", err);
  /* Values that are hard to write back: floats without a short exact decimal, odd strings. */
  a.optim.lr = 1.0f / 3.0f;
  a.lora.dropout = 0.1f;
  a.rho = 0.1 + 0.2;
  a.optim.warmup_ratio = 1.0 / 7.0;
  free(a.data);
  a.data = strdup("we\"ird\\ path: #x\ttab\nnewline é");
  a.seed = 1234567890123456789ull;
  char *y1 = run_config_to_yaml(&a);
  run_config_defaults(&b);
  const char *e = run_config_load_text(&b, y1, strlen(y1), "written config", err, sizeof err);
  EXPECT(e == NULL, "written config loads: %s", e ? e : "");
  char *y2 = run_config_to_yaml(&b);
  EXPECT(!strcmp(y1, y2), "round trip text equal:\n%s\n---\n%s", y1, y2);
  EXPECT(b.optim.lr == a.optim.lr && b.lora.dropout == a.lora.dropout && b.rho == a.rho &&
             b.optim.warmup_ratio == a.optim.warmup_ratio,
         "floats bit for bit");
  EXPECT(!strcmp(a.data, b.data), "odd string: %s", b.data);
  EXPECT(b.seed == a.seed && b.tvaccine.n_layers == 3 && b.tvaccine.layers[2] == 5 &&
             b.lora.target_mask == a.lora.target_mask && b.method == a.method &&
             b.tvaccine.freeze_scope == a.tvaccine.freeze_scope,
         "the rest");
  /* Copy is deep and equal. */
  RunConfig d;
  run_config_copy(&d, &b);
  char *y3 = run_config_to_yaml(&d);
  EXPECT(!strcmp(y1, y3) && d.data != b.data && d.tvaccine.layers != b.tvaccine.layers,
         "deep copy");
  free(y1);
  free(y2);
  free(y3);
  run_config_free(&a);
  run_config_free(&b);
  run_config_free(&d);
  /* The defaults round-trip too. */
  run_config_defaults(&a);
  run_config_defaults(&b);
  set_ok(&b, "epochs=1");
  y1 = run_config_to_yaml(&a);
  EXPECT(run_config_load_text(&b, y1, strlen(y1), "defaults", err, sizeof err) == NULL, "%s", err);
  y2 = run_config_to_yaml(&b);
  EXPECT(!strcmp(y1, y2), "defaults round trip");
  free(y1);
  free(y2);
  run_config_free(&a);
  run_config_free(&b);
}

static void test_validate(void) {
  RunConfig c;
  run_config_defaults(&c);
  set_ok(&c, "model=/m");
  set_ok(&c, "data=/d");
  set_ok(&c, "out=/o");
  EXPECT(run_config_validate(&c, err, sizeof err) == NULL, "valid: %s", err);
  /* Values set in code are range-checked too. */
  c.lora.dropout = 1.0f;
  EXPECT(run_config_validate(&c, err, sizeof err) && strstr(err, "lora.dropout: 1 is out of range"),
         "%s", err);
  c.lora.dropout = 0.1f;
  c.optim.lr = NAN;
  EXPECT(
      run_config_validate(&c, err, sizeof err) && strstr(err, "optim.lr: expected a finite number"),
      "%s", err);
  c.optim.lr = 1e-3f;
  c.method = (Method)7;
  EXPECT(run_config_validate(&c, err, sizeof err) && strstr(err, "method: '7' is not one of"), "%s",
         err);
  c.method = METHOD_SFT;
  c.max_steps = -1;
  EXPECT(run_config_validate(&c, err, sizeof err) && strstr(err, "max_steps: -1 is out of range"),
         "%s", err);
  c.max_steps = 0;
  c.lora.target_mask = 0;
  EXPECT(run_config_validate(&c, err, sizeof err) && strstr(err, "lora.target_modules: must name"),
         "%s", err);
  c.lora.target_mask = 1;
  /* Cross-key rules. */
  set_ok(&c, "micro_batch=11");
  EXPECT(run_config_validate(&c, err, sizeof err) &&
             strstr(err, "micro_batch: 11 is out of range") && strstr(err, "batch_size (10)"),
         "%s", err);
  set_ok(&c, "micro_batch=4");
  EXPECT(run_config_validate(&c, err, sizeof err) == NULL && run_config_micro_batch(&c) == 4, "%s",
         err);
  /* dist.micro_batches: m micro-batches of ceil(batch / m) rows; one splitter at a time. */
  set_ok(&c, "dist.micro_batches=3");
  EXPECT(run_config_validate(&c, err, sizeof err) && strstr(err, "dist.micro_batches: 3 and "
             "micro_batch: 4 both split the batch"), "%s", err);
  set_ok(&c, "micro_batch=0");
  EXPECT(run_config_validate(&c, err, sizeof err) == NULL && run_config_micro_batch(&c) == 4,
         "10 rows in 3 micro-batches: 4 rows each (the last 2): %s", err);
  set_ok(&c, "dist.micro_batches=11");
  EXPECT(run_config_validate(&c, err, sizeof err) &&
             strstr(err, "dist.micro_batches: 11 is out of range"), "%s", err);
  set_ok(&c, "dist={micro_batches: 0, schedule: gpipe}");
  EXPECT(c.dist.schedule == SCHEDULE_GPIPE && run_config_micro_batch(&c) == 10, "dist.schedule");
  EXPECT(c.dist.split == SPLIT_COST, "dist.split defaults to cost");
  set_ok(&c, "dist.split=even");
  EXPECT(c.dist.split == SPLIT_EVEN, "dist.split=even");
  EXPECT(run_config_set(&c, "dist.schedule=zigzag", err, sizeof err) &&
             strstr(err, "dist.schedule") && strstr(err, "zigzag"), "%s", err);
  /* The grid: D replicas (default 1) and explicit stage sizes (a list, repeats allowed). */
  EXPECT(c.dist.data_parallel == 1 && c.dist.n_stages == 0, "dist.data_parallel defaults to 1");
  set_ok(&c, "dist={data_parallel: 2, stages: [5, 3, 3]}");
  EXPECT(c.dist.data_parallel == 2 && c.dist.n_stages == 3 && c.dist.stages[0] == 5 &&
             c.dist.stages[1] == 3 && c.dist.stages[2] == 3, "dist.stages=[5, 3, 3]");
  char *grid_yaml = run_config_to_yaml(&c);
  EXPECT(strstr(grid_yaml, "stages: [5, 3, 3]") && strstr(grid_yaml, "data_parallel: 2"), "%s",
         grid_yaml);
  free(grid_yaml);
  RunConfig grid_copy;
  run_config_copy(&grid_copy, &c);
  EXPECT(grid_copy.dist.n_stages == 3 && grid_copy.dist.stages != c.dist.stages &&
             grid_copy.dist.stages[2] == 3, "run_config_copy copies dist.stages");
  run_config_free(&grid_copy);
  EXPECT(run_config_set(&c, "dist.stages=[4,0]", err, sizeof err) &&
             strstr(err, "dist.stages: 0 is out of range"), "%s", err);
  EXPECT(run_config_set(&c, "dist.stages=[4,x]", err, sizeof err) &&
             strstr(err, "dist.stages: expected an integer, got 'x'"), "%s", err);
  EXPECT(run_config_set(&c, "dist.data_parallel=0", err, sizeof err) &&
             strstr(err, "dist.data_parallel: 0 is out of range"), "%s", err);
  set_ok(&c, "dist.stages=[]");
  EXPECT(c.dist.n_stages == 0, "dist.stages=[] clears the list");
  set_ok(&c, "tvaccine={probe_samples: 4, probe_batch: 5}");
  EXPECT(run_config_validate(&c, err, sizeof err) &&
             strstr(err, "tvaccine.probe_batch: 5 is out of range"),
         "%s", err);
  run_config_free(&c);
}

static void test_shipped_configs(const char *dir) {
  const char *names[] = {"llama2-7b-tvaccine.yaml", "vaccine-baseline.yaml", "sft-baseline.yaml",
                         "qwen2-7b-tvaccine.yaml"};
  const Method methods[] = {METHOD_TVACCINE, METHOD_VACCINE, METHOD_SFT, METHOD_TVACCINE};
  const int S[] = {8, 0, 0, 5}; /* of 32 layers (Llama-2-7B), of 28 (Qwen2-7B) */
  for (int i = 0; i < 4; i++) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    RunConfig c;
    run_config_defaults(&c);
    const char *e = run_config_load(&c, path, err, sizeof err);
    EXPECT(e == NULL, "%s loads: %s", names[i], e ? e : "");
    e = run_config_validate(&c, err, sizeof err);
    EXPECT(e == NULL, "%s validates: %s", names[i], e ? e : "");
    EXPECT(c.method == methods[i], "%s method", names[i]);
    /* The paper's settings (SPEC 4 and 6). */
    EXPECT(c.epochs == 20 && c.batch_size == 10 && c.max_len == 200 && c.optim.lr == 1e-3f &&
               c.optim.weight_decay == 0.1f && c.optim.warmup_ratio == 0.1 && c.lora.r == 8 &&
               c.lora.alpha == 1.0f && c.lora.dropout == 0.1f && c.lora.target_mask == 0x7f,
           "%s settings", names[i]);
    EXPECT(strstr(c.model, "/path/to/") != NULL, "%s model is a marked placeholder", names[i]);
    EXPECT(c.max_rows == 2000 && c.activations == ACTIVATIONS_AUTO,
           "%s: max_rows %d (the reference aligns on 2000 rows), activations", names[i],
           c.max_rows);
    if (c.method != METHOD_SFT) EXPECT(c.rho == 3.0, "%s rho", names[i]);
    if (c.method == METHOD_TVACCINE)
      EXPECT(c.tvaccine.S == S[i] && c.tvaccine.J == 20 && c.tvaccine.K == 200 &&
                 c.tvaccine.probe_samples == 200 && c.tvaccine.probe_batch == 1 &&
                 c.tvaccine.freeze_scope == FREEZE_LAYER && c.tvaccine.n_layers == 0,
             "%s tvaccine settings", names[i]);
    run_config_free(&c);
  }
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s CONFIGS_DIR\n", argv[0]);
    return 1;
  }
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  test_defaults();
  test_full_file();
  test_mistakes();
  test_set();
  test_round_trip();
  test_validate();
  test_shipped_configs(argv[1]);
  char path[300];
  snprintf(path, sizeof path, "%s/run.yaml", tmpdir);
  unlink(path);
  rmdir(tmpdir);
  return tv_test_report("run_config");
}
