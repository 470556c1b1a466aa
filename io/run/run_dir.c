/* Run-folder ownership (see run_dir.h): create, lock, refuse another run's files, probe that
 * the folder is writable; and the file digests a resumed run is checked against. */
#include "run_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

#define LOCK_NAME ".lock"

struct RunDir {
  char *path;
  int lock_fd;
};

/* The entries an alignment run writes; --overwrite removes these and nothing else. */
static const char *const RUN_FILES[] = {"config.yaml", "log.jsonl"};
static const char *const RUN_FOLDERS[] = {"checkpoints", "adapter"};

static char *join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = tv_malloc(n);
  snprintf(p, n, "%s/%s", dir, name);
  return p;
}

static RunDir *fail(RunDir *d, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static RunDir *fail(RunDir *d, char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  run_dir_release(d);
  return NULL;
}

/* mkdir -p: 0, or -1 with errno set and the failing prefix in `where`. */
static int make_dirs(const char *dir, char *where, size_t wlen) {
  char *p = tv_malloc(strlen(dir) + 1);
  strcpy(p, dir);
  int rc = 0;
  for (char *s = p + 1;; s++) {
    char c = *s;
    if (c != '/' && c != 0) continue;
    *s = 0;
    struct stat st;
    if (mkdir(p, 0777) != 0 && errno != EEXIST) rc = -1;
    else if (stat(p, &st) != 0) rc = -1;
    else if (!S_ISDIR(st.st_mode)) errno = ENOTDIR, rc = -1;
    if (rc) {
      snprintf(where, wlen, "%s", p);
      break;
    }
    *s = c;
    if (!c) break;
  }
  free(p);
  return rc;
}

/* Entries of dir other than ".", ".." and the lock; the first one's name in `first`. */
static int count_entries(const char *dir, char *first, size_t flen) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, LOCK_NAME))
      continue;
    if (n++ == 0) snprintf(first, flen, "%s", e->d_name);
  }
  closedir(d);
  return n;
}

/* Removes the plain files of a run's sub-folder and then the folder; 0 or -1 (errno). */
static int remove_run_folder(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return errno == ENOENT ? 0 : -1;
  int rc = 0;
  for (struct dirent *e; rc == 0 && (e = readdir(d)) != NULL;) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char *p = join(dir, e->d_name);
    if (unlink(p) != 0) rc = -1;
    free(p);
  }
  closedir(d);
  if (rc == 0 && rmdir(dir) != 0) rc = -1;
  return rc;
}

RunDir *run_dir_acquire(const char *dir, RunDirMode mode, char *err, size_t errlen) {
  RunDir *d = tv_calloc(1, sizeof(RunDir));
  d->lock_fd = -1;
  d->path = tv_malloc(strlen(dir) + 1);
  strcpy(d->path, dir);
  if (!dir[0]) return fail(d, err, errlen, "out: no output folder given");
  char where[4096];
  if (make_dirs(dir, where, sizeof where) != 0)
    return fail(d, err, errlen, "out %s: cannot create folder %s: %s", dir, where, strerror(errno));

  char *lock = join(dir, LOCK_NAME);
  d->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  int open_errno = errno;
  free(lock);
  if (d->lock_fd < 0)
    return fail(d, err, errlen, "out %s: cannot create files in it: %s", dir, strerror(open_errno));
  if (flock(d->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    close(d->lock_fd);
    d->lock_fd = -1;
    if (e == EWOULDBLOCK)
      return fail(d, err, errlen, "out %s: the folder is in use by another running run "
                  "(it holds the lock %s/" LOCK_NAME ")", dir, dir);
    return fail(d, err, errlen, "out %s: cannot lock %s/" LOCK_NAME ": %s", dir, dir, strerror(e));
  }

  char first[256] = "";
  int entries = count_entries(dir, first, sizeof first);
  if (entries < 0)
    return fail(d, err, errlen, "out %s: cannot list the folder: %s", dir, strerror(errno));
  if (mode == RUN_DIR_NEW && entries > 0)
    return fail(d, err, errlen, "out %s: the folder is not empty (it holds %s%s): give a new "
                "folder, --resume %s to continue its run, or --overwrite to replace it",
                dir, first, entries > 1 ? ", ..." : "", dir);
  if (mode == RUN_DIR_OVERWRITE) {
    for (size_t i = 0; i < sizeof RUN_FILES / sizeof RUN_FILES[0]; i++) {
      char *p = join(dir, RUN_FILES[i]);
      int rc = unlink(p) != 0 && errno != ENOENT;
      free(p);
      if (rc) return fail(d, err, errlen, "out %s: --overwrite cannot remove %s: %s", dir,
                          RUN_FILES[i], strerror(errno));
    }
    for (size_t i = 0; i < sizeof RUN_FOLDERS / sizeof RUN_FOLDERS[0]; i++) {
      char *p = join(dir, RUN_FOLDERS[i]);
      int rc = remove_run_folder(p);
      free(p);
      if (rc) return fail(d, err, errlen, "out %s: --overwrite cannot remove %s/: %s", dir,
                          RUN_FOLDERS[i], strerror(errno));
    }
  }
  /* Writable: the lock file may have existed already, so create and remove a probe file. */
  char *probe = join(dir, ".write-test");
  int fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  int e = errno;
  if (fd >= 0) {
    close(fd);
    unlink(probe);
  }
  free(probe);
  if (fd < 0) return fail(d, err, errlen, "out %s: cannot create files in it: %s", dir, strerror(e));
  return d;
}

void run_dir_release(RunDir *d) {
  if (!d) return;
  if (d->lock_fd >= 0) close(d->lock_fd); /* closing the descriptor drops the flock */
  free(d->path);
  free(d);
}

const char *run_dir_path(const RunDir *d) { return d->path; }

int run_dir_same(const char *a, const char *b) {
  struct stat sa, sb;
  if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* FNV-1a over 8-byte words (and the tail byte by byte): quick enough to digest a whole model
 * while it loads; it tells files apart, it is not meant to resist a forger. */
uint64_t run_digest_bytes(uint64_t h, const void *bytes, size_t n) {
  const unsigned char *p = bytes;
  const uint64_t prime = UINT64_C(0x100000001b3);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    h = (h ^ w) * prime;
    h ^= h >> 31;
  }
  for (; i < n; i++) h = (h ^ p[i]) * prime;
  return h;
}

int run_digest_file(const char *path, uint64_t *digest, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
    return 0;
  }
  static const size_t CHUNK = 1 << 20; /* whole words, so chunking does not change the digest */
  unsigned char *buf = tv_malloc(CHUNK);
  uint64_t h = *digest;
  size_t n;
  while ((n = fread(buf, 1, CHUNK, f)) > 0) h = run_digest_bytes(h, buf, n);
  int ok = !ferror(f);
  if (!ok) snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
  fclose(f);
  free(buf);
  if (ok) *digest = h;
  return ok;
}
