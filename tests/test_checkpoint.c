/* io/checkpoint: save -> load is bit-exact, a failed or crashed save never damages the
 * previous file, misuse ends in one clear line, latest-checkpoint lookup. Bad files:
 * test_checkpoint_corrupt.c. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "checkpoint_test_util.h"
#include "test_util.h"

static int exists(const char *path) { return access(path, F_OK) == 0; }

/* ---- child processes: tv_die exits, so failing saves run in a fork ---- */

typedef struct {
  int status;
  char err[4096]; /* what the child wrote to stderr */
} Child;

typedef struct {
  const char *path;
  const CheckpointState *s;
  rlim_t fsize_limit; /* 0 = none */
  int die_on_limit;   /* SIGXFSZ kills (a crash) instead of write failing with EFBIG */
  int as_nobody;      /* root ignores folder permissions: drop to uid/gid 65534 first */
} SaveJob;

static void run_save(const SaveJob *job) {
  if (job->as_nobody && geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(77);
  if (job->fsize_limit) {
    struct rlimit rl = {.rlim_cur = job->fsize_limit, .rlim_max = job->fsize_limit};
    setrlimit(RLIMIT_FSIZE, &rl);
    signal(SIGXFSZ, job->die_on_limit ? SIG_DFL : SIG_IGN);
  }
  checkpoint_save(job->path, job->s);
}

static Child in_child(void (*fn)(const void *), const void *arg) {
  Child c = {.status = 0, .err = {0}};
  int p[2];
  if (pipe(p) != 0) return c;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    dup2(p[1], 2);
    fn(arg);
    _exit(0);
  }
  close(p[1]);
  size_t got = 0;
  ssize_t n;
  while ((n = read(p[0], c.err + got, sizeof c.err - 1 - got)) > 0) got += (size_t)n;
  close(p[0]);
  waitpid(pid, &c.status, 0);
  return c;
}

static void save_fn(const void *arg) { run_save(arg); }
static Child save_in_child(const char *path, const CheckpointState *s, rlim_t limit, int die) {
  SaveJob job = {.path = path, .s = s, .fsize_limit = limit, .die_on_limit = die, .as_nobody = 0};
  return in_child(save_fn, &job);
}

static int one_line(const char *s) {
  const char *nl = strchr(s, '\n');
  return nl && nl[1] == '\0';
}

/* A failed save: exit 1, one "cannot write checkpoint PATH" line naming `needle`, no .tmp. */
static void expect_save_fails(const char *path, const CheckpointState *s, rlim_t limit,
                              const char *needle, const char *what) {
  Child c = save_in_child(path, s, limit, 0);
  EXPECT(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 1, "%s: status %d", what, c.status);
  char want[600];
  snprintf(want, sizeof want, "tvaccine: error: cannot write checkpoint %s: ", path);
  EXPECT(strncmp(c.err, want, strlen(want)) == 0, "%s: stderr '%s'", what, c.err);
  EXPECT(one_line(c.err), "%s: stderr is not one line: '%s'", what, c.err);
  EXPECT(strstr(c.err, needle), "%s: '%s' lacks '%s'", what, c.err, needle);
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  struct stat st;
  EXPECT(stat(tmp, &st) != 0 || S_ISDIR(st.st_mode), "%s: a .tmp file was left", what);
  printf("  %-28s -> %s", what, c.err + strlen("tvaccine: error: "));
}

/* ---- the tests ---- */

static void test_round_trip(void) {
  char *path = checkpoint_path(root, 5);
  char want[200];
  snprintf(want, sizeof want, "%s/checkpoints/step-000005.h5", root);
  EXPECT(!strcmp(path, want), "checkpoint_path gave %s", path);
  struct {
    int L;
    int64_t N;
    int A;
  } shapes[] = {{4, 1000, 2}, {1, 1, 0}, {3, 70001, 3}, {32, 17, 5}};
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    CheckpointState s;
    make_state(&s, 100 + i, shapes[i].L, shapes[i].N, shapes[i].A);
    if (i == 1) s.config_yaml[0] = '\0'; /* an empty config is still a string */
    checkpoint_save(path, &s);            /* overwrites the previous shape's file */
    char what[64];
    snprintf(what, sizeof what, "round trip L=%d N=%" PRId64 " A=%d", shapes[i].L, shapes[i].N,
             shapes[i].A);
    expect_loads(path, &s, what);
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    EXPECT(!exists(tmp), "%s: .tmp left after a good save", what);
    checkpoint_state_free(&s);
  }
  unlink(path);
  free(path);
}

static const char *self_exe; /* argv[0] (not /proc/self/exe, which is valgrind under it) */

/* Runs this program again as "--resume-then-fail PATH" (see main). */
static void resume_then_fail(const void *path) {
  execl(self_exe, self_exe, "--resume-then-fail", (const char *)path, (char *)0);
  _exit(3);
}

static int resume_then_fail_main(const char *path) {
  CheckpointState s;
  char err[1024];
  if (checkpoint_load(path, &s, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 4;
  }
  struct rlimit rl = {.rlim_cur = 4096, .rlim_max = 4096};
  setrlimit(RLIMIT_FSIZE, &rl);
  signal(SIGXFSZ, SIG_IGN);
  s.step = s.total_steps;
  checkpoint_save(path, &s);
  return 0;
}

static void test_atomicity(void) {
  char *p3 = checkpoint_path(root, 3), *p4 = checkpoint_path(root, 4);
  char tmp3[256], tmp4[256];
  snprintf(tmp3, sizeof tmp3, "%s.tmp", p3);
  snprintf(tmp4, sizeof tmp4, "%s.tmp", p4);
  CheckpointState old, next;
  make_state(&old, 7, 6, 5000, 3);
  make_state(&next, 8, 6, 5000, 3);
  checkpoint_save(p3, &old);
  long size = file_size(p3);

  /* A crash half-way through writing step 4 (killed by SIGXFSZ at half the file size). */
  Child c = save_in_child(p4, &next, (rlim_t)size / 2, 1);
  EXPECT(WIFSIGNALED(c.status) && WTERMSIG(c.status) == SIGXFSZ, "crash: status %d", c.status);
  EXPECT(exists(tmp4) && !exists(p4), "crash: expected a torn .tmp and no step-4 file");
  expect_loads(p3, &old, "previous file after a crash");
  int64_t step = -1;
  char err[512];
  char *latest = checkpoint_find_latest(root, &step, err, sizeof err);
  EXPECT(latest && step == 3 && !strcmp(latest, p3), "latest after crash: %s step %" PRId64,
         latest ? latest : err, step);
  free(latest);
  expect_load_error(tmp4, "", "the torn .tmp itself");
  unlink(tmp4);

  /* Writes failing (EFBIG, like a full disk) while replacing step 3 in place. */
  expect_save_fails(p3, &next, (rlim_t)size / 2, "File too large", "write fails half-way");
  expect_loads(p3, &old, "previous file after a failed write");
  expect_save_fails(p3, &next, 1, "creating", "write fails at once");
  expect_loads(p3, &old, "previous file after a failed create");

  /* A fresh process that resumes (its first HDF5 use is a load) and then fails to save:
   * still one line and exit 1, not HDF5's exit handler crashing on the broken file. */
  c = in_child(resume_then_fail, p3);
  EXPECT(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 1 && one_line(c.err) &&
             strstr(c.err, "File too large"),
         "resume then failed save: status %d, '%s'", c.status, c.err);
  expect_loads(p3, &old, "previous file after resume + failed save");

  /* The temporary name is blocked (a directory sits there). */
  mkdir(tmp3, 0755);
  expect_save_fails(p3, &next, 0, "creating", "tmp name blocked");
  expect_loads(p3, &old, "previous file after blocked tmp");
  rmdir(tmp3);

  /* The rename fails (a non-empty directory has the target name). */
  char *p9 = checkpoint_path(root, 9), inner[300];
  snprintf(inner, sizeof inner, "%s/x", p9);
  mkdir(p9, 0755);
  fclose(fopen(inner, "w"));
  expect_save_fails(p9, &next, 0, "renaming", "rename fails");
  unlink(inner);
  rmdir(p9);
  free(p9);

  /* A folder that cannot be written (as root the child saves as user nobody, since root
   * ignores permissions). */
  char *dir = checkpoint_dir(root);
  chmod(root, 0711);
  chmod(dir, 0555);
  SaveJob job = {.path = p3, .s = &next, .fsize_limit = 0, .die_on_limit = 0, .as_nobody = 1};
  c = in_child(save_fn, &job);
  if (WIFEXITED(c.status) && WEXITSTATUS(c.status) == 77) {
    printf("  (cannot drop root privileges here: the unwritable-folder case is skipped)\n");
  } else {
    EXPECT(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 1 && one_line(c.err) &&
               strstr(c.err, "Permission denied") && strstr(c.err, p3),
           "unwritable folder: status %d, '%s'", c.status, c.err);
    printf("  %-28s -> %s", "folder not writable", c.err + strlen("tvaccine: error: "));
  }
  chmod(dir, 0755);
  chmod(root, 0700);
  free(dir);
  expect_loads(p3, &old, "previous file after unwritable folder");

  /* And after all that a good save still replaces the file. */
  checkpoint_save(p3, &next);
  expect_loads(p3, &next, "replace after failures");
  unlink(p3);
  checkpoint_state_free(&old);
  checkpoint_state_free(&next);
  free(p3);
  free(p4);
}

static void save_bad_state(const void *arg) {
  CheckpointState s;
  make_state(&s, 9, 4, 10, 2);
  s.active_layers[1] = 4; /* outside [0, L) */
  checkpoint_save(arg, &s);
}

static void make_dir_in_the_way(const void *arg) { checkpoint_dir_create(arg); }

static void test_bad_calls(void) {
  char *p = checkpoint_path(root, 11);
  Child c = in_child(save_bad_state, p);
  EXPECT(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 2 && strstr(c.err, "active_layers[1]"),
         "inconsistent state: status %d, '%s'", c.status, c.err);
  EXPECT(!exists(p), "inconsistent state was written");
  free(p);
  char file[128];
  snprintf(file, sizeof file, "%s/plainfile", root);
  fclose(fopen(file, "w"));
  c = in_child(make_dir_in_the_way, file);
  EXPECT(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 1 && one_line(c.err) &&
             strstr(c.err, "cannot create checkpoint folder"),
         "dir over a file: status %d, '%s'", c.status, c.err);
}

static void touch(const char *dir, const char *name) {
  char p[300];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  fclose(fopen(p, "w"));
}

static void test_latest(void) {
  char run[128], err[512];
  snprintf(run, sizeof run, "%s/run2", root);
  int64_t step = -1;
  char *got = checkpoint_find_latest(run, &step, err, sizeof err);
  EXPECT(!got && strstr(err, "cannot open") && strstr(err, run), "missing folder: '%s'", err);
  checkpoint_dir_create(run);
  checkpoint_dir_create(run); /* twice is fine */
  got = checkpoint_find_latest(run, &step, err, sizeof err);
  EXPECT(!got && strstr(err, "no checkpoints"), "empty folder: '%s'", err);
  char *dir = checkpoint_dir(run);
  const char *names[] = {"step-000002.h5", "step-000010.h5", "step-000009.h5",
                         "step-1000000.h5", "step-999999.h5", "step-2000000.h5.tmp",
                         "step-.h5", "step-12a.h5", "step-0000033.h5x", "notes.txt",
                         "step-99999999999999999999.h5"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) touch(dir, names[i]);
  got = checkpoint_find_latest(run, &step, err, sizeof err);
  char want[300];
  snprintf(want, sizeof want, "%s/step-1000000.h5", dir);
  EXPECT(got && !strcmp(got, want) && step == 1000000, "latest: %s step %" PRId64,
         got ? got : err, step);
  free(got);
  char *p = checkpoint_path(run, 1000001);
  EXPECT(strstr(p, "/step-1000001.h5") != NULL, "seven-digit name %s", p);
  free(p);
  free(dir);
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--resume-then-fail")) return resume_then_fail_main(argv[2]);
  self_exe = argv[0];
  if (scratch_create() != 0) return 1;
  test_round_trip();
  test_atomicity();
  test_bad_calls();
  test_latest();
  scratch_remove();
  return tv_test_report("checkpoint");
}
