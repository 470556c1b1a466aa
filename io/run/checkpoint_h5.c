/* The HDF5 plumbing of checkpoints (checkpoint_internal.h): typed attributes and chunked,
 * checksummed arrays, and readers that check type, shape and size before they allocate. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "checkpoint_internal.h"

/* Chunk rows of the LoRA arrays; caps one chunk at 256 MiB (HDF5's limit is 4 GiB). */
#define MAX_CHUNK_ELEMS ((hsize_t)1 << 26)

static const struct {
  H5T_class_t cls;
  size_t size;
  int sign; /* H5T_sign_t for integers, -1 for floats */
  const char *dtype;
} kKinds[] = {
    [CK_I32] = {H5T_INTEGER, 4, H5T_SGN_2, "I32"},
    [CK_I64] = {H5T_INTEGER, 8, H5T_SGN_2, "I64"},
    [CK_U32] = {H5T_INTEGER, 4, H5T_SGN_NONE, "U32"},
    [CK_U64] = {H5T_INTEGER, 8, H5T_SGN_NONE, "U64"},
    [CK_F32] = {H5T_FLOAT, 4, -1, "F32"},
    [CK_F64] = {H5T_FLOAT, 8, -1, "F64"},
};

/* Type ids are run-time values in HDF5 (the library opens on first use), hence functions. */
static hid_t kind_file_type(CkKind k) {
  switch (k) {
    case CK_I32: return H5T_STD_I32LE;
    case CK_I64: return H5T_STD_I64LE;
    case CK_U32: return H5T_STD_U32LE;
    case CK_U64: return H5T_STD_U64LE;
    case CK_F32: return H5T_IEEE_F32LE;
    case CK_F64: return H5T_IEEE_F64LE;
  }
  return H5I_INVALID_HID;
}

static hid_t kind_mem_type(CkKind k) {
  switch (k) {
    case CK_I32: return H5T_NATIVE_INT32;
    case CK_I64: return H5T_NATIVE_INT64;
    case CK_U32: return H5T_NATIVE_UINT32;
    case CK_U64: return H5T_NATIVE_UINT64;
    case CK_F32: return H5T_NATIVE_FLOAT;
    case CK_F64: return H5T_NATIVE_DOUBLE;
  }
  return H5I_INVALID_HID;
}

CkQuiet ck_quiet_begin(void) {
  /* After a failed write HDF5 keeps the broken file open, and its exit handler would retry
   * the flush forever ("infinite loop closing library") and crash inside tv_die's exit.
   * We close every object ourselves, so the handler is not needed. It is installed when
   * the library starts, so this must precede every other HDF5 call (no effect later). */
  H5dont_atexit();
  CkQuiet q = {.func = NULL, .data = NULL};
  H5Eget_auto2(H5E_DEFAULT, &q.func, &q.data);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  return q;
}

void ck_quiet_end(CkQuiet q) {
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
  Text t = {.buf = buf, .len = len};
  buf[0] = '\0';
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, take_innermost, &t);
  H5Eclear2(H5E_DEFAULT);
  return buf;
}

void ck_close_id(hid_t *id, herr_t (*close)(hid_t)) {
  if (*id >= 0) close(*id);
  *id = H5I_INVALID_HID;
}

/* ---- save ---- */

int ck_wfail(CkWriter *w, const char *fmt, ...) {
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
    ck_close_id(&t, H5Tclose);
  return t;
}

static int write_attr(CkWriter *w, hid_t loc, const char *name, hid_t ftype, hid_t mtype,
                      const void *value) {
  hid_t space = H5Screate(H5S_SCALAR), attr = H5I_INVALID_HID;
  int rc = 0;
  if (space < 0 || (attr = H5Acreate2(loc, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
      H5Awrite(attr, mtype, value) < 0)
    rc = ck_wfail(w, "writing attribute %s", name);
  ck_close_id(&attr, H5Aclose);
  ck_close_id(&space, H5Sclose);
  return rc;
}

int ck_write_attr_num(CkWriter *w, hid_t loc, const char *name, CkKind k, const void *value) {
  return write_attr(w, loc, name, kind_file_type(k), kind_mem_type(k), value);
}

int ck_write_attr_str(CkWriter *w, hid_t loc, const char *name, const char *s) {
  hid_t t = string_type(s);
  if (t < 0) return ck_wfail(w, "making the string type of attribute %s", name);
  int rc = write_attr(w, loc, name, t, t, s);
  H5Tclose(t);
  return rc;
}

int ck_write_string_dataset(CkWriter *w, hid_t loc, const char *name, const char *s) {
  const hsize_t one = 1;
  hid_t t = string_type(s), space = H5Screate_simple(1, &one, NULL);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE), d = H5I_INVALID_HID;
  int rc = 0;
  if (t < 0 || space < 0 || dcpl < 0 || H5Pset_chunk(dcpl, 1, &one) < 0 ||
      H5Pset_fletcher32(dcpl) < 0 ||
      (d = H5Dcreate2(loc, name, t, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0 ||
      H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, s) < 0)
    rc = ck_wfail(w, "writing dataset %s", name);
  ck_close_id(&d, H5Dclose);
  ck_close_id(&dcpl, H5Pclose);
  ck_close_id(&space, H5Sclose);
  ck_close_id(&t, H5Tclose);
  return rc;
}

int ck_write_array(CkWriter *w, hid_t loc, const char *name, CkKind k, int rank,
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
    rc = ck_wfail(w, "describing dataset %s", name);
  else if (numel > 0 && (H5Pset_chunk(dcpl, rank, chunk) < 0 || H5Pset_fletcher32(dcpl) < 0))
    rc = ck_wfail(w, "setting the chunking of dataset %s", name);
  if (rc == 0) {
    d = H5Dcreate2(loc, name, kind_file_type(k), space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    /* An empty array (no active layers yet) has nothing to write. */
    if (d < 0 ||
        (numel > 0 && H5Dwrite(d, kind_mem_type(k), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0))
      rc = ck_wfail(w, "writing dataset %s", name);
  }
  if (rc == 0) rc = ck_write_attr_str(w, d, "dtype", kKinds[k].dtype);
  ck_close_id(&d, H5Dclose);
  ck_close_id(&dcpl, H5Pclose);
  ck_close_id(&space, H5Sclose);
  return rc;
}

/* ---- load ---- */

int ck_rfail(CkReader *r, const char *fmt, ...) {
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

static int type_is(hid_t t, CkKind k) {
  return H5Tget_class(t) == kKinds[k].cls && H5Tget_size(t) == kKinds[k].size &&
         (kKinds[k].sign < 0 || (int)H5Tget_sign(t) == kKinds[k].sign);
}

static const char *kind_name(CkKind k) {
  static const char *names[] = {"int32", "int64", "uint32", "uint64", "float32", "float64"};
  return names[k];
}

/* Opens attribute `name` of loc and checks it holds exactly one value. `owner` names the
 * dataset it hangs on for messages ("" for the file's root). */
static hid_t open_attr(CkReader *r, hid_t loc, const char *owner, const char *name) {
  const char *of = owner[0] ? " of dataset " : "";
  htri_t there = H5Aexists(loc, name);
  if (there <= 0) {
    ck_rfail(r, "%s attribute %s%s%s", there < 0 ? "cannot look up" : "missing", name, of, owner);
    return H5I_INVALID_HID;
  }
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  if (a < 0) {
    ck_rfail(r, "cannot open attribute %s%s%s", name, of, owner);
    return a;
  }
  hid_t space = H5Aget_space(a);
  if (space < 0 || H5Sget_simple_extent_npoints(space) != 1) {
    ck_rfail(r, "attribute %s%s%s is not a single value", name, of, owner);
    ck_close_id(&a, H5Aclose);
  }
  ck_close_id(&space, H5Sclose);
  return a;
}

int ck_read_attr_num(CkReader *r, hid_t loc, const char *name, CkKind k, void *out) {
  hid_t a = open_attr(r, loc, "", name);
  if (a < 0) return -1;
  hid_t t = H5Aget_type(a);
  int rc = 0;
  char got[64] = "unknown";
  if (t < 0 || !type_is(t, k)) {
    if (t >= 0) describe_type(t, got, sizeof got);
    rc = ck_rfail(r, "attribute %s has type %s, expected %s", name, got, kind_name(k));
  } else if (H5Aread(a, kind_mem_type(k), out) < 0) {
    rc = ck_rfail(r, "cannot read attribute %s", name);
  }
  ck_close_id(&t, H5Tclose);
  H5Aclose(a);
  return rc;
}

/* Reads a fixed-length string of file type t from attribute a or dataset d (one is < 0). */
static int read_string_from(CkReader *r, hid_t a, hid_t d, const char *what, char **out) {
  hid_t t = a >= 0 ? H5Aget_type(a) : H5Dget_type(d), mt = H5I_INVALID_HID;
  int rc = 0;
  char got[64] = "unknown";
  size_t size = t >= 0 ? H5Tget_size(t) : 0;
  if (t < 0 || H5Tget_class(t) != H5T_STRING || H5Tis_variable_str(t) != 0) {
    if (t >= 0) describe_type(t, got, sizeof got);
    rc = ck_rfail(r, "%s has type %s, expected a fixed-length string", what, got);
  } else if (size == 0 || size > r->file_size) {
    rc = ck_rfail(r, "%s claims %zu bytes, the file has %llu", what, size,
                  (unsigned long long)r->file_size);
  } else if ((mt = H5Tcopy(H5T_C_S1)) < 0 || H5Tset_size(mt, size) < 0) {
    rc = ck_rfail(r, "cannot set up reading %s", what);
  } else {
    char *buf = tv_malloc(size + 1);
    if ((a >= 0 ? H5Aread(a, mt, buf) : H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf)) < 0) {
      free(buf);
      rc = ck_rfail(r, "cannot read %s", what);
    } else {
      buf[size] = '\0';
      *out = buf;
    }
  }
  ck_close_id(&mt, H5Tclose);
  ck_close_id(&t, H5Tclose);
  return rc;
}

int ck_read_attr_str(CkReader *r, hid_t loc, const char *owner, const char *name, char **out) {
  hid_t a = open_attr(r, loc, owner, name);
  if (a < 0) return -1;
  char label[160];
  snprintf(label, sizeof label, "attribute %s%s%s", name, owner[0] ? " of dataset " : "", owner);
  int rc = read_string_from(r, a, H5I_INVALID_HID, label, out);
  H5Aclose(a);
  return rc;
}

static hid_t open_dataset(CkReader *r, hid_t loc, const char *full, const char *name) {
  htri_t there = H5Lexists(loc, name, H5P_DEFAULT);
  if (there <= 0) {
    ck_rfail(r, "%s dataset %s", there < 0 ? "cannot look up" : "missing", full);
    return H5I_INVALID_HID;
  }
  hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
  if (d < 0) ck_rfail(r, "cannot open %s as a dataset", full);
  return d;
}

int ck_read_string_dataset(CkReader *r, hid_t loc, const char *full, const char *name,
                           char **out) {
  hid_t d = open_dataset(r, loc, full, name);
  if (d < 0) return -1;
  char label[160];
  snprintf(label, sizeof label, "dataset %s", full);
  hid_t space = H5Dget_space(d);
  int rc = space < 0 || H5Sget_simple_extent_npoints(space) != 1
               ? ck_rfail(r, "dataset %s does not hold exactly one string", full)
               : read_string_from(r, H5I_INVALID_HID, d, label, out);
  ck_close_id(&space, H5Sclose);
  H5Dclose(d);
  return rc;
}

/* "[4, 100]"; a CK_ANY_LEN extent prints as "n". */
static void format_dims(char *buf, size_t len, int rank, const hsize_t *dims) {
  size_t n = (size_t)snprintf(buf, len, "[");
  for (int i = 0; i < rank && n < len; i++) {
    if (dims[i] == CK_ANY_LEN)
      n += (size_t)snprintf(buf + n, len - n, "%sn", i ? ", " : "");
    else
      n += (size_t)snprintf(buf + n, len - n, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
  }
  if (n < len) snprintf(buf + n, len - n, "]");
}

int ck_read_array(CkReader *r, hid_t loc, const char *full, const char *name, CkKind k, int rank,
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
    rc = ck_rfail(r, "dataset %s has type %s, expected %s", full, got, kind_name(k));
  } else if (have_rank < 0 || H5Sget_simple_extent_dims(space, have, NULL) != have_rank) {
    rc = ck_rfail(r, "cannot read the shape of dataset %s", full);
  } else {
    int same = have_rank == rank;
    for (int i = 0; same && i < rank; i++) same = dims[i] == CK_ANY_LEN || dims[i] == have[i];
    if (!same) {
      format_dims(got, sizeof got, have_rank, have);
      format_dims(want, sizeof want, rank, dims);
      rc = ck_rfail(r, "dataset %s has shape %s, expected %s", full, got, want);
    }
  }
  char *dtype = NULL;
  if (rc == 0) {
    rc = ck_read_attr_str(r, d, full, "dtype", &dtype);
    if (rc == 0 && strcmp(dtype, kKinds[k].dtype) != 0)
      rc = ck_rfail(r, "dataset %s has dtype '%s', expected '%s'", full, dtype, kKinds[k].dtype);
  }
  free(dtype);
  if (rc == 0) {
    hsize_t numel = 1;
    for (int i = 0; i < rank; i++) numel *= (dims[i] = have[i]);
    /* A corrupt extent could make numel overflow; each factor is checked against the file. */
    int fits = 1;
    for (int i = 0; i < rank; i++) fits = fits && have[i] <= r->file_size;
    if (!fits || numel > r->file_size / kKinds[k].size) {
      rc = ck_rfail(r, "dataset %s claims more bytes than the file holds (%llu)", full,
                    (unsigned long long)r->file_size);
    } else {
      void *buf = tv_malloc((size_t)numel * kKinds[k].size);
      if (numel > 0 && H5Dread(d, kind_mem_type(k), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        free(buf);
        rc = ck_rfail(r, "cannot read dataset %s", full);
      } else {
        *out = buf;
      }
    }
  }
  ck_close_id(&space, H5Sclose);
  ck_close_id(&t, H5Tclose);
  H5Dclose(d);
  return rc;
}
