/* HDF5 checkpoints (see checkpoint.h for the layout): atomic save via .tmp + fsync + rename,
 * and a load that checks every attribute and dataset and answers a bad file with one line. */
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
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
#include "lora.h"

#define FORMAT_NAME "tvaccine-checkpoint"
#define MAX_LAYERS (1 << 20)
/* Chunk rows of the LoRA arrays; caps one chunk at 256 MiB (HDF5's limit is 4 GiB). */
#define MAX_CHUNK_ELEMS ((hsize_t)1 << 26)

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
  for (int l = 0; l < s->num_layers * CHECKPOINT_LORA_TARGETS; l++)
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

/* ---- HDF5 plumbing ---- */

/* The numeric kinds we store: file type little-endian, memory type native. */
typedef enum { K_I32, K_I64, K_U32, K_U64, K_F32, K_F64 } Kind;
static const struct {
  H5T_class_t cls;
  size_t size;
  int sign; /* H5T_sign_t for integers, -1 for floats */
  const char *dtype;
} kKinds[] = {
    [K_I32] = {H5T_INTEGER, 4, H5T_SGN_2, "I32"},
    [K_I64] = {H5T_INTEGER, 8, H5T_SGN_2, "I64"},
    [K_U32] = {H5T_INTEGER, 4, H5T_SGN_NONE, "U32"},
    [K_U64] = {H5T_INTEGER, 8, H5T_SGN_NONE, "U64"},
    [K_F32] = {H5T_FLOAT, 4, -1, "F32"},
    [K_F64] = {H5T_FLOAT, 8, -1, "F64"},
};

/* Type ids are run-time values in HDF5 (the library opens on first use), hence functions. */
static hid_t kind_file_type(Kind k) {
  switch (k) {
    case K_I32: return H5T_STD_I32LE;
    case K_I64: return H5T_STD_I64LE;
    case K_U32: return H5T_STD_U32LE;
    case K_U64: return H5T_STD_U64LE;
    case K_F32: return H5T_IEEE_F32LE;
    case K_F64: return H5T_IEEE_F64LE;
  }
  return H5I_INVALID_HID;
}

static hid_t kind_mem_type(Kind k) {
  switch (k) {
    case K_I32: return H5T_NATIVE_INT32;
    case K_I64: return H5T_NATIVE_INT64;
    case K_U32: return H5T_NATIVE_UINT32;
    case K_U64: return H5T_NATIVE_UINT64;
    case K_F32: return H5T_NATIVE_FLOAT;
    case K_F64: return H5T_NATIVE_DOUBLE;
  }
  return H5I_INVALID_HID;
}

/* HDF5 prints its whole error stack to stderr by default; we report one line instead. */
typedef struct {
  H5E_auto2_t func;
  void *data;
} Quiet;

static Quiet quiet_begin(void) {
  /* After a failed write HDF5 keeps the broken file open, and its exit handler would retry
   * the flush forever ("infinite loop closing library") and crash inside tv_die's exit.
   * We close every object ourselves, so the handler is not needed. It is installed when
   * the library starts, so this must precede every other HDF5 call (no effect later). */
  H5dont_atexit();
  Quiet q = {NULL, NULL};
  H5Eget_auto2(H5E_DEFAULT, &q.func, &q.data);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  return q;
}

static void quiet_end(Quiet q) {
  H5Eclear2(H5E_DEFAULT);
  H5Eset_auto2(H5E_DEFAULT, q.func, q.data);
}

typedef struct {
  char *buf;
  size_t len;
} Text;

/* Keeps the most specific message on HDF5's error stack, on one line. The POSIX driver's
 * message spans lines and lists buffers and offsets; its errno text is what a user needs. */
static herr_t take_innermost(unsigned n, const H5E_error2_t *e, void *data) {
  Text *t = data;
  if (n != 0 || !e->desc) return 0;
  const char *errtext = strstr(e->desc, "error message = '"), *colon = strchr(e->desc, ':');
  if (errtext && colon) {
    errtext += strlen("error message = '");
    snprintf(t->buf, t->len, "%.*s: %.*s", (int)(colon - e->desc), e->desc,
             (int)strcspn(errtext, "'"), errtext);
  } else {
    snprintf(t->buf, t->len, "%s", e->desc);
  }
  for (char *c = t->buf; *c; c++)
    if (*c == '\n' || *c == '\r' || *c == '\t') *c = ' ';
  return 0;
}

/* The most specific message on HDF5's error stack (e.g. the write(2) failure), or "". */
static const char *h5_reason(char *buf, size_t len) {
  Text t = {buf, len};
  buf[0] = '\0';
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, take_innermost, &t);
  H5Eclear2(H5E_DEFAULT);
  return buf;
}

static void close_id(hid_t *id, herr_t (*close)(hid_t)) {
  if (*id >= 0) close(*id);
  *id = H5I_INVALID_HID;
}

/* ---- save ---- */

typedef struct {
  char err[768]; /* first failure, "what: why" */
  int failed;
} Writer;

static int wfail(Writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int wfail(Writer *w, const char *fmt, ...) {
  if (w->failed) return -1;
  w->failed = 1;
  char what[384], why[384];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  h5_reason(why, sizeof why);
  snprintf(w->err, sizeof w->err, "%s%s%s", what, why[0] ? ": " : "", why);
  return -1;
}

/* A fixed-length, NUL-terminated string type holding s. */
static hid_t string_type(const char *s) {
  hid_t t = H5Tcopy(H5T_C_S1);
  if (t >= 0 && (H5Tset_size(t, strlen(s) + 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0))
    close_id(&t, H5Tclose);
  return t;
}

/* The scalar attributes of the root besides format, format_version and method. */
_Static_assert(sizeof(int) == 4, "int fields are stored as int32");
#define SCALAR(field, kind) {#field, kind, offsetof(CheckpointState, field)}
static const struct {
  const char *name;
  Kind kind;
  size_t offset;
} kScalars[] = {
    SCALAR(step, K_I64),          SCALAR(total_steps, K_I64),       SCALAR(seed, K_U64),
    SCALAR(sample_rng_stream, K_U64), SCALAR(sample_rng_counter, K_U64), SCALAR(data_epoch, K_I64),
    SCALAR(data_cursor, K_I64),   SCALAR(probe_epoch, K_I64),       SCALAR(probe_cursor, K_I64),
    SCALAR(num_layers, K_I32),    SCALAR(lora_r, K_I32),            SCALAR(lora_alpha, K_F64),
    SCALAR(lora_target_mask, K_U32), SCALAR(layer_numel, K_I64),
};

static int write_attr(Writer *w, hid_t loc, const char *name, hid_t ftype, hid_t mtype,
                      const void *value) {
  hid_t space = H5Screate(H5S_SCALAR), attr = H5I_INVALID_HID;
  int rc = 0;
  if (space < 0 || (attr = H5Acreate2(loc, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
      H5Awrite(attr, mtype, value) < 0)
    rc = wfail(w, "writing attribute %s", name);
  close_id(&attr, H5Aclose);
  close_id(&space, H5Sclose);
  return rc;
}

static int write_attr_num(Writer *w, hid_t loc, const char *name, Kind k, const void *value) {
  return write_attr(w, loc, name, kind_file_type(k), kind_mem_type(k), value);
}

static int write_attr_str(Writer *w, hid_t loc, const char *name, const char *s) {
  hid_t t = string_type(s);
  if (t < 0) return wfail(w, "making the string type of attribute %s", name);
  int rc = write_attr(w, loc, name, t, t, s);
  H5Tclose(t);
  return rc;
}

/* One string as a [1] dataset: a chunked one, so that Fletcher-32 covers the text too. */
static int write_string_dataset(Writer *w, hid_t loc, const char *name, const char *s) {
  const hsize_t one = 1;
  hid_t t = string_type(s), space = H5Screate_simple(1, &one, NULL);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE), d = H5I_INVALID_HID;
  int rc = 0;
  if (t < 0 || space < 0 || dcpl < 0 || H5Pset_chunk(dcpl, 1, &one) < 0 ||
      H5Pset_fletcher32(dcpl) < 0 ||
      (d = H5Dcreate2(loc, name, t, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0 ||
      H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, s) < 0)
    rc = wfail(w, "writing dataset %s", name);
  close_id(&d, H5Dclose);
  close_id(&dcpl, H5Pclose);
  close_id(&space, H5Sclose);
  close_id(&t, H5Tclose);
  return rc;
}

/* A 1-D or 2-D array with a dtype attribute, chunked with Fletcher-32 checksums so that
 * damaged data is reported on load. 2-D arrays are chunked by row: one layer per chunk. */
static int write_array(Writer *w, hid_t loc, const char *name, Kind k, int rank,
                       const hsize_t *dims, const void *data) {
  hid_t space = H5Screate_simple(rank, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
  hid_t d = H5I_INVALID_HID;
  hsize_t numel = 1, chunk[2] = {1, 1};
  for (int i = 0; i < rank; i++) {
    numel *= dims[i];
    chunk[i] = i + 1 < rank ? 1 : dims[i] < MAX_CHUNK_ELEMS ? dims[i] : MAX_CHUNK_ELEMS;
  }
  int rc = 0;
  if (space < 0 || dcpl < 0)
    rc = wfail(w, "describing dataset %s", name);
  else if (numel > 0 && (H5Pset_chunk(dcpl, rank, chunk) < 0 || H5Pset_fletcher32(dcpl) < 0))
    rc = wfail(w, "setting the chunking of dataset %s", name);
  if (rc == 0) {
    d = H5Dcreate2(loc, name, kind_file_type(k), space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    /* An empty array (no active layers yet) has nothing to write. */
    if (d < 0 ||
        (numel > 0 && H5Dwrite(d, kind_mem_type(k), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0))
      rc = wfail(w, "writing dataset %s", name);
  }
  if (rc == 0) rc = write_attr_str(w, d, "dtype", kKinds[k].dtype);
  close_id(&d, H5Dclose);
  close_id(&dcpl, H5Pclose);
  close_id(&space, H5Sclose);
  return rc;
}

static int write_contents(Writer *w, hid_t f, const CheckpointState *s) {
  const int32_t version = CHECKPOINT_FORMAT_VERSION, L = s->num_layers;
  int rc = write_attr_str(w, f, "format", FORMAT_NAME);
  if (!rc) rc = write_attr_num(w, f, "format_version", K_I32, &version);
  for (size_t i = 0; !rc && i < sizeof kScalars / sizeof kScalars[0]; i++)
    rc = write_attr_num(w, f, kScalars[i].name, kScalars[i].kind,
                        (const char *)s + kScalars[i].offset);
  if (!rc) rc = write_attr_str(w, f, "method", s->method);
  if (!rc) rc = write_string_dataset(w, f, "config_yaml", s->config_yaml);
  hsize_t dl[1] = {(hsize_t)L}, da[1] = {(hsize_t)s->num_active};
  hsize_t dp[2] = {(hsize_t)L, (hsize_t)s->layer_numel};
  if (!rc) rc = write_array(w, f, "layer_probs", K_F64, 1, dl, s->layer_probs);
  if (!rc) rc = write_array(w, f, "active_layers", K_I32, 1, da, s->active_layers);
  if (rc) return rc;
  hid_t g = H5Gcreate2(f, "lora", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (g < 0) return wfail(w, "creating group /lora");
  rc = write_array(w, g, "params", K_F32, 2, dp, s->lora_params);
  if (!rc) rc = write_array(w, g, "m", K_F32, 2, dp, s->lora_m);
  if (!rc) rc = write_array(w, g, "v", K_F32, 2, dp, s->lora_v);
  hsize_t ds[2] = {(hsize_t)L, CHECKPOINT_LORA_TARGETS};
  if (!rc) rc = write_array(w, g, "steps", K_I64, 2, ds, s->lora_steps);
  H5Gclose(g);
  return rc;
}

static int write_file(Writer *w, const char *tmp, const CheckpointState *s) {
  /* The 1.10 formats checksum all metadata (superblock, object headers, and the chunk
   * index: a fixed array instead of 1.8's unchecked B-tree, in which a flipped key made a
   * chunk silently read back as fill zeros). Readers need HDF5 1.10 or later. */
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fapl < 0 || H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110) < 0) {
    close_id(&fapl, H5Pclose);
    return wfail(w, "setting up HDF5 file access");
  }
  hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  if (f < 0) wfail(w, "creating %s", tmp); /* before any other call clears the error stack */
  H5Pclose(fapl);
  if (f < 0) return -1;
  int rc = write_contents(w, f, s);
  /* Closing writes the remaining metadata, so it can fail like any write. */
  if (H5Fclose(f) < 0 && !rc) rc = wfail(w, "closing %s", tmp);
  return rc;
}

static int errno_fail(Writer *w, const char *what, const char *name) {
  int e = errno;
  H5Eclear2(H5E_DEFAULT);
  w->failed = 1;
  snprintf(w->err, sizeof w->err, "%s %s: %s", what, name, strerror(e));
  return -1;
}

static int sync_path(Writer *w, const char *name, int flags) {
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
  Writer w = {.failed = 0};
  Quiet q = quiet_begin();
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
  quiet_end(q);
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

typedef struct {
  const char *path;
  char *err;
  size_t errlen;
  hsize_t file_size; /* no array may claim more bytes than this */
} Reader;

static int rfail(Reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rfail(Reader *r, const char *fmt, ...) {
  char what[512], why[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  /* Every HDF5 call clears the stack first, so it holds something only when the call just
   * before this one failed: then its reason (e.g. a checksum mismatch) belongs here. */
  h5_reason(why, sizeof why);
  snprintf(r->err, r->errlen, "checkpoint %s: %s%s%s", r->path, what, why[0] ? ": " : "", why);
  return -1;
}

static void describe_type(hid_t t, char *buf, size_t len) {
  H5T_class_t c = H5Tget_class(t);
  size_t bits = H5Tget_size(t) * 8;
  if (c == H5T_INTEGER)
    snprintf(buf, len, "%sint%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", bits);
  else if (c == H5T_FLOAT)
    snprintf(buf, len, "float%zu", bits);
  else if (c == H5T_STRING)
    snprintf(buf, len, "%s string", H5Tis_variable_str(t) > 0 ? "variable-length" : "fixed");
  else
    snprintf(buf, len, "HDF5 type class %d", (int)c);
}

static int type_is(hid_t t, Kind k) {
  return H5Tget_class(t) == kKinds[k].cls && H5Tget_size(t) == kKinds[k].size &&
         (kKinds[k].sign < 0 || (int)H5Tget_sign(t) == kKinds[k].sign);
}

static const char *kind_name(Kind k) {
  static const char *names[] = {"int32", "int64", "uint32", "uint64", "float32", "float64"};
  return names[k];
}

/* Opens attribute `name` of loc and checks it holds exactly one value. `owner` names the
 * dataset it hangs on for messages ("" for the file's root). */
static hid_t open_attr(Reader *r, hid_t loc, const char *owner, const char *name) {
  const char *of = owner[0] ? " of dataset " : "";
  htri_t there = H5Aexists(loc, name);
  if (there <= 0) {
    rfail(r, "%s attribute %s%s%s", there < 0 ? "cannot look up" : "missing", name, of, owner);
    return H5I_INVALID_HID;
  }
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  if (a < 0) {
    rfail(r, "cannot open attribute %s%s%s", name, of, owner);
    return a;
  }
  hid_t space = H5Aget_space(a);
  if (space < 0 || H5Sget_simple_extent_npoints(space) != 1) {
    rfail(r, "attribute %s%s%s is not a single value", name, of, owner);
    close_id(&a, H5Aclose);
  }
  close_id(&space, H5Sclose);
  return a;
}

static int read_attr_num(Reader *r, hid_t loc, const char *name, Kind k, void *out) {
  hid_t a = open_attr(r, loc, "", name);
  if (a < 0) return -1;
  hid_t t = H5Aget_type(a);
  int rc = 0;
  char got[64] = "unknown";
  if (t < 0 || !type_is(t, k)) {
    if (t >= 0) describe_type(t, got, sizeof got);
    rc = rfail(r, "attribute %s has type %s, expected %s", name, got, kind_name(k));
  } else if (H5Aread(a, kind_mem_type(k), out) < 0) {
    rc = rfail(r, "cannot read attribute %s", name);
  }
  close_id(&t, H5Tclose);
  H5Aclose(a);
  return rc;
}

/* Reads a fixed-length string of file type t from attribute a or dataset d (one is < 0). */
static int read_string_from(Reader *r, hid_t a, hid_t d, const char *what, char **out) {
  hid_t t = a >= 0 ? H5Aget_type(a) : H5Dget_type(d), mt = H5I_INVALID_HID;
  int rc = 0;
  char got[64] = "unknown";
  size_t size = t >= 0 ? H5Tget_size(t) : 0;
  if (t < 0 || H5Tget_class(t) != H5T_STRING || H5Tis_variable_str(t) != 0) {
    if (t >= 0) describe_type(t, got, sizeof got);
    rc = rfail(r, "%s has type %s, expected a fixed-length string", what, got);
  } else if (size == 0 || size > r->file_size) {
    rc = rfail(r, "%s claims %zu bytes, the file has %llu", what, size,
               (unsigned long long)r->file_size);
  } else if ((mt = H5Tcopy(H5T_C_S1)) < 0 || H5Tset_size(mt, size) < 0) {
    rc = rfail(r, "cannot set up reading %s", what);
  } else {
    char *buf = tv_malloc(size + 1);
    if ((a >= 0 ? H5Aread(a, mt, buf) : H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf)) < 0) {
      free(buf);
      rc = rfail(r, "cannot read %s", what);
    } else {
      buf[size] = '\0';
      *out = buf;
    }
  }
  close_id(&mt, H5Tclose);
  close_id(&t, H5Tclose);
  return rc;
}

static int read_attr_str(Reader *r, hid_t loc, const char *owner, const char *name, char **out) {
  hid_t a = open_attr(r, loc, owner, name);
  if (a < 0) return -1;
  char label[160];
  snprintf(label, sizeof label, "attribute %s%s%s", name, owner[0] ? " of dataset " : "", owner);
  int rc = read_string_from(r, a, H5I_INVALID_HID, label, out);
  H5Aclose(a);
  return rc;
}

static hid_t open_dataset(Reader *r, hid_t loc, const char *full, const char *name) {
  htri_t there = H5Lexists(loc, name, H5P_DEFAULT);
  if (there <= 0) {
    rfail(r, "%s dataset %s", there < 0 ? "cannot look up" : "missing", full);
    return H5I_INVALID_HID;
  }
  hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
  if (d < 0) rfail(r, "cannot open %s as a dataset", full);
  return d;
}

static int read_string_dataset(Reader *r, hid_t loc, const char *full, const char *name,
                               char **out) {
  hid_t d = open_dataset(r, loc, full, name);
  if (d < 0) return -1;
  char label[160];
  snprintf(label, sizeof label, "dataset %s", full);
  hid_t space = H5Dget_space(d);
  int rc = space < 0 || H5Sget_simple_extent_npoints(space) != 1
               ? rfail(r, "dataset %s does not hold exactly one string", full)
               : read_string_from(r, H5I_INVALID_HID, d, label, out);
  close_id(&space, H5Sclose);
  H5Dclose(d);
  return rc;
}

#define ANY_LEN ((hsize_t)-1)

/* "[4, 100]"; an ANY_LEN extent prints as "n". */
static void format_dims(char *buf, size_t len, int rank, const hsize_t *dims) {
  size_t n = (size_t)snprintf(buf, len, "[");
  for (int i = 0; i < rank && n < len; i++) {
    if (dims[i] == ANY_LEN)
      n += (size_t)snprintf(buf + n, len - n, "%sn", i ? ", " : "");
    else
      n += (size_t)snprintf(buf + n, len - n, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
  }
  if (n < len) snprintf(buf + n, len - n, "]");
}

/* Reads dataset `name` of kind k and shape dims (ANY_LEN = any extent, filled in) into a
 * new buffer *out. Checks type, shape, the dtype attribute and that the claimed size fits
 * the file before allocating, so a corrupt header cannot ask for absurd memory. */
static int read_array(Reader *r, hid_t loc, const char *full, const char *name, Kind k, int rank,
                      hsize_t *dims, void **out) {
  hid_t d = open_dataset(r, loc, full, name);
  if (d < 0) return -1;
  hid_t t = H5Dget_type(d), space = H5Dget_space(d);
  int rc = 0;
  char got[64] = "unknown", want[64];
  hsize_t have[H5S_MAX_RANK];
  int have_rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
  if (t < 0 || !type_is(t, k)) {
    if (t >= 0) describe_type(t, got, sizeof got);
    rc = rfail(r, "dataset %s has type %s, expected %s", full, got, kind_name(k));
  } else if (have_rank < 0 || H5Sget_simple_extent_dims(space, have, NULL) != have_rank) {
    rc = rfail(r, "cannot read the shape of dataset %s", full);
  } else {
    int same = have_rank == rank;
    for (int i = 0; same && i < rank; i++) same = dims[i] == ANY_LEN || dims[i] == have[i];
    if (!same) {
      format_dims(got, sizeof got, have_rank, have);
      format_dims(want, sizeof want, rank, dims);
      rc = rfail(r, "dataset %s has shape %s, expected %s", full, got, want);
    }
  }
  char *dtype = NULL;
  if (rc == 0) {
    rc = read_attr_str(r, d, full, "dtype", &dtype);
    if (rc == 0 && strcmp(dtype, kKinds[k].dtype) != 0)
      rc = rfail(r, "dataset %s has dtype '%s', expected '%s'", full, dtype, kKinds[k].dtype);
  }
  free(dtype);
  if (rc == 0) {
    hsize_t numel = 1;
    for (int i = 0; i < rank; i++) numel *= (dims[i] = have[i]);
    /* A corrupt extent could make numel overflow; each factor is checked against the file. */
    int fits = 1;
    for (int i = 0; i < rank; i++) fits = fits && have[i] <= r->file_size;
    if (!fits || numel > r->file_size / kKinds[k].size) {
      rc = rfail(r, "dataset %s claims more bytes than the file holds (%llu)", full,
                 (unsigned long long)r->file_size);
    } else {
      void *buf = tv_malloc((size_t)numel * kKinds[k].size);
      if (numel > 0 && H5Dread(d, kind_mem_type(k), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        free(buf);
        rc = rfail(r, "cannot read dataset %s", full);
      } else {
        *out = buf;
      }
    }
  }
  close_id(&space, H5Sclose);
  close_id(&t, H5Tclose);
  H5Dclose(d);
  return rc;
}

static int read_scalars(Reader *r, hid_t f, CheckpointState *s) {
  int32_t version = 0;
  char *format = NULL;
  int rc = read_attr_str(r, f, "", "format", &format);
  if (!rc && strcmp(format, FORMAT_NAME) != 0)
    rc = rfail(r, "not a tvaccine checkpoint (attribute format is '%s')", format);
  free(format);
  if (!rc) rc = read_attr_num(r, f, "format_version", K_I32, &version);
  if (!rc && version != CHECKPOINT_FORMAT_VERSION)
    rc = rfail(r, "format_version %d, this build reads version %d", (int)version,
               CHECKPOINT_FORMAT_VERSION);
  for (size_t i = 0; !rc && i < sizeof kScalars / sizeof kScalars[0]; i++)
    rc = read_attr_num(r, f, kScalars[i].name, kScalars[i].kind, (char *)s + kScalars[i].offset);
  if (!rc) rc = read_attr_str(r, f, "", "method", &s->method);
  const int L = s->num_layers;
  /* The array shapes below are derived from these two, so they must be sane first. */
  if (!rc && (L < 1 || L > MAX_LAYERS))
    rc = rfail(r, "attribute num_layers = %d outside [1, %d]", (int)L, MAX_LAYERS);
  if (!rc && (s->layer_numel < 1 || s->layer_numel > (INT64_MAX / 8) / L))
    rc = rfail(r, "attribute layer_numel = %" PRId64 " is out of range", s->layer_numel);
  return rc;
}

static int read_contents(Reader *r, hid_t f, CheckpointState *s) {
  int rc = read_scalars(r, f, s);
  if (rc) return rc;
  hsize_t dl[1] = {(hsize_t)s->num_layers}, da[1] = {ANY_LEN};
  hsize_t dp[2] = {(hsize_t)s->num_layers, (hsize_t)s->layer_numel};
  rc = read_string_dataset(r, f, "/config_yaml", "config_yaml", &s->config_yaml);
  if (!rc)
    rc = read_array(r, f, "/layer_probs", "layer_probs", K_F64, 1, dl, (void **)&s->layer_probs);
  if (!rc) rc = read_array(r, f, "/active_layers", "active_layers", K_I32, 1, da,
                           (void **)&s->active_layers);
  if (rc) return rc;
  if (da[0] > (hsize_t)s->num_layers)
    return rfail(r, "dataset /active_layers has %llu entries, more than num_layers %d",
                 (unsigned long long)da[0], s->num_layers);
  s->num_active = (int)da[0];
  htri_t there = H5Lexists(f, "lora", H5P_DEFAULT);
  if (there <= 0) return rfail(r, "%s group /lora", there < 0 ? "cannot look up" : "missing");
  hid_t g = H5Gopen2(f, "lora", H5P_DEFAULT);
  if (g < 0) return rfail(r, "cannot open /lora as a group");
  rc = read_array(r, g, "/lora/params", "params", K_F32, 2, dp, (void **)&s->lora_params);
  if (!rc) rc = read_array(r, g, "/lora/m", "m", K_F32, 2, dp, (void **)&s->lora_m);
  if (!rc) rc = read_array(r, g, "/lora/v", "v", K_F32, 2, dp, (void **)&s->lora_v);
  hsize_t ds[2] = {(hsize_t)s->num_layers, CHECKPOINT_LORA_TARGETS};
  if (!rc) rc = read_array(r, g, "/lora/steps", "steps", K_I64, 2, ds, (void **)&s->lora_steps);
  H5Gclose(g);
  if (rc) return rc;
  char why[256];
  const char *bad = checkpoint_state_check(s, why, sizeof why);
  return bad ? rfail(r, "inconsistent contents: %s", bad) : 0;
}

const char *checkpoint_load(const char *path, CheckpointState *out, char *err, size_t errlen) {
  Reader r = {path, err, errlen, 0};
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
  Quiet q = quiet_begin();
  int rc = 0;
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), f = H5I_INVALID_HID;
  htri_t is_hdf5;
  /* Strong close: whatever an error path left open goes with the file, so no handle leaks. */
  if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
    rc = rfail(&r, "cannot set up HDF5 file access");
  } else if ((is_hdf5 = H5Fis_hdf5(path)) <= 0) {
    rc = rfail(&r, is_hdf5 < 0 ? "cannot read the file" : "not an HDF5 file (no HDF5 signature)");
  } else if ((f = H5Fopen(path, H5F_ACC_RDONLY, fapl)) < 0) {
    rc = rfail(&r, "cannot open as HDF5 (truncated or damaged?)");
  } else {
    rc = read_contents(&r, f, &s);
  }
  close_id(&f, H5Fclose);
  close_id(&fapl, H5Pclose);
  quiet_end(q);
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
