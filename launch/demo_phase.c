/* The demo's phases: each runs other subcommands of this executable as child processes, so
 * every phase has its own memory peak, log and exit status; stamps let a re-run reuse the
 * phases whose commands and inputs have not changed. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "demo.h"
#include "hf_model.h"
#include "subcommands.h"

void demo_args_add(DemoArgs *a, const char *fmt, ...) {
  if (a->n + 2 > a->cap) {
    a->cap = a->cap ? 2 * a->cap : 16;
    a->v = realloc(a->v, (size_t)a->cap * sizeof(char *));
    TV_CHECK(a->v, "out of memory");
  }
  va_list ap;
  va_start(ap, fmt);
  TV_CHECK(vasprintf(&a->v[a->n], fmt, ap) >= 0, "out of memory");
  va_end(ap);
  a->v[++a->n] = NULL;
}

void demo_args_free(DemoArgs *a) {
  for (int i = 0; i < a->n; i++) free(a->v[i]);
  free(a->v);
  memset(a, 0, sizeof *a);
}

static char *path_of(const DemoRunner *r, const char *sub, const char *name, const char *ext) {
  char *p;
  TV_CHECK(asprintf(&p, "%s/%s/%s%s", r->out, sub, name, ext) >= 0, "out of memory");
  return p;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  if (remove(path) != 0) tv_die("demo: cannot remove %s: %s", path, strerror(errno));
  return 0;
}

/* Removes a phase's folder and everything in it (a path the demo built inside its folder). */
static void remove_tree(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) return;
  nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* mkdir -p: the demo's folders and each phase's own. */
static void make_dirs(const char *path) {
  char *p = strdup(path);
  TV_CHECK(p, "out of memory");
  for (char *c = p + 1;; c++) {
    if (*c == '/' || !*c) {
      char keep = *c;
      *c = 0;
      if (mkdir(p, 0755) != 0 && errno != EEXIST)
        tv_die("demo: cannot create the folder %s: %s", p, strerror(errno));
      *c = keep;
      if (!keep) break;
    }
  }
  free(p);
}

static int folder_is_empty(const char *path) {
  DIR *d = opendir(path);
  if (!d) tv_die("demo.out %s: cannot read it: %s", path, strerror(errno));
  int empty = 1;
  for (struct dirent *e; empty && (e = readdir(d));)
    empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
  closedir(d);
  return empty;
}

static char *read_file(const char *path) {
  size_t len;
  return hf_read_text_file(path, &len);
}

void demo_runner_init(DemoRunner *r, const char *out, int fresh, int total) {
  memset(r, 0, sizeof *r);
  r->out = out;
  r->total = total;
  r->t0 = now_s();
  ssize_t n = readlink("/proc/self/exe", r->self, sizeof r->self - 1);
  if (n <= 0) tv_die("demo: cannot find this executable (/proc/self/exe): %s", strerror(errno));
  r->self[n] = 0;
  struct stat st;
  if (stat(r->self, &st) != 0) tv_die("demo: cannot stat %s: %s", r->self, strerror(errno));
  snprintf(r->exe_id, sizeof r->exe_id, "%lld bytes, modified %lld.%09ld", (long long)st.st_size,
           (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec);

  /* The folder is the demo's own: refuse one that holds anything else. */
  char *stamps = path_of(r, "stamps", "", "");
  if (stat(out, &st) == 0) {
    if (!S_ISDIR(st.st_mode)) tv_die("demo.out %s: not a folder", out);
    struct stat ps;
    int is_demo = stat(stamps, &ps) == 0 && S_ISDIR(ps.st_mode);
    if (!is_demo && !folder_is_empty(out))
      tv_die("demo.out %s holds files that are not a demo's (no stamps/ folder); choose another "
             "--out or remove it", out);
  }
  make_dirs(out);
  /* One demo at a time in a folder: the lock lasts as long as this process. */
  char *lock = path_of(r, ".lock", "", "");
  lock[strlen(lock) - 1] = 0;
  int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) tv_die("demo.out %s: cannot create %s: %s", out, lock, strerror(errno));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0)
    tv_die("demo.out %s is in use by another demo (lock %s)", out, lock);
  free(lock);
  if (fresh) remove_tree(stamps);
  char *logs = path_of(r, "logs", "", "");
  make_dirs(stamps);
  make_dirs(logs);
  if (access(stamps, W_OK) != 0) tv_die("demo.out %s: cannot write there: %s", out, strerror(errno));
  free(logs);
  free(stamps);
}

/* What a finished phase's stamp holds before its "finished" line: the executable, the
 * commands, and the stamps of the phases it read (so a phase that ran again invalidates
 * every phase after it). */
static char *stamp_text(const DemoRunner *r, const DemoPhase *ph) {
  size_t cap = 4096, len = 0;
  char *t = tv_malloc(cap);
#define PUT(...)                                                              \
  do {                                                                        \
    int need = snprintf(NULL, 0, __VA_ARGS__);                                \
    while (len + (size_t)need + 1 > cap) t = realloc(t, cap *= 2);            \
    TV_CHECK(t, "out of memory");                                             \
    len += (size_t)snprintf(t + len, cap - len, __VA_ARGS__);                 \
  } while (0)
  PUT("tvaccine %s\n", r->exe_id);
  for (int c = 0; c < ph->n_cmds; c++) {
    for (int i = 0; i < ph->cmds[c].n; i++) PUT("%s%s", i ? " " : "", ph->cmds[c].v[i]);
    PUT("\n");
  }
  for (int d = 0; d < DEMO_MAX_DEPS && ph->deps[d]; d++) {
    char *dep = path_of(r, "stamps", ph->deps[d], "");
    char *text = read_file(dep);
    PUT("after %s:\n%s", ph->deps[d], text ? text : "(never finished)\n");
    free(text);
    free(dep);
  }
#undef PUT
  return t;
}

static int stamp_matches(const char *stamp_path, const char *text) {
  char *old = read_file(stamp_path);
  size_t n = strlen(text);
  int ok = old && !strncmp(old, text, n) && !strncmp(old + n, "finished ", 9);
  free(old);
  return ok;
}

/* The last lines of a log, for a phase that failed. */
static void print_tail(const char *log_path, int lines) {
  char *text = read_file(log_path);
  if (!text) return;
  size_t n = strlen(text);
  const char *p = text + n;
  if (p > text && p[-1] == '\n') p--;
  for (int seen = 0; p > text; p--)
    if (p[-1] == '\n' && ++seen == lines) break;
  fprintf(stderr, "---- last lines of %s ----\n%s", log_path, p);
  if (n && text[n - 1] != '\n') fputc('\n', stderr);
  free(text);
}

static int run_child(const DemoRunner *r, char **argv, const char *log_path) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) tv_die("demo: cannot start a process: %s", strerror(errno));
  if (pid == 0) {
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) _exit(126);
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
    FILE *f = fdopen(1, "w");
    if (f) {
      fprintf(f, "$ tvaccine");
      for (int i = 1; argv[i]; i++) fprintf(f, " %s", argv[i]);
      fprintf(f, "\n");
      fflush(f);
    }
    execv(r->self, argv);
    _exit(127);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) tv_die("demo: waiting for a phase: %s", strerror(errno));
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

void demo_run_phase(DemoRunner *r, DemoPhase *ph) {
  r->index++;
  char *stamp = path_of(r, "stamps", ph->id, "");
  char *log_path = path_of(r, "logs", ph->id, ".log");
  char *text = stamp_text(r, ph);
  printf("demo [%d/%d] %s ...", r->index, r->total, ph->label);
  fflush(stdout);
  if (stamp_matches(stamp, text)) {
    printf(" reused (finished before with the same commands and inputs)\n");
  } else {
    double t0 = now_s();
    unlink(stamp);
    remove_tree(ph->dir);
    unlink(log_path);
    make_dirs(ph->dir);
    for (int c = 0; c < ph->n_cmds; c++) {
      int code = run_child(r, ph->cmds[c].v, log_path);
      if (code != 0) {
        printf(" failed\n");
        if (code == 127 || code == 126)
          fprintf(stderr, "demo: %s: `tvaccine %s` could not be started from %s (status %d; "
                  "was the executable rebuilt or removed while the demo ran?)\n", ph->label,
                  ph->cmds[c].v[1], r->self, code);
        else
          fprintf(stderr, "demo: %s: `tvaccine %s` exited with status %d (log: %s)\n",
                  ph->label, ph->cmds[c].v[1], code, log_path);
        print_tail(log_path, 15);
        exit(1);
      }
    }
    char *tmp;
    TV_CHECK(asprintf(&tmp, "%s.tmp", stamp) >= 0, "out of memory");
    FILE *f = fopen(tmp, "w");
    if (!f) tv_die("demo: cannot write %s: %s", tmp, strerror(errno));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    fprintf(f, "%sfinished %lld.%09ld\n", text, (long long)ts.tv_sec, ts.tv_nsec);
    if (fclose(f) != 0 || rename(tmp, stamp) != 0)
      tv_die("demo: cannot write %s: %s", stamp, strerror(errno));
    free(tmp);
    r->ran++;
    printf(" %.0f s\n", now_s() - t0);
  }
  fflush(stdout);
  for (int c = 0; c < ph->n_cmds; c++) demo_args_free(&ph->cmds[c]);
  free(text);
  free(log_path);
  free(stamp);
}
