/* safetensors files (SPEC section 9): parse and validate a header, memory-map a file and
 * read tensors converted to float32, and write files (header padded to 8 bytes, written to
 * a temporary name and renamed).
 * Parsing never exits: it returns a message naming the file and byte offset / field, so the
 * same code serves the fuzzer; the *_open wrappers turn a message into one tv_die line. */
#ifndef TV_SAFETENSORS_H
#define TV_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32 = 0, ST_F16 = 1, ST_BF16 = 2 } StDtype;

const char *st_dtype_name(StDtype d); /* "F32", "F16", "BF16" */
size_t st_dtype_size(StDtype d);

#define ST_MAX_DIMS 8

typedef struct {
  char *name;
  StDtype dtype;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  uint64_t numel;
  uint64_t begin, end; /* byte offsets relative to the data section */
} StTensor;

typedef struct SafeTensors SafeTensors;

/* Parses a whole file image held in memory (not copied; must outlive the result).
 * On failure returns NULL and writes "what is wrong, at byte offset N / tensor 'x'" to err. */
SafeTensors *safetensors_parse(const uint8_t *bytes, size_t size, const char *label, char *err,
                               size_t errlen);
/* mmaps path read-only and parses it; any problem is one tv_die line naming the file. */
SafeTensors *safetensors_open(const char *path);
void safetensors_close(SafeTensors *st);

int safetensors_count(const SafeTensors *st);
const StTensor *safetensors_tensor(const SafeTensors *st, int i); /* in file order */
const StTensor *safetensors_find(const SafeTensors *st, const char *name); /* NULL if absent */
const char *safetensors_metadata(const SafeTensors *st, const char *key); /* NULL if absent */
const char *safetensors_path(const SafeTensors *st);

/* Raw bytes of a tensor (inside the mapping) and a float32 copy of it. */
const void *safetensors_data(const SafeTensors *st, const StTensor *t);
void safetensors_read_f32(const SafeTensors *st, const StTensor *t, float *dst);

/* Index of the first NaN or inf in x[0, n), or -1 when every value is finite. */
int64_t st_first_nonfinite(const float *x, size_t n);

/* float <-> half / bfloat16 (round to nearest even; NaN and inf kept). */
uint16_t st_f32_to_f16(float x);
float st_f16_to_f32(uint16_t h);
uint16_t st_f32_to_bf16(float x);
float st_bf16_to_f32(uint16_t h);

/* Writer: tensors are added in order from float32 host data, converted to dtype. */
typedef struct StWriter StWriter;
StWriter *st_writer_create(const char *path);
void st_writer_metadata(StWriter *w, const char *key, const char *value);
void st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                   const float *data);
/* st_writer_add refuses data holding NaN or inf, or values that do not fit F16 / BF16: one
 * tv_die line naming the file, tensor and element; nothing is written then. Only a test of
 * the format itself may lift that rule: */
void st_writer_allow_nonfinite(StWriter *w);
/* Writes path.tmp then renames to path; one tv_die line on any I/O failure. */
void st_writer_finish(StWriter *w);

#endif
