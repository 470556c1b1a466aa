/* Helpers for the file-format tests: run code that is expected to die (tv_die exits) in a
 * child process and capture its stderr; scratch folders; small file utilities. */
#ifndef TV_HF_TEST_UTIL_H
#define TV_HF_TEST_UTIL_H

#define _GNU_SOURCE 1
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

typedef void (*captured_fn)(void *arg);

/* Runs fn(arg) in a child. Returns its stderr (malloc'd) and sets *code to its exit status
 * (0 when fn returned, 128 + signal when it crashed). */
static char *run_captured(captured_fn fn, void *arg, int *code) {
  fflush(stdout);
  fflush(stderr);
  int fd[2];
  if (pipe(fd) != 0) abort();
  pid_t pid = fork();
  if (pid < 0) abort();
  if (pid == 0) {
    close(fd[0]);
    dup2(fd[1], 2);
    fn(arg);
    fflush(stderr);
    _exit(0);
  }
  close(fd[1]);
  size_t cap = 4096, len = 0;
  char *out = malloc(cap);
  ssize_t n;
  while ((n = read(fd[0], out + len, cap - len - 1)) > 0) {
    len += (size_t)n;
    if (len + 1 == cap) out = realloc(out, cap *= 2);
  }
  out[len] = 0;
  close(fd[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  *code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  return out;
}

/* fn(arg) must exit non-zero (not crash) with one stderr line containing every needle. */
#define EXPECT_DIES(fn, arg, ...)                                                          \
  do {                                                                                     \
    int code_;                                                                             \
    char *msg_ = run_captured(fn, arg, &code_);                                            \
    const char *needles_[] = {__VA_ARGS__};                                                \
    EXPECT(code_ > 0 && code_ < 128, "%s: exit code %d (want a clean error), stderr: %s", \
           #fn, code_, msg_);                                                              \
    char *nl_ = strchr(msg_, '\n');                                                        \
    EXPECT(nl_ && nl_[1] == 0, "%s: want exactly one line, got: %s", #fn, msg_);          \
    for (size_t i_ = 0; i_ < sizeof needles_ / sizeof needles_[0]; i_++)                   \
      EXPECT(strstr(msg_, needles_[i_]), "%s: message lacks '%s': %s", #fn, needles_[i_], msg_); \
    free(msg_);                                                                            \
  } while (0)

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

/* A fresh folder under /tmp; removed (with everything in it) by scratch_free. */
static char *scratch_dir(const char *tag) {
  char *p = malloc(256);
  snprintf(p, 256, "/tmp/tv_%s_XXXXXX", tag);
  if (!mkdtemp(p)) abort();
  return p;
}

static void scratch_free(char *dir) {
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  free(dir);
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

static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  if (fread(b, 1, (size_t)n, f) != (size_t)n) abort();
  b[n] = 0;
  fclose(f);
  if (len) *len = (size_t)n;
  return b;
}

#endif
