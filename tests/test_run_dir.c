/* io/run_dir and the resume rule of io/run_config: a run folder has one owner (lock), a new
 * run refuses a used folder, --overwrite removes only a run's own files, digests do not
 * depend on how a file is read, and a resumed config may differ only in the listed keys. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "run_config.h"
#include "run_dir.h"
#include "test_util.h"

static char *scratch_dir(const char *tag) {
  char *p = malloc(256);
  snprintf(p, 256, "/tmp/tv_%s_XXXXXX", tag);
  if (!mkdtemp(p)) abort();
  return p;
}
static char *path_in(const char *dir, const char *name) {
  char *p = malloc(strlen(dir) + strlen(name) + 2);
  sprintf(p, "%s/%s", dir, name);
  return p;
}
static int file_exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0;
}
static void write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, n, f) != n) abort();
  fclose(f);
}
/* Removes what the tests below leave (a few known names), then the scratch folder. */
static void scratch_free(char *root) {
  const char *left[] = {"a/b/run/notes.txt", "a/b/run/.lock", "a/b/run", "a/b", "a", "f"};
  for (size_t i = 0; i < sizeof left / sizeof left[0]; i++) {
    char *p = path_in(root, left[i]);
    remove(p);
    free(p);
  }
  rmdir(root);
  free(root);
}

static void test_ownership(void) {
  char *root = scratch_dir("rundir");
  char err[1024];
  char *dir = path_in(root, "a/b/run"); /* parents are created */
  RunDir *d = run_dir_acquire(dir, RUN_DIR_NEW, err, sizeof err);
  EXPECT(d != NULL, "new folder with missing parents: %s", err);
  /* A second owner is refused while the first holds the lock, in any mode. */
  RunDirMode modes[] = {RUN_DIR_NEW, RUN_DIR_OVERWRITE, RUN_DIR_RESUME};
  for (int m = 0; m < 3; m++) {
    RunDir *e = run_dir_acquire(dir, modes[m], err, sizeof err);
    EXPECT(!e && strstr(err, "in use by another"), "mode %d: second owner: %s", m, err);
    run_dir_release(e);
  }
  run_dir_release(d);

  /* A folder holding a run's files: refused for a new run, kept on resume, cleaned on
   * overwrite, except for files that are not the run's. */
  char *ck = path_in(dir, "checkpoints"), *cfg = path_in(dir, "config.yaml");
  char *step = path_in(ck, "step-000003.h5"), *mine = path_in(dir, "notes.txt");
  mkdir(ck, 0777);
  write_bytes(step, "x", 1);
  write_bytes(cfg, "y", 1);
  write_bytes(mine, "z", 1);
  d = run_dir_acquire(dir, RUN_DIR_NEW, err, sizeof err);
  EXPECT(!d && strstr(err, "not empty") && strstr(err, dir), "used folder for a new run: %s", err);
  EXPECT(file_exists(step) && file_exists(cfg), "a refused new run changed the folder");
  d = run_dir_acquire(dir, RUN_DIR_RESUME, err, sizeof err);
  EXPECT(d && file_exists(step) && file_exists(cfg), "resume keeps the run's files: %s", err);
  run_dir_release(d);
  d = run_dir_acquire(dir, RUN_DIR_OVERWRITE, err, sizeof err);
  EXPECT(d && !file_exists(step) && !file_exists(ck) && !file_exists(cfg),
         "overwrite removes the run's files: %s", err);
  EXPECT(file_exists(mine), "overwrite must leave files that are not the run's");
  run_dir_release(d);

  /* A file where the folder (or a parent) should be. */
  char *blocked = path_in(mine, "run");
  d = run_dir_acquire(blocked, RUN_DIR_NEW, err, sizeof err);
  EXPECT(!d && strstr(err, "cannot create folder"), "file in the way: %s", err);
  EXPECT(run_dir_same(dir, dir) && !run_dir_same(dir, root), "run_dir_same");
  free(ck), free(cfg), free(step), free(mine), free(blocked), free(dir);
  scratch_free(root);
}

static void test_digest(void) {
  char *root = scratch_dir("digest");
  char *p = path_in(root, "f"), err[512];
  size_t n = (3u << 20) + 5; /* more than one read chunk, not a whole number of words */
  unsigned char *buf = malloc(n);
  for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)(i * 2654435761u >> 13);
  write_bytes(p, buf, n);
  uint64_t a = RUN_DIGEST_SEED;
  EXPECT(run_digest_file(p, &a, err, sizeof err), "%s", err);
  EXPECT(a == run_digest_bytes(RUN_DIGEST_SEED, buf, n), "file digest != in-memory digest");
  buf[n / 2] ^= 1;
  EXPECT(a != run_digest_bytes(RUN_DIGEST_SEED, buf, n), "one flipped bit must change the digest");
  uint64_t b = RUN_DIGEST_SEED;
  EXPECT(!run_digest_file("/nonexistent/x", &b, err, sizeof err) && strstr(err, "/nonexistent/x"),
         "missing file: %s", err);
  free(buf), free(p);
  scratch_free(root);
}

static void test_resume_rule(void) {
  RunConfig a, b;
  char err[RUN_CONFIG_ERR_MAX];
  run_config_defaults(&a);
  run_config_copy(&b, &a);
  EXPECT(!run_config_check_resume(&a, &b, err, sizeof err), "equal configs: %s", err);
  /* Keys that may change, each alone. */
  const char *allowed[] = {"save_every=7", "log_every=3", "threads=2", "max_steps=99",
                           "epochs=3", "out=/x", "model=/m2", "data=/d2", "tokenizer=/t",
                           "tvaccine.probe_data=/p"};
  for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) {
    run_config_free(&b);
    run_config_copy(&b, &a);
    EXPECT(!run_config_set(&b, allowed[i], err, sizeof err), "%s", err);
    EXPECT(!run_config_check_resume(&a, &b, err, sizeof err), "%s refused: %s", allowed[i], err);
  }
  /* Keys that change the numbers, each alone: the message names the key. */
  const char *locked[] = {"method=sft",       "seed=7",          "lora.alpha=32",
                          "lora.r=4",         "lora.dropout=0",  "lora.target_modules=[q_proj]",
                          "optim.lr=0.5",     "optim.weight_decay=0", "rho=1",
                          "tvaccine.S=2",     "tvaccine.J=5",    "tvaccine.K=7",
                          "tvaccine.layers=[1]", "max_len=64",   "batch_size=3",
                          "data_format=alpaca", "tvaccine.freeze_scope=attention",
                          "tvaccine.probe_samples=9"};
  for (size_t i = 0; i < sizeof locked / sizeof locked[0]; i++) {
    run_config_free(&b);
    run_config_copy(&b, &a);
    EXPECT(!run_config_set(&b, locked[i], err, sizeof err), "%s", err);
    char key[64];
    snprintf(key, sizeof key, "%.*s", (int)(strchr(locked[i], '=') - locked[i]), locked[i]);
    const char *msg = run_config_check_resume(&a, &b, err, sizeof err);
    EXPECT(msg && !strncmp(msg, key, strlen(key)) && msg[strlen(key)] == ':',
           "%s: want a message naming %s, got %s", locked[i], key, msg ? msg : "none");
  }
  run_config_free(&a);
  run_config_free(&b);
}

int main(void) {
  test_ownership();
  test_digest();
  test_resume_rule();
  return tv_test_report("run_dir");
}
