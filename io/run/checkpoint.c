/* HDF5 checkpoints (see checkpoint.h for the layout): atomic save via .tmp + fsync + rename,
 * and a load that checks every attribute and dataset and answers a bad file with one line. */
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "checkpoint_internal.h"
#include "lora.h"

#define FORMAT_NAME "tvaccine-checkpoint"
#define MAX_LAYERS (1 << 20)

static char *str_dup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = tv_malloc(n);
  memcpy(d, s, n);
  return d;
}

static char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *str_printf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = tv_malloc((size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

/* ---- state rules, shared by save (internal error) and load (bad file) ---- */

static const char *check_msg(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const char *check_msg(char *buf, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, len, fmt, ap);
  va_end(ap);
  return buf;
}

const char *checkpoint_state_check(const CheckpointState *s, char *buf, size_t len) {
  if (s->step < 0 || s->total_steps < 0 || s->step > s->total_steps)
    return check_msg(buf, len, "step %" PRId64 " outside [0, total_steps %" PRId64 "]", s->step,
                     s->total_steps);
  if (s->data_epoch < 0 || s->data_cursor < 0 || s->probe_epoch < 0 || s->probe_cursor < 0)
    return check_msg(buf, len, "negative data or probe position");
  if (s->num_layers < 1 || s->num_layers > MAX_LAYERS)
    return check_msg(buf, len, "num_layers %d outside [1, %d]", s->num_layers, MAX_LAYERS);
  if (!s->layer_probs) return check_msg(buf, len, "layer_probs missing");
  for (int l = 0; l < s->num_layers; l++)
    if (!(s->layer_probs[l] >= 0.0 && s->layer_probs[l] <= 1.0))
      return check_msg(buf, len, "layer_probs[%d] = %g is not a probability", l, s->layer_probs[l]);
  if (s->num_active < 0 || s->num_active > s->num_layers)
    return check_msg(buf, len, "%d active layers, more than num_layers %d", s->num_active,
                     s->num_layers);
  if (s->num_active > 0 && !s->active_layers) return check_msg(buf, len, "active_layers missing");
  for (int i = 0; i < s->num_active; i++) {
    int32_t a = s->active_layers[i];
    if (a < 0 || a >= s->num_layers)
      return check_msg(buf, len, "active_layers[%d] = %d outside [0, %d)", i, (int)a,
                       s->num_layers);
    for (int j = 0; j < i; j++)
      if (s->active_layers[j] == a)
        return check_msg(buf, len, "active_layers lists layer %d twice", (int)a);
  }
  if (!s->config_yaml) return check_msg(buf, len, "config_yaml missing");
  if (!s->method || (strcmp(s->method, "sft") && strcmp(s->method, "vaccine") &&
                     strcmp(s->method, "tvaccine")))
    return check_msg(buf, len, "method '%s' is not sft, vaccine or tvaccine",
                     s->method ? s->method : "(null)");
  if (s->lora_r < 1) return check_msg(buf, len, "lora_r %d < 1", s->lora_r);
  if (!isfinite(s->lora_alpha))
    return check_msg(buf, len, "lora_alpha %g is not finite", s->lora_alpha);
  if (s->lora_target_mask == 0 || s->lora_target_mask >= (1u << LORA_NUM_TARGETS))
    return check_msg(buf, len, "lora_target_mask 0x%x names no target or an unknown one",
                     (unsigned)s->lora_target_mask);
  /* Bounded so that L * layer_numel * sizeof(float) fits in size_t and in hsize_t. */
  if (s->layer_numel < 1 || s->layer_numel > (INT64_MAX / 8) / s->num_layers)
    return check_msg(buf, len, "layer_numel %" PRId64 " outside [1, %" PRId64 "]", s->layer_numel,
                     (INT64_MAX / 8) / s->num_layers);
  if (!s->lora_params || !s->lora_m || !s->lora_v || !s->lora_steps)
    return check_msg(buf, len, "LoRA arrays missing");
  for (int l = 0; l < s->num_layers * LORA_NUM_TARGETS; l++)
    if (s->lora_steps[l] < 0)
      return check_msg(buf, len, "lora_steps[%d] = %" PRId64 " < 0", l, s->lora_steps[l]);
  return NULL;
}

void checkpoint_state_free(CheckpointState *s) {
  free(s->layer_probs);
  free(s->active_layers);
  free(s->config_yaml);
  free(s->method);
  free(s->lora_params);
  free(s->lora_m);
  free(s->lora_v);
  free(s->lora_steps);
  memset(s, 0, sizeof *s);
}

/* The scalar attributes of the root besides format, format_version and method. */
_Static_assert(sizeof(int) == 4, "int fields are stored as int32");
#define SCALAR(field, kind) {#field, kind, offsetof(CheckpointState, field)}
static const struct {
  const char *name;
  CkKind kind;
  size_t offset;
} kScalars[] = {
    SCALAR(step, CK_I64),              SCALAR(total_steps, CK_I64),
    SCALAR(seed, CK_U64),              SCALAR(sample_rng_stream, CK_U64),
    SCALAR(sample_rng_counter, CK_U64), SCALAR(data_epoch, CK_I64),
    SCALAR(data_cursor, CK_I64),       SCALAR(probe_epoch, CK_I64),
    SCALAR(probe_cursor, CK_I64),      SCALAR(num_layers, CK_I32),
    SCALAR(lora_r, CK_I32),            SCALAR(lora_alpha, CK_F64),
    SCALAR(lora_target_mask, CK_U32),  SCALAR(layer_numel, CK_I64),
    SCALAR(model_digest, CK_U64),      SCALAR(tokenizer_digest, CK_U64),
    SCALAR(data_digest, CK_U64),       SCALAR(probe_digest, CK_U64),
};

/* ---- save ---- */

static int write_contents(CkWriter *w, hid_t f, const CheckpointState *s) {
  const int32_t version = CHECKPOINT_FORMAT_VERSION, L = s->num_layers;
  int rc = ck_write_attr_str(w, f, "format", FORMAT_NAME);
  if (!rc) rc = ck_write_attr_num(w, f, "format_version", CK_I32, &version);
  for (size_t i = 0; !rc && i < sizeof kScalars / sizeof kScalars[0]; i++)
    rc = ck_write_attr_num(w, f, kScalars[i].name, kScalars[i].kind,
                           (const char *)s + kScalars[i].offset);
  if (!rc) rc = ck_write_attr_str(w, f, "method", s->method);
  if (!rc) rc = ck_write_string_dataset(w, f, "config_yaml", s->config_yaml);
  hsize_t dl[1] = {(hsize_t)L}, da[1] = {(hsize_t)s->num_active};
  hsize_t dp[2] = {(hsize_t)L, (hsize_t)s->layer_numel};
  if (!rc) rc = ck_write_array(w, f, "layer_probs", CK_F64, 1, dl, s->layer_probs);
  if (!rc) rc = ck_write_array(w, f, "active_layers", CK_I32, 1, da, s->active_layers);
  if (rc) return rc;
  hid_t g = H5Gcreate2(f, "lora", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (g < 0) return ck_wfail(w, "creating group /lora");
  rc = ck_write_array(w, g, "params", CK_F32, 2, dp, s->lora_params);
  if (!rc) rc = ck_write_array(w, g, "m", CK_F32, 2, dp, s->lora_m);
  if (!rc) rc = ck_write_array(w, g, "v", CK_F32, 2, dp, s->lora_v);
  hsize_t ds[2] = {(hsize_t)L, LORA_NUM_TARGETS};
  if (!rc) rc = ck_write_array(w, g, "steps", CK_I64, 2, ds, s->lora_steps);
  H5Gclose(g);
  return rc;
}

static int write_file(CkWriter *w, const char *tmp, const CheckpointState *s) {
  /* The 1.10 formats checksum all metadata (superblock, object headers, and the chunk
   * index: a fixed array instead of 1.8's unchecked B-tree, in which a flipped key made a
   * chunk silently read back as fill zeros). Readers need HDF5 1.10 or later. */
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fapl < 0 || H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110) < 0) {
    ck_close_id(&fapl, H5Pclose);
    return ck_wfail(w, "setting up HDF5 file access");
  }
  hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  if (f < 0) ck_wfail(w, "creating %s", tmp); /* before any other call clears the error stack */
  H5Pclose(fapl);
  if (f < 0) return -1;
  int rc = write_contents(w, f, s);
  /* Closing writes the remaining metadata, so it can fail like any write. */
  if (H5Fclose(f) < 0 && !rc) rc = ck_wfail(w, "closing %s", tmp);
  return rc;
}

static int errno_fail(CkWriter *w, const char *what, const char *name) {
  int e = errno;
  H5Eclear2(H5E_DEFAULT);
  w->failed = 1;
  snprintf(w->err, sizeof w->err, "%s %s: %s", what, name, strerror(e));
  return -1;
}

static int sync_path(CkWriter *w, const char *name, int flags) {
  int fd = open(name, flags);
  if (fd < 0) return errno_fail(w, "opening for fsync", name);
  /* Some file systems cannot fsync a directory (EINVAL); the rename still stands there. */
  if (fsync(fd) != 0 && !((flags & O_DIRECTORY) && errno == EINVAL)) {
    errno_fail(w, "fsync of", name);
    close(fd);
    return -1;
  }
  close(fd);
  return 0;
}

void checkpoint_save(const char *path, const CheckpointState *s) {
  char why[256];
  const char *bad = checkpoint_state_check(s, why, sizeof why);
  TV_CHECK(!bad, "checkpoint_save(%s): inconsistent state: %s", path, bad);
  char *tmp = str_printf("%s.tmp", path);
  const char *slash = strrchr(path, '/');
  /* The folder whose entry the rename changes ("/" for "/x", "." for a bare name). */
  char *dir = slash ? str_printf("%.*s", (int)(slash - path + (slash == path)), path)
                    : str_dup(".");
  CkWriter w = {.failed = 0};
  CkQuiet q = ck_quiet_begin();
  int rc = write_file(&w, tmp, s);
  /* Data and metadata reach the disk before the name does: after a crash the name points
   * either to the old complete file or to the new complete one. */
  if (!rc) rc = sync_path(&w, tmp, O_RDONLY);
  if (!rc && rename(tmp, path) != 0) rc = errno_fail(&w, "renaming the .tmp file to", path);
  if (!rc) {
    free(tmp);
    tmp = NULL; /* renamed: nothing left to clean up */
    rc = sync_path(&w, dir, O_RDONLY | O_DIRECTORY);
  }
  ck_quiet_end(q);
  if (rc) {
    if (tmp) unlink(tmp); /* a half-written .tmp is never resumed from, but is clutter */
    char msg[sizeof w.err];
    memcpy(msg, w.err, sizeof msg);
    free(tmp);
    free(dir);
    tv_die("cannot write checkpoint %s: %s", path, msg);
  }
  free(dir);
}

/* ---- load ---- */

static int read_scalars(CkReader *r, hid_t f, CheckpointState *s) {
  int32_t version = 0;
  char *format = NULL;
  int rc = ck_read_attr_str(r, f, "", "format", &format);
  if (!rc && strcmp(format, FORMAT_NAME) != 0)
    rc = ck_rfail(r, "not a tvaccine checkpoint (attribute format is '%s')", format);
  free(format);
  if (!rc) rc = ck_read_attr_num(r, f, "format_version", CK_I32, &version);
  if (!rc && version != CHECKPOINT_FORMAT_VERSION)
    rc = ck_rfail(r, "format_version %d, this build reads version %d", (int)version,
                  CHECKPOINT_FORMAT_VERSION);
  for (size_t i = 0; !rc && i < sizeof kScalars / sizeof kScalars[0]; i++)
    rc = ck_read_attr_num(r, f, kScalars[i].name, kScalars[i].kind,
                          (char *)s + kScalars[i].offset);
  if (!rc) rc = ck_read_attr_str(r, f, "", "method", &s->method);
  const int L = s->num_layers;
  /* The array shapes below are derived from these two, so they must be sane first. */
  if (!rc && (L < 1 || L > MAX_LAYERS))
    rc = ck_rfail(r, "attribute num_layers = %d outside [1, %d]", (int)L, MAX_LAYERS);
  if (!rc && (s->layer_numel < 1 || s->layer_numel > (INT64_MAX / 8) / L))
    rc = ck_rfail(r, "attribute layer_numel = %" PRId64 " is out of range", s->layer_numel);
  return rc;
}

static int read_contents(CkReader *r, hid_t f, CheckpointState *s) {
  int rc = read_scalars(r, f, s);
  if (rc) return rc;
  hsize_t dl[1] = {(hsize_t)s->num_layers}, da[1] = {CK_ANY_LEN};
  hsize_t dp[2] = {(hsize_t)s->num_layers, (hsize_t)s->layer_numel};
  rc = ck_read_string_dataset(r, f, "/config_yaml", "config_yaml", &s->config_yaml);
  if (!rc)
    rc = ck_read_array(r, f, "/layer_probs", "layer_probs", CK_F64, 1, dl,
                       (void **)&s->layer_probs);
  if (!rc)
    rc = ck_read_array(r, f, "/active_layers", "active_layers", CK_I32, 1, da,
                       (void **)&s->active_layers);
  if (rc) return rc;
  if (da[0] > (hsize_t)s->num_layers)
    return ck_rfail(r, "dataset /active_layers has %llu entries, more than num_layers %d",
                    (unsigned long long)da[0], s->num_layers);
  s->num_active = (int)da[0];
  htri_t there = H5Lexists(f, "lora", H5P_DEFAULT);
  if (there <= 0) return ck_rfail(r, "%s group /lora", there < 0 ? "cannot look up" : "missing");
  hid_t g = H5Gopen2(f, "lora", H5P_DEFAULT);
  if (g < 0) return ck_rfail(r, "cannot open /lora as a group");
  rc = ck_read_array(r, g, "/lora/params", "params", CK_F32, 2, dp, (void **)&s->lora_params);
  if (!rc) rc = ck_read_array(r, g, "/lora/m", "m", CK_F32, 2, dp, (void **)&s->lora_m);
  if (!rc) rc = ck_read_array(r, g, "/lora/v", "v", CK_F32, 2, dp, (void **)&s->lora_v);
  hsize_t ds[2] = {(hsize_t)s->num_layers, LORA_NUM_TARGETS};
  if (!rc)
    rc = ck_read_array(r, g, "/lora/steps", "steps", CK_I64, 2, ds, (void **)&s->lora_steps);
  H5Gclose(g);
  if (rc) return rc;
  char why[256];
  const char *bad = checkpoint_state_check(s, why, sizeof why);
  return bad ? ck_rfail(r, "inconsistent contents: %s", bad) : 0;
}

const char *checkpoint_load(const char *path, CheckpointState *out, char *err, size_t errlen) {
  CkReader r = {.path = path, .err = err, .errlen = errlen, .file_size = 0};
  CheckpointState s;
  memset(&s, 0, sizeof s);
  memset(out, 0, sizeof *out);
  struct stat st;
  if (stat(path, &st) != 0) {
    snprintf(err, errlen, "checkpoint %s: cannot open: %s", path, strerror(errno));
    return err;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "checkpoint %s: not a regular file", path);
    return err;
  }
  r.file_size = (hsize_t)st.st_size;
  CkQuiet q = ck_quiet_begin();
  int rc = 0;
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), f = H5I_INVALID_HID;
  htri_t is_hdf5;
  /* Strong close: whatever an error path left open goes with the file, so no handle leaks. */
  if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
    rc = ck_rfail(&r, "cannot set up HDF5 file access");
  } else if ((is_hdf5 = H5Fis_hdf5(path)) <= 0) {
    rc = ck_rfail(&r, is_hdf5 < 0 ? "cannot read the file"
                                  : "not an HDF5 file (no HDF5 signature)");
  } else if ((f = H5Fopen(path, H5F_ACC_RDONLY, fapl)) < 0) {
    rc = ck_rfail(&r, "cannot open as HDF5 (truncated or damaged?)");
  } else {
    rc = read_contents(&r, f, &s);
  }
  ck_close_id(&f, H5Fclose);
  ck_close_id(&fapl, H5Pclose);
  ck_quiet_end(q);
  if (rc) {
    checkpoint_state_free(&s);
    return err;
  }
  *out = s;
  return NULL;
}

/* ---- run folder ---- */

char *checkpoint_dir(const char *run_dir) { return str_printf("%s/checkpoints", run_dir); }

char *checkpoint_path(const char *run_dir, int64_t step) {
  return str_printf("%s/checkpoints/step-%06" PRId64 ".h5", run_dir, step);
}

static void make_dir(const char *dir) {
  if (mkdir(dir, 0777) != 0 && errno != EEXIST)
    tv_die("cannot create checkpoint folder %s: %s", dir, strerror(errno));
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    tv_die("cannot create checkpoint folder %s: a file of that name is in the way", dir);
}

void checkpoint_dir_create(const char *run_dir) {
  make_dir(run_dir);
  char *dir = checkpoint_dir(run_dir);
  make_dir(dir);
  free(dir);
}

/* Step of a name "step-<1..18 digits>.h5", else -1. */
static int64_t parse_step_name(const char *name) {
  if (strncmp(name, "step-", 5) != 0) return -1;
  const char *p = name + 5;
  int64_t step = 0;
  int digits = 0;
  for (; *p >= '0' && *p <= '9'; p++, digits++) {
    if (digits == 18) return -1;
    step = step * 10 + (*p - '0');
  }
  return digits > 0 && strcmp(p, ".h5") == 0 ? step : -1;
}

char *checkpoint_find_latest(const char *run_dir, int64_t *step, char *err, size_t errlen) {
  char *dir = checkpoint_dir(run_dir);
  DIR *d = opendir(dir);
  if (!d) {
    snprintf(err, errlen, "no checkpoints: cannot open %s: %s", dir, strerror(errno));
    free(dir);
    return NULL;
  }
  int64_t best = -1;
  char *best_name = NULL;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    int64_t st = parse_step_name(e->d_name);
    if (st > best) {
      best = st;
      free(best_name);
      best_name = str_dup(e->d_name);
    }
  }
  closedir(d);
  char *path = NULL;
  if (best_name) {
    path = str_printf("%s/%s", dir, best_name);
    if (step) *step = best;
  } else {
    snprintf(err, errlen, "no checkpoints (step-NNNNNN.h5) in %s", dir);
  }
  free(best_name);
  free(dir);
  return path;
}
