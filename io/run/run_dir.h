/* The run folder of an alignment run belongs to one run: it is created (with its parents)
 * and locked before anything is loaded, a folder holding another run's files is refused,
 * and the lock (an flock on DIR/.lock) is held until the run ends. */
#ifndef TV_RUN_DIR_H
#define TV_RUN_DIR_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  RUN_DIR_NEW,       /* a new run: the folder must be missing or empty */
  RUN_DIR_OVERWRITE, /* a new run that replaces an earlier run's files (--overwrite) */
  RUN_DIR_RESUME     /* the run continues in its own folder: its files are kept */
} RunDirMode;

typedef struct RunDir RunDir;

/* Creates dir and any missing parent, takes the lock without waiting (a folder in use by
 * another run is an error), checks the mode's rule and that files can be created in it.
 * RUN_DIR_OVERWRITE removes the files an earlier run wrote (config.yaml, log.jsonl,
 * checkpoints/, adapter/) and leaves anything else. NULL with one line in err on failure
 * ("out DIR: what is wrong"); nothing in the folder is changed then. */
RunDir *run_dir_acquire(const char *dir, RunDirMode mode, char *err, size_t errlen);
/* Releases the lock (the lock file stays, empty) and frees d. NULL is fine. */
void run_dir_release(RunDir *d);
const char *run_dir_path(const RunDir *d);

/* Whether a and b name the same existing folder (same device and inode). */
int run_dir_same(const char *a, const char *b);

/* 64-bit FNV-1a digest of a file's bytes, continuing from `digest` (start with
 * RUN_DIGEST_SEED). 0 with a message in err when the file cannot be read. */
#define RUN_DIGEST_SEED UINT64_C(0xcbf29ce484222325)
int run_digest_file(const char *path, uint64_t *digest, char *err, size_t errlen);
uint64_t run_digest_bytes(uint64_t digest, const void *bytes, size_t n);

#endif
