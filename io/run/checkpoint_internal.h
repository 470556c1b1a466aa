/* Shared by io/checkpoint.c and io/checkpoint_h5.c only: typed HDF5 attribute and dataset
 * writes and checked reads, each failure kept as one line instead of HDF5's error stack. */
#ifndef TV_CHECKPOINT_INTERNAL_H
#define TV_CHECKPOINT_INTERNAL_H

#include <hdf5.h>
#include <stddef.h>

/* The numeric kinds we store: file type little-endian, memory type native. Each array
 * dataset carries its kind's name ("I32", "F64", ...) as the string attribute dtype. */
typedef enum { CK_I32, CK_I64, CK_U32, CK_U64, CK_F32, CK_F64 } CkKind;

/* HDF5 prints its whole error stack to stderr by default; we report one line instead.
 * ck_quiet_begin must precede every other HDF5 call of a save or load (see there). */
typedef struct {
  H5E_auto2_t func;
  void *data;
} CkQuiet;

CkQuiet ck_quiet_begin(void);
void ck_quiet_end(CkQuiet q);

/* Closes *id when it is open and marks it closed. */
void ck_close_id(hid_t *id, herr_t (*close)(hid_t));

/* ---- save: every writer returns 0, or -1 after recording the first failure ---- */

typedef struct {
  char err[768]; /* first failure, "what: why" */
  int failed;
} CkWriter;

/* Records "what: HDF5's reason" unless a failure is recorded already; returns -1. */
int ck_wfail(CkWriter *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

int ck_write_attr_num(CkWriter *w, hid_t loc, const char *name, CkKind k, const void *value);
int ck_write_attr_str(CkWriter *w, hid_t loc, const char *name, const char *s);
/* One string as a [1] dataset: a chunked one, so that Fletcher-32 covers the text too. */
int ck_write_string_dataset(CkWriter *w, hid_t loc, const char *name, const char *s);
/* A 1-D or 2-D array with a dtype attribute, chunked with Fletcher-32 checksums so that
 * damaged data is reported on load. 2-D arrays are chunked by row: one layer per chunk. */
int ck_write_array(CkWriter *w, hid_t loc, const char *name, CkKind k, int rank,
                   const hsize_t *dims, const void *data);

/* ---- load: every reader returns 0, or -1 with "checkpoint PATH: what: why" in err ---- */

typedef struct {
  const char *path;
  char *err;
  size_t errlen;
  hsize_t file_size; /* no array may claim more bytes than this */
} CkReader;

int ck_rfail(CkReader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Attribute `name` of loc: one value of kind k into *out. */
int ck_read_attr_num(CkReader *r, hid_t loc, const char *name, CkKind k, void *out);
/* A fixed-length string attribute into a new malloc'd *out. `owner` names the dataset it
 * hangs on for messages ("" for the file's root). */
int ck_read_attr_str(CkReader *r, hid_t loc, const char *owner, const char *name, char **out);
/* Dataset `name` of loc (`full` is its path, for messages): exactly one fixed-length string. */
int ck_read_string_dataset(CkReader *r, hid_t loc, const char *full, const char *name,
                           char **out);

#define CK_ANY_LEN ((hsize_t)-1)

/* Reads dataset `name` of kind k and shape dims (CK_ANY_LEN = any extent, filled in) into
 * a new buffer *out. Checks type, shape, the dtype attribute and that the claimed size fits
 * the file before allocating, so a corrupt header cannot ask for absurd memory. */
int ck_read_array(CkReader *r, hid_t loc, const char *full, const char *name, CkKind k, int rank,
                  hsize_t *dims, void **out);

#endif
