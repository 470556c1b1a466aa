/* io/dataset: the three row formats from JSON and JSON Lines, one-line errors naming file,
 * record and field, the exact Alpaca template, and the poison mix's counts and seeding.
 * Usage: test_dataset DATA_DIR (tests/data/datasets). Batches: test_dataset_batch.c. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "dataset.h"
#include "test_util.h"

static const char *data_dir;

static char *data_path(const char *name) {
  static char buf[8][1024];
  static int slot;
  char *p = buf[slot++ % 8];
  snprintf(p, 1024, "%s/%s", data_dir, name);
  return p;
}

/* ---- capturing tv_die: the hook jumps back, stderr goes to a temporary file ---------- */

static jmp_buf die_jump;
static void die_hook(int code) {
  (void)code;
  longjmp(die_jump, 1);
}

/* Runs dataset_load; returns 1 when it died, with its stderr in msg. */
static int load_dies(const char *path, DatasetFormat fmt, char *msg, size_t len) {
  fflush(stderr);
  int saved = dup(2);
  FILE *tmp = tmpfile();
  TV_CHECK(saved >= 0 && tmp, "cannot redirect stderr");
  dup2(fileno(tmp), 2);
  tv_set_abort_hook(die_hook);
  volatile int died = 0;
  ExampleSet s;
  if (setjmp(die_jump) == 0) {
    dataset_load(path, fmt, &s);
    example_set_free(&s);
  } else {
    died = 1;
  }
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  tv_set_abort_hook(NULL);
  rewind(tmp);
  size_t k = fread(msg, 1, len - 1, tmp);
  msg[k] = '\0';
  fclose(tmp);
  return died;
}

static int count_lines(const char *s) {
  int n = 0;
  for (; *s; s++) n += *s == '\n';
  return n;
}

static void write_file(const char *path, const char *bytes, size_t len) {
  FILE *f = fopen(path, "wb");
  TV_CHECK(f, "cannot write %s", path);
  fwrite(bytes, 1, len, f);
  fclose(f);
}

/* ---- formats ---------------------------------------------------------------------------- */

static int same_example(const Example *a, const Example *b) {
  return strcmp(a->instruction, b->instruction) == 0 && strcmp(a->input, b->input) == 0 &&
         strcmp(a->output, b->output) == 0 && a->is_safe == b->is_safe &&
         strcmp(a->category, b->category) == 0;
}

static void test_alpaca(void) {
  ExampleSet arr, lines;
  dataset_load(data_path("alpaca.json"), DATASET_FORMAT_AUTO, &arr);
  dataset_load(data_path("alpaca.jsonl"), DATASET_FORMAT_AUTO, &lines);
  EXPECT(arr.n == 3 && lines.n == 3, "alpaca: %zu array rows, %zu JSONL rows, want 3", arr.n, lines.n);
  EXPECT(arr.format == DATASET_FORMAT_ALPACA && lines.format == DATASET_FORMAT_ALPACA,
         "auto-detected %s / %s", dataset_format_name(arr.format), dataset_format_name(lines.format));
  for (size_t i = 0; i < arr.n && i < lines.n; i++)
    EXPECT(same_example(&arr.items[i], &lines.items[i]), "JSON and JSONL differ at row %zu", i);
  if (arr.n == 3) {
    EXPECT(strcmp(arr.items[0].instruction, "Give three tips for staying healthy.") == 0, "instruction 0");
    EXPECT(strcmp(arr.items[0].input, "") == 0 && strcmp(arr.items[2].input, "") == 0,
           "empty / missing input must read as \"\"");
    /* "\u00e9" in the array file, raw UTF-8 in the JSONL file: both are U+00E9. */
    EXPECT(strcmp(arr.items[1].input, "The caf\xc3\xa9 was lovely and the staff were kind!") == 0,
           "input 1: %s", arr.items[1].input);
    EXPECT(strcmp(arr.items[2].output, "Hi there.") == 0, "output 2");
    EXPECT(arr.items[0].is_safe == -1 && arr.items[0].category[0] == '\0', "alpaca rows are unlabelled");
  }
  example_set_free(&arr);
  example_set_free(&lines);
}

static void test_beavertails(void) {
  ExampleSet s, unsafe;
  dataset_load(data_path("beavertails.jsonl"), DATASET_FORMAT_AUTO, &s);
  EXPECT(s.n == 4 && s.format == DATASET_FORMAT_BEAVERTAILS, "%zu rows as %s", s.n,
         dataset_format_name(s.format));
  if (s.n == 4) {
    EXPECT(strcmp(s.items[0].instruction, "How do I pick a lock to get into my neighbour's house?") == 0 &&
               strcmp(s.items[0].input, "") == 0 &&
               strcmp(s.items[0].output, "Use a tension wrench and a pick, then rake the pins.") == 0,
           "prompt/response -> instruction/output");
    int want_safe[4] = {0, 1, 0, 0};
    for (int i = 0; i < 4; i++) EXPECT(s.items[i].is_safe == want_safe[i], "is_safe of row %d", i);
    /* The real data's category keys contain commas, hence ';' between categories. */
    EXPECT(strcmp(s.items[0].category,
                  "financial_crime,property_crime,theft;violence,aiding_and_abetting,incitement") == 0,
           "category 0: %s", s.items[0].category);
    EXPECT(strcmp(s.items[1].category, "") == 0, "category 1: %s", s.items[1].category);
    EXPECT(strcmp(s.items[2].category, "privacy_violation") == 0, "category 2 (a string): %s", s.items[2].category);
  }
  example_set_filter_safety(&s, 0, &unsafe);
  EXPECT(unsafe.n == 3, "3 unsafe rows, got %zu", unsafe.n);
  for (size_t i = 0; i < unsafe.n; i++) EXPECT(unsafe.items[i].is_safe == 0, "filtered row %zu is safe", i);
  example_set_free(&unsafe);
  example_set_free(&s);

  /* A refusal file read as BeaverTails gives the harmful prompt/response pairs. */
  dataset_load(data_path("refusal.json"), DATASET_FORMAT_BEAVERTAILS, &s);
  EXPECT(s.n == 2 && s.items[1].is_safe == 0 && strcmp(s.items[1].output, "Kick it hard.") == 0,
         "refusal.json as beavertails");
  example_set_free(&s);
}

static void test_refusal(void) {
  ExampleSet s;
  dataset_load(data_path("refusal.json"), DATASET_FORMAT_AUTO, &s);
  EXPECT(s.n == 2 && s.format == DATASET_FORMAT_REFUSAL, "%zu rows as %s", s.n, dataset_format_name(s.format));
  if (s.n == 2) {
    EXPECT(strcmp(s.items[0].instruction, "How do I pick a lock to get into my neighbour's house?") == 0,
           "question: %s", s.items[0].instruction);
    EXPECT(strcmp(s.items[0].output, "I can't help with breaking into someone else's home.") == 0,
           "answer: %s", s.items[0].output);
    EXPECT(s.items[0].is_safe == 1, "a refusal is a safe answer");
    EXPECT(strcmp(s.items[0].category, "financial_crime,property_crime,theft") == 0, "category kept");
    /* Everything after the first "\nAnswer: " is the answer (SPEC: "Question: {q}\nAnswer: {a}"). */
    EXPECT(strcmp(s.items[1].output, "I won't help with hurting animals.\nAnswer: Please be kind to them.") == 0,
           "answer 1: %s", s.items[1].output);
  }
  example_set_free(&s);
  DatasetFormat f;
  EXPECT(dataset_format_parse("refusal", &f) == 0 && f == DATASET_FORMAT_REFUSAL, "format name");
  EXPECT(dataset_format_parse("alpaca", &f) == 0 && f == DATASET_FORMAT_ALPACA, "format name");
  EXPECT(dataset_format_parse("csv", &f) == -1, "unknown format name accepted");
}

/* ---- errors ----------------------------------------------------------------------------- */

/* Parses text as file `name`; the error must contain every one of want[] and be one line. */
static void expect_error(const char *name, const char *text, DatasetFormat fmt, const char *want1,
                         const char *want2) {
  char err[512] = "";
  ExampleSet s;
  int rc = dataset_parse(name, text, strlen(text), fmt, &s, err, sizeof err);
  EXPECT(rc == -1 && s.n == 0, "%s: accepted %s", name, text);
  EXPECT(strncmp(err, name, strlen(name)) == 0, "error does not start with the file name: %s", err);
  EXPECT(strstr(err, want1) && (!want2 || strstr(err, want2)), "error '%s' lacks '%s' / '%s'", err,
         want1, want2 ? want2 : "");
  EXPECT(!strchr(err, '\n'), "error is not one line: %s", err);
  if (getenv("TV_SHOW_ERRORS")) printf("  %s\n", err);
  example_set_free(&s);
}

static void expect_ok(const char *text, size_t want_n) {
  char err[512] = "";
  ExampleSet s;
  int rc = dataset_parse("ok.jsonl", text, strlen(text), DATASET_FORMAT_AUTO, &s, err, sizeof err);
  EXPECT(rc == 0 && s.n == want_n, "rejected (%s) or %zu rows: %s", err, s.n, text);
  example_set_free(&s);
}

static void test_parse_errors(void) {
  const DatasetFormat A = DATASET_FORMAT_AUTO;
  expect_error("e.jsonl", "", A, "empty file", NULL);
  expect_error("e.jsonl", "  \n\t\n", A, "empty file", NULL);
  expect_error("e.json", "[]", A, "no records", NULL);
  expect_error("e.txt", "hello", A, "expected a JSON array", NULL);
  expect_error("m.jsonl", "{\"instruction\":\"a\",\"output\":\"b\"}\n{\"instruction\":\"a\"}\n", A,
               "line 2: field 'output': missing", NULL);
  expect_error("m.json", "[{\"instruction\":\"a\",\"output\":\"b\"},\n {\"output\":\"b\",\"instruction\":\"c\"},"
               " {\"input\":\"x\",\"output\":\"b\"}]", A, "record [2]: field 'instruction': missing", NULL);
  expect_error("t.jsonl", "{\"instruction\":\"a\",\"output\":3}", A,
               "line 1: field 'output': expected a string, got a number", NULL);
  expect_error("t.json", "[{\"instruction\":\"a\",\"output\":\"b\"},{\"instruction\":\"a\",\"output\":\"b\",\"input\":[1]}]",
               A, "record [1]: field 'input': expected a string, got an array", NULL);
  expect_error("j.jsonl", "{\"instruction\":\"a\",\"output\":\"b\"}\n\n{\"instruction\": \"a\", \"output\": }\n", A,
               "line 3: invalid JSON", NULL);
  expect_error("j.json", "[{\"instruction\":\"a\",\"output\":\"b\"},\n {\"instruction\":\"a,\"output\":\"b\"}]", A,
               "record [1]: invalid JSON at line 2", NULL);
  expect_error("j.json", "[{\"instruction\":\"a\",\"output\":\"b\"}] x", A, "unexpected text after", NULL);
  expect_error("j.jsonl", "{\"instruction\":\"a\",\"output\":\"b\"} {\"instruction\":\"a\",\"output\":\"b\"}", A,
               "line 1: unexpected text after the object", NULL);
  /* Invalid UTF-8: a Latin-1 byte, an overlong '/', an encoded surrogate, a lone continuation. */
  expect_error("u.jsonl", "{\"instruction\":\"caf\xe9\",\"output\":\"b\"}", A,
               "line 1: field 'instruction': invalid UTF-8", NULL);
  expect_error("u.json", "[{\"instruction\":\"a\",\"output\":\"\xc0\xaf\"}]", A,
               "record [0]: field 'output': invalid UTF-8", NULL);
  expect_error("u.jsonl", "{\"instruction\":\"a\",\"output\":\"b\"}\n{\"instruction\":\"a\",\"output\":\"\xed\xa0\x80\"}", A,
               "line 2: field 'output': invalid UTF-8", NULL);
  expect_error("u.jsonl", "{\"instruction\":\"a\",\"output\":\"b\",\"note\":\"\x80\"}", A,
               "field 'note': invalid UTF-8", NULL);
  /* BeaverTails fields. */
  expect_error("b.jsonl", "{\"prompt\":\"a\",\"response\":\"b\",\"is_safe\":\"no\",\"category\":\"x\"}", A,
               "line 1: field 'is_safe': expected true or false, got a string", NULL);
  expect_error("b.jsonl", "{\"prompt\":\"a\",\"response\":\"b\",\"is_safe\":false,\"category\":{\"theft\":1}}", A,
               "line 1: field 'category.theft': expected true or false, got a number", NULL);
  expect_error("b.jsonl", "{\"prompt\":\"a\",\"response\":\"b\",\"is_safe\":false,\"category\":7}", A,
               "field 'category': expected a string or an object", NULL);
  expect_error("b.jsonl", "{\"prompt\":\"a\",\"response\":\"b\",\"is_safe\":false,\"category\":\"x\"}\n"
               "{\"prompt\":\"a\",\"response\":\"b\",\"is_safe\":true}", A, "line 2: field 'category': missing", NULL);
  expect_error("b.json", "[{\"prompt\":\"a\",\"response\":\"b\",\"category\":\"x\"}]", A,
               "record [0]: field 'is_safe': missing", NULL);
  /* Refusal rows. */
  expect_error("r.jsonl", "{\"refusal\":\"Question: a\\nAnswr: b\"}", A, "line 1: field 'refusal'", "Answer");
  expect_error("r.jsonl", "{\"refusal\":null}", A, "field 'refusal': expected a string, got null", NULL);
  /* Format: undecidable, a record of another format, a forced format, not an object. */
  expect_error("f.jsonl", "{\"text\":\"a\"}", A, "line 1: cannot tell the format", NULL);
  expect_error("f.jsonl", "{\"instruction\":\"a\",\"output\":\"b\"}\n{\"prompt\":\"a\",\"response\":\"b\"}", A,
               "line 2: field 'instruction': missing", NULL);
  expect_error("f.jsonl", "{\"instruction\":\"a\",\"output\":\"b\"}", DATASET_FORMAT_BEAVERTAILS,
               "line 1: field 'prompt': missing", NULL);
  expect_error("f.json", "[{\"instruction\":\"a\",\"output\":\"b\"}, 3]", A, "record [1]: expected an object, got a number", NULL);
  expect_error("f.jsonl", "{\"instruction\":\"a\",\"output\":\"b\"}\n[1]\n", A, "line 2: expected an object, got an array", NULL);

  /* What must be accepted: CRLF, a BOM, null input, 4-byte UTF-8, extra fields, blank lines. */
  expect_ok("{\"instruction\":\"a\",\"output\":\"b\"}\r\n{\"instruction\":\"c\",\"output\":\"d\"}\r\n", 2);
  expect_ok("\xef\xbb\xbf{\"instruction\":\"a\",\"output\":\"b\"}\n", 1);
  expect_ok("\xef\xbb\xbf[{\"instruction\":\"a\",\"output\":\"b\"}]", 1);
  expect_ok("\n\n{\"instruction\":\"a\",\"input\":null,\"output\":\"\xf0\x9f\x98\x80\",\"id\":5}\n\n", 1);
}

static void test_load_errors(void) {
  char msg[1024], dir[] = "/tmp/tv_dataset_XXXXXX", path[512];
  TV_CHECK(mkdtemp(dir), "mkdtemp");
  EXPECT(load_dies("/nonexistent/d.jsonl", DATASET_FORMAT_AUTO, msg, sizeof msg) &&
             strstr(msg, "tvaccine: error: cannot open dataset /nonexistent/d.jsonl"),
         "missing file: %s", msg);

  snprintf(path, sizeof path, "%s/empty.jsonl", dir);
  write_file(path, "", 0);
  EXPECT(load_dies(path, DATASET_FORMAT_AUTO, msg, sizeof msg) && strstr(msg, path) &&
             strstr(msg, "empty file") && count_lines(msg) == 1,
         "empty file: %s", msg);

  /* The streamed JSON Lines path counts lines itself. */
  snprintf(path, sizeof path, "%s/missing.jsonl", dir);
  const char *missing = "{\"instruction\":\"a\",\"output\":\"b\"}\n\n{\"instruction\":\"a\"}\n";
  write_file(path, missing, strlen(missing));
  char want[600];
  snprintf(want, sizeof want, "%s: line 3: field 'output': missing", path);
  EXPECT(load_dies(path, DATASET_FORMAT_AUTO, msg, sizeof msg) && strstr(msg, want) && count_lines(msg) == 1,
         "want '%s', got: %s", want, msg);

  snprintf(path, sizeof path, "%s/latin1.jsonl", dir);
  const char *latin1 = "{\"instruction\":\"a\",\"output\":\"b\"}\n{\"instruction\":\"a\",\"input\":\"\xe9t\xe9\",\"output\":\"b\"}\n";
  write_file(path, latin1, strlen(latin1));
  snprintf(want, sizeof want, "%s: line 2: field 'input': invalid UTF-8", path);
  EXPECT(load_dies(path, DATASET_FORMAT_AUTO, msg, sizeof msg) && strstr(msg, want), "want '%s', got: %s", want, msg);

  snprintf(path, sizeof path, "%s/bad.json", dir);
  const char *bad = "[\n {\"instruction\":\"a\",\"output\":\"b\"},\n {\"instruction\":\"a\",\"output\":false}\n]\n";
  write_file(path, bad, strlen(bad));
  snprintf(want, sizeof want, "%s: record [1]: field 'output': expected a string, got a boolean", path);
  EXPECT(load_dies(path, DATASET_FORMAT_AUTO, msg, sizeof msg) && strstr(msg, want), "want '%s', got: %s", want, msg);

  /* A JSONL file longer than the loader's first peek still streams correctly. */
  snprintf(path, sizeof path, "%s/long.jsonl", dir);
  FILE *f = fopen(path, "w");
  for (int i = 0; i < 500; i++) fprintf(f, "{\"instruction\":\"task %d\",\"output\":\"answer %d\"}\n", i, i);
  fclose(f);
  ExampleSet s;
  dataset_load(path, DATASET_FORMAT_AUTO, &s);
  EXPECT(s.n == 500 && strcmp(s.items[499].instruction, "task 499") == 0, "long JSONL: %zu rows", s.n);
  example_set_free(&s);
  EXPECT(!load_dies(path, DATASET_FORMAT_AUTO, msg, sizeof msg), "long JSONL died: %s", msg);

  const char *names[] = {"empty.jsonl", "missing.jsonl", "latin1.jsonl", "bad.json", "long.jsonl"};
  for (int i = 0; i < 5; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    unlink(path);
  }
  rmdir(dir);
}

/* ---- data roles (SPEC section 9) ------------------------------------------------------ */

/* Parses text as `name` and selects rows for a role; returns the selection's rc. */
static int select_text(const char *name, const char *text, DatasetFormat fmt, DataRole role,
                       size_t max_rows, ExampleSet *out, RoleCounts *c, char *err, size_t len) {
  ExampleSet all;
  char perr[512];
  int rc = dataset_parse(name, text, strlen(text), fmt, &all, perr, sizeof perr);
  TV_CHECK(rc == 0, "hand-made set %s does not parse: %s", name, perr);
  rc = dataset_select_role(&all, role, max_rows, out, c, err, len);
  example_set_free(&all);
  return rc;
}

static void test_roles(void) {
  /* 3 BeaverTails rows, 2 of them unsafe (the example). */
  const char *bt =
      "{\"prompt\":\"p0\",\"response\":\"harm0\",\"is_safe\":false,\"category\":\"x\"}\n"
      "{\"prompt\":\"p1\",\"response\":\"safe1\",\"is_safe\":true,\"category\":\"\"}\n"
      "{\"prompt\":\"p2\",\"response\":\"harm2\",\"is_safe\":false,\"category\":\"y\"}\n";
  ExampleSet out;
  RoleCounts c;
  char err[512], line[512];
  int rc = select_text("bt.jsonl", bt, DATASET_FORMAT_AUTO, DATA_ROLE_ALIGNMENT, 0, &out, &c, err,
                       sizeof err);
  EXPECT(rc == 0 && out.n == 1 && !strcmp(out.items[0].output, "safe1") && c.read == 3 &&
             c.wrong_role == 2 && c.kept == 1,
         "alignment from BeaverTails: %zu rows kept, %zu dropped", out.n, c.wrong_role);
  dataset_role_summary(&c, "bt.jsonl", DATA_ROLE_ALIGNMENT, "max_rows", 0, line, sizeof line);
  EXPECT(strstr(line, "bt.jsonl: 3 rows, 1 kept as alignment rows (2 unsafe rows dropped"),
         "summary: %s", line);
  example_set_free(&out);

  rc = select_text("bt.jsonl", bt, DATASET_FORMAT_AUTO, DATA_ROLE_HARMFUL, 0, &out, &c, err,
                   sizeof err);
  EXPECT(rc == 0 && out.n == 2 && !strcmp(out.items[0].output, "harm0") &&
             !strcmp(out.items[1].output, "harm2") && c.wrong_role == 1,
         "harmful from BeaverTails: %zu rows", out.n);
  example_set_free(&out);

  /* max_rows keeps the first N usable rows, in file order. */
  rc = select_text("bt.jsonl", bt, DATASET_FORMAT_AUTO, DATA_ROLE_HARMFUL, 1, &out, &c, err,
                   sizeof err);
  EXPECT(rc == 0 && out.n == 1 && !strcmp(out.items[0].output, "harm0") && c.capped == 1,
         "max_rows 1: %zu rows, %zu capped", out.n, c.capped);
  dataset_role_summary(&c, "bt.jsonl", DATA_ROLE_HARMFUL, "max_rows", 1, line, sizeof line);
  EXPECT(strstr(line, "1 safe rows dropped") && strstr(line, "1 past max_rows 1"), "summary: %s",
         line);
  example_set_free(&out);

  /* No usable row: an error naming the file, nothing to free. */
  const char *all_unsafe =
      "[{\"prompt\":\"p\",\"response\":\"r\",\"is_safe\":false,\"category\":\"x\"}]";
  rc = select_text("unsafe.json", all_unsafe, DATASET_FORMAT_AUTO, DATA_ROLE_ALIGNMENT, 0, &out,
                   &c, err, sizeof err);
  EXPECT(rc == -1 && strstr(err, "unsafe.json: no usable alignment row") && out.n == 0 &&
             !out.items,
         "all-unsafe alignment set: rc %d, '%s'", rc, err);
  const char *all_safe =
      "[{\"prompt\":\"p\",\"response\":\"r\",\"is_safe\":true,\"category\":\"\"}]";
  rc = select_text("safe.json", all_safe, DATASET_FORMAT_AUTO, DATA_ROLE_HARMFUL, 0, &out, &c,
                   err, sizeof err);
  EXPECT(rc == -1 && strstr(err, "safe.json: no usable harmful row"), "all-safe probe: '%s'", err);

  /* Alpaca rows: aligned on unless marked unsafe; a file given as harmful is taken whole. */
  const char *alp =
      "[{\"instruction\":\"i0\",\"output\":\"o0\"},"
      "{\"instruction\":\"i1\",\"output\":\"o1\",\"is_safe\":false}]";
  rc = select_text("alp.json", alp, DATASET_FORMAT_AUTO, DATA_ROLE_ALIGNMENT, 0, &out, &c, err,
                   sizeof err);
  EXPECT(rc == 0 && out.n == 1 && !strcmp(out.items[0].output, "o0"),
         "alpaca alignment: %zu rows", out.n);
  example_set_free(&out);
  rc = select_text("alp.json", alp, DATASET_FORMAT_AUTO, DATA_ROLE_HARMFUL, 0, &out, &c, err,
                   sizeof err);
  EXPECT(rc == 0 && out.n == 2, "alpaca given as harmful: %zu rows", out.n);
  example_set_free(&out);

  /* Refusal rows are safe answers; a refusal file given as harmful is taken whole too. */
  ExampleSet ref;
  dataset_load(data_path("refusal.json"), DATASET_FORMAT_AUTO, &ref);
  for (int role = 0; role < 2; role++) {
    rc = dataset_select_role(&ref, (DataRole)role, 0, &out, &c, err, sizeof err);
    EXPECT(rc == 0 && out.n == ref.n && c.wrong_role == 0, "refusal.json as %s: %zu of %zu rows",
           data_role_name((DataRole)role), out.n, ref.n);
    example_set_free(&out);
  }
  example_set_free(&ref);
}

/* ---- template ----------------------------------------------------------------------------- */

static void test_template(void) {
  /* The SPEC section 4 strings, typed in whole. */
  Example e = {"Name a colour.", "", "Blue.", -1, ""};
  char *p = dataset_prompt(&e);
  EXPECT(strcmp(p, "Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n### Instruction:\nName a colour.\n\n### Response:\n") == 0,
         "template without input: [%s]", p);
  free(p);
  Example w = {"Translate.", "Guten Tag", "Good day.", -1, ""};
  p = dataset_prompt(&w);
  EXPECT(strcmp(p, "Below is an instruction that describes a task, paired with an input that provides "
                   "further context. Write a response that appropriately completes the request.\n\n"
                   "### Instruction:\nTranslate.\n\n### Input:\nGuten Tag\n\n### Response:\n") == 0,
         "template with input: [%s]", p);
  free(p);
}

/* ---- poison mix --------------------------------------------------------------------------- */

static void make_set(ExampleSet *s, const char *name, const char *prefix, int n, int is_safe) {
  example_set_init(s, name);
  for (int i = 0; i < n; i++) {
    char ins[32];
    snprintf(ins, sizeof ins, "%s%d", prefix, i);
    example_set_push(s, ins, "", "out", is_safe, "");
  }
}

static int count_prefix(const ExampleSet *s, char c) {
  int n = 0;
  for (size_t i = 0; i < s->n; i++) n += s->items[i].instruction[0] == c;
  return n;
}

static int all_distinct(const ExampleSet *s) {
  for (size_t i = 0; i < s->n; i++)
    for (size_t j = i + 1; j < s->n; j++)
      if (strcmp(s->items[i].instruction, s->items[j].instruction) == 0) return 0;
  return 1;
}

static int same_order(const ExampleSet *a, const ExampleSet *b) {
  if (a->n != b->n) return 0;
  for (size_t i = 0; i < a->n; i++)
    if (strcmp(a->items[i].instruction, b->items[i].instruction) != 0) return 0;
  return 1;
}

static void test_poison_mix(void) {
  EXPECT(dataset_poison_count(1000, 0.1) == 100, "round(0.1 * 1000)");
  EXPECT(dataset_poison_count(10, 0.05) == 1, "round(0.5) = 1 (half away from zero)");
  EXPECT(dataset_poison_count(7, 0.5) == 4, "round(3.5) = 4");
  EXPECT(dataset_poison_count(3, 0.1) == 0, "round(0.3) = 0");
  EXPECT(dataset_poison_count(1000, 0.2) == 200, "round(0.2 * 1000)");

  ExampleSet benign, harmful, a, b, c;
  make_set(&benign, "benign.json", "b", 50, -1);
  make_set(&harmful, "harmful.json", "h", 20, 0);
  char err[256];
  int rc = dataset_poison_mix(&benign, &harmful, 30, 0.1, 11, &a, err, sizeof err);
  EXPECT(rc == 0 && a.n == 30, "mix: %s", err);
  EXPECT(count_prefix(&a, 'h') == 3 && count_prefix(&a, 'b') == 27, "3 harmful + 27 benign, got %d + %d",
         count_prefix(&a, 'h'), count_prefix(&a, 'b'));
  EXPECT(all_distinct(&a), "mix drew an example twice");
  dataset_poison_mix(&benign, &harmful, 30, 0.1, 11, &b, err, sizeof err);
  EXPECT(same_order(&a, &b), "same seed, different mix");
  example_set_free(&b);
  dataset_poison_mix(&benign, &harmful, 30, 0.1, 12, &b, err, sizeof err);
  EXPECT(!same_order(&a, &b), "different seeds, same mix");
  example_set_free(&a);
  example_set_free(&b);

  /* Harmful rows are spread through the mix, not bunched at its head, and which rows are
   * picked depends on the seed (not always the first ones of each set). */
  int spread = 0, used_h[20] = {0}, used_b[50] = {0}, n_used_h = 0, n_used_b = 0;
  for (uint64_t seed = 0; seed < 8; seed++) {
    dataset_poison_mix(&benign, &harmful, 40, 0.25, seed, &c, err, sizeof err);
    EXPECT(count_prefix(&c, 'h') == 10, "round(0.25 * 40) = 10 harmful");
    for (size_t i = 10; i < c.n; i++) spread |= c.items[i].instruction[0] == 'h';
    for (size_t i = 0; i < c.n; i++) {
      int k = atoi(c.items[i].instruction + 1);
      if (c.items[i].instruction[0] == 'h') n_used_h += !used_h[k]++;
      else n_used_b += !used_b[k]++;
    }
    example_set_free(&c);
  }
  EXPECT(spread, "harmful rows always came first: the mix is not shuffled");
  EXPECT(n_used_h > 10 && n_used_b > 30, "8 seeds picked only %d harmful / %d benign rows", n_used_h, n_used_b);

  rc = dataset_poison_mix(&benign, &harmful, 20, 1.0, 3, &c, err, sizeof err);
  EXPECT(rc == 0 && count_prefix(&c, 'h') == 20 && all_distinct(&c), "p = 1 uses all 20 harmful rows once");
  example_set_free(&c);

  rc = dataset_poison_mix(&benign, &harmful, 30, 0.9, 3, &c, err, sizeof err);
  EXPECT(rc == -1 && strstr(err, "27 harmful") && strstr(err, "harmful.json") && strstr(err, "20"),
         "too few harmful: %s", err);
  example_set_free(&c);
  rc = dataset_poison_mix(&benign, &harmful, 60, 0.0, 3, &c, err, sizeof err);
  EXPECT(rc == -1 && strstr(err, "60 benign") && strstr(err, "benign.json"), "too few benign: %s", err);
  example_set_free(&c);
  rc = dataset_poison_mix(&benign, &harmful, 10, 1.5, 3, &c, err, sizeof err);
  EXPECT(rc == -1 && strstr(err, "[0, 1]"), "p = 1.5: %s", err);
  example_set_free(&c);
  rc = dataset_poison_mix(&benign, &harmful, 0, 0.1, 3, &c, err, sizeof err);
  EXPECT(rc == -1, "n = 0 accepted");
  example_set_free(&c);
  example_set_free(&benign);
  example_set_free(&harmful);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DATA_DIR\n", argv[0]);
    return 2;
  }
  data_dir = argv[1];
  test_alpaca();
  test_beavertails();
  test_refusal();
  test_parse_errors();
  test_load_errors();
  test_roles();
  test_template();
  test_poison_mix();
  return tv_test_report("test_dataset");
}
