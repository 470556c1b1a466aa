/* io/checkpoint: every kind of bad file (missing, truncated, random bytes, flipped bits,
 * a missing or wrongly typed, shaped or valued attribute or dataset) ends in one clear line
 * naming the file and what is wrong, with nothing printed by HDF5 and no handle left open. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "checkpoint_test_util.h"
#include "test_util.h"

static void copy_prefix(const char *from, const char *to, long bytes) {
  FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
  char buf[65536];
  size_t n;
  while (bytes != 0 &&
         (n = fread(buf, 1, bytes < 0 || bytes > (long)sizeof buf ? sizeof buf : (size_t)bytes,
                    in)) > 0) {
    fwrite(buf, 1, n, out);
    if (bytes > 0) bytes -= (long)n;
  }
  fclose(in);
  fclose(out);
}
static void copy_file(const char *from, const char *to) { copy_prefix(from, to, -1); }

/* ---- HDF5 edits that make a valid file subtly wrong ---- */

static void put_attr(hid_t loc, const char *name, hid_t type, int rank, hsize_t n, const void *v) {
  if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
  hid_t sp = rank ? H5Screate_simple(1, &n, NULL) : H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, type, v);
  H5Aclose(a);
  H5Sclose(sp);
}

static void put_str_attr(hid_t loc, const char *name, const char *v) {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, strlen(v) + 1);
  put_attr(loc, name, t, 0, 1, v);
  H5Tclose(t);
}

/* Replaces dataset `name` by one of the given type and shape (zero-filled), with a dtype. */
static void put_dataset(hid_t f, const char *name, hid_t type, int rank, const hsize_t *dims,
                        const char *dtype) {
  if (H5Lexists(f, name, H5P_DEFAULT) > 0) H5Ldelete(f, name, H5P_DEFAULT);
  hid_t sp = H5Screate_simple(rank, dims, NULL);
  hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  size_t n = H5Tget_size(type);
  for (int i = 0; i < rank; i++) n *= dims[i];
  void *zeros = calloc(n ? n : 1, 1);
  if (n) H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros);
  free(zeros);
  if (dtype) put_str_attr(d, "dtype", dtype);
  H5Dclose(d);
  H5Sclose(sp);
}

typedef void (*EditFn)(hid_t f, const CheckpointState *s);

static void edited_copy(const char *good, const char *bad, EditFn edit, const CheckpointState *s) {
  copy_file(good, bad);
  hid_t f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
  EXPECT(f >= 0, "cannot open %s for editing", bad);
  edit(f, s);
  H5Fclose(f);
}

static void e_probs_len(hid_t f, const CheckpointState *s) {
  hsize_t d[1] = {(hsize_t)s->num_layers + 1};
  put_dataset(f, "layer_probs", H5T_NATIVE_DOUBLE, 1, d, "F64");
}
static void e_v_cols(hid_t f, const CheckpointState *s) {
  hsize_t d[2] = {(hsize_t)s->num_layers, (hsize_t)s->layer_numel - 1};
  put_dataset(f, "lora/v", H5T_NATIVE_FLOAT, 2, d, "F32");
}
static void e_params_flat(hid_t f, const CheckpointState *s) {
  hsize_t d[1] = {(hsize_t)s->num_layers * (hsize_t)s->layer_numel};
  put_dataset(f, "lora/params", H5T_NATIVE_FLOAT, 1, d, "F32");
}
static void e_steps_f64(hid_t f, const CheckpointState *s) {
  hsize_t d[2] = {(hsize_t)s->num_layers, LORA_NUM_TARGETS};
  put_dataset(f, "lora/steps", H5T_NATIVE_DOUBLE, 2, d, "I64");
}
static void e_config_int(hid_t f, const CheckpointState *s) {
  (void)s;
  hsize_t d[1] = {1};
  put_dataset(f, "config_yaml", H5T_NATIVE_INT, 1, d, NULL);
}
static void e_step_f64(hid_t f, const CheckpointState *s) {
  double v = (double)s->step;
  put_attr(f, "step", H5T_NATIVE_DOUBLE, 0, 1, &v);
}
static void e_layers_vec(hid_t f, const CheckpointState *s) {
  int32_t v[2] = {s->num_layers, s->num_layers};
  put_attr(f, "num_layers", H5T_NATIVE_INT32, 1, 2, v);
}
static void e_layers_more(hid_t f, const CheckpointState *s) {
  int32_t v = s->num_layers + 1;
  put_attr(f, "num_layers", H5T_NATIVE_INT32, 0, 1, &v);
}
static void e_numel_more(hid_t f, const CheckpointState *s) {
  int64_t v = s->layer_numel + 1;
  put_attr(f, "layer_numel", H5T_NATIVE_INT64, 0, 1, &v);
}
static void e_step_past_total(hid_t f, const CheckpointState *s) {
  int64_t v = s->total_steps + 1;
  put_attr(f, "step", H5T_NATIVE_INT64, 0, 1, &v);
}
static void e_version(hid_t f, const CheckpointState *s) {
  (void)s;
  int32_t v = CHECKPOINT_FORMAT_VERSION + 1;
  put_attr(f, "format_version", H5T_NATIVE_INT32, 0, 1, &v);
}
static void e_format(hid_t f, const CheckpointState *s) {
  (void)s;
  put_str_attr(f, "format", "someone-elses-file");
}
static void e_method(hid_t f, const CheckpointState *s) {
  (void)s;
  put_str_attr(f, "method", "full-ft");
}
static void e_dtype_bf16(hid_t f, const CheckpointState *s) {
  (void)s;
  hid_t d = H5Dopen2(f, "lora/m", H5P_DEFAULT);
  put_str_attr(d, "dtype", "BF16");
  H5Dclose(d);
}
static void e_no_dtype(hid_t f, const CheckpointState *s) {
  (void)s;
  hid_t d = H5Dopen2(f, "lora/m", H5P_DEFAULT);
  H5Adelete(d, "dtype");
  H5Dclose(d);
}
static void e_active_dup(hid_t f, const CheckpointState *s) {
  hid_t d = H5Dopen2(f, "active_layers", H5P_DEFAULT);
  int32_t v[2] = {s->active_layers[0], s->active_layers[0]};
  hsize_t n = 2;
  hid_t sp = H5Screate_simple(1, &n, NULL), fs = H5Dget_space(d);
  hsize_t start = 0;
  H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &n, NULL);
  H5Dwrite(d, H5T_NATIVE_INT32, sp, fs, H5P_DEFAULT, v);
  H5Sclose(fs);
  H5Sclose(sp);
  H5Dclose(d);
}
static void e_active_many(hid_t f, const CheckpointState *s) {
  hsize_t d[1] = {(hsize_t)s->num_layers + 1};
  put_dataset(f, "active_layers", H5T_NATIVE_INT32, 1, d, "I32");
}
static void e_lora_dataset(hid_t f, const CheckpointState *s) {
  (void)s;
  H5Ldelete(f, "lora", H5P_DEFAULT);
  hsize_t d[1] = {1};
  put_dataset(f, "lora", H5T_NATIVE_FLOAT, 1, d, "F32");
}

static const char *kAttrs[] = {"format", "format_version", "step", "total_steps", "seed",
                               "sample_rng_stream", "sample_rng_counter", "data_epoch",
                               "data_cursor", "probe_epoch", "probe_cursor", "num_layers",
                               "method", "lora_r", "lora_alpha", "lora_target_mask",
                               "layer_numel", "model_digest", "tokenizer_digest",
                               "data_digest", "probe_digest"};
static const char *kDatasets[] = {"config_yaml", "layer_probs", "active_layers", "lora/params",
                                  "lora/m", "lora/v", "lora/steps", "lora"};

/* ---- the test ---- */

static void test_corrupt(void) {
  char *good = checkpoint_path(root, 20), bad[256];
  snprintf(bad, sizeof bad, "%s/checkpoints/bad.h5", root);
  CheckpointState s;
  make_state(&s, 21, 4, 3000, 2);
  checkpoint_save(good, &s);
  long size = file_size(good);

  /* HDF5 must not print its error stack: stderr goes to a file while bad files load. */
  char errlog[128];
  snprintf(errlog, sizeof errlog, "%s/stderr.txt", root);
  fflush(stderr);
  int saved = dup(2), fd = open(errlog, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  dup2(fd, 2);
  close(fd);
  H5E_auto2_t before_fn, after_fn;
  void *before_data, *after_data;
  H5Eget_auto2(H5E_DEFAULT, &before_fn, &before_data);

  expect_load_error("/nonexistent/step-000001.h5", "No such file", "missing file");
  expect_load_error(root, "not a regular file", "a folder");
  long cuts[] = {0, 1, 8, 100, 512, 2048, size / 4, size / 3, size / 2, 2 * size / 3,
                 size - 4096, size - 100, size - 1};
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    char what[64];
    snprintf(what, sizeof what, "truncated at %ld of %ld", cuts[i], size);
    copy_prefix(good, bad, cuts[i]);
    /* Any message will do (a NULL needle also keeps the log short; "" prints it). */
    int show = i == 0 || i == 6 || i + 1 == sizeof cuts / sizeof cuts[0];
    expect_load_error(bad, show ? "" : NULL, what);
  }
  FILE *f = fopen(bad, "wb");
  for (long i = 0; i < size; i++) fputc((int)(rnd() & 255), f);
  fclose(f);
  expect_load_error(bad, "not an HDF5 file", "random bytes");
  copy_prefix(good, bad, 1024); /* a real superblock, then garbage */
  f = fopen(bad, "ab");
  for (long i = 1024; i < size; i++) fputc((int)(rnd() & 255), f);
  fclose(f);
  expect_load_error(bad, "", "HDF5 header + random bytes");

  /* One flipped byte inside layer 0's LoRA parameters: caught by the Fletcher-32 filter. */
  FILE *in = fopen(good, "rb");
  unsigned char *bytes = malloc((size_t)size);
  EXPECT(fread(bytes, 1, (size_t)size, in) == (size_t)size, "reading %s", good);
  fclose(in);
  unsigned char *hit = NULL;
  for (long i = 0; !hit && i + 64 <= size; i++)
    if (!memcmp(bytes + i, s.lora_params, 64)) hit = bytes + i;
  EXPECT(hit != NULL, "layer 0 parameters not found in the file");
  if (hit) {
    hit[40] ^= 0x10;
    f = fopen(bad, "wb");
    fwrite(bytes, 1, (size_t)size, f);
    fclose(f);
    hit[40] ^= 0x10;
    expect_load_error(bad, "/lora/params", "flipped bit in LoRA data");
  }
  /* Random single-byte damage anywhere: a clean one-line error, never a crash. Checksums
   * cover everything but the config text and unused bytes, so a file that still loads must
   * give back every other field unchanged. */
  int caught = 0, text = 0, flips = 300;
  for (int i = 0; i < flips; i++) {
    long at = (long)(rnd() % (uint64_t)size);
    unsigned char keep = bytes[at];
    bytes[at] ^= (unsigned char)(1 + rnd() % 255);
    f = fopen(bad, "wb");
    fwrite(bytes, 1, (size_t)size, f);
    fclose(f);
    bytes[at] = keep;
    CheckpointState t;
    char err[1024];
    const char *msg = checkpoint_load(bad, &t, err, sizeof err);
    ssize_t open_ids = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL);
    EXPECT(open_ids == 0, "flip at %ld: %zd HDF5 ids left open", at, open_ids);
    if (msg) {
      caught++;
      EXPECT(!strchr(msg, '\n') && strstr(msg, bad), "flip at %ld: '%s'", at, msg);
      continue;
    }
    char *yaml = t.config_yaml, what[64];
    text += strcmp(yaml, s.config_yaml) != 0;
    t.config_yaml = s.config_yaml;
    snprintf(what, sizeof what, "undetected flip at %ld", at);
    expect_same(&s, &t, what);
    t.config_yaml = yaml;
    checkpoint_state_free(&t);
  }
  free(bytes);
  printf("  %d of %d random byte flips reported; of the rest %d changed the config text\n",
         caught, flips, text);

  for (size_t i = 0; i < sizeof kAttrs / sizeof kAttrs[0]; i++) {
    copy_file(good, bad);
    hid_t h = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Adelete(h, kAttrs[i]);
    H5Fclose(h);
    char needle[96], what[96];
    snprintf(needle, sizeof needle, "missing attribute %s", kAttrs[i]);
    snprintf(what, sizeof what, "no attribute %s", kAttrs[i]);
    expect_load_error(bad, needle, what);
  }
  for (size_t i = 0; i < sizeof kDatasets / sizeof kDatasets[0]; i++) {
    copy_file(good, bad);
    hid_t h = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(h, kDatasets[i], H5P_DEFAULT);
    H5Fclose(h);
    char needle[96], what[96];
    int group = !strcmp(kDatasets[i], "lora");
    snprintf(needle, sizeof needle, "missing %s /%s", group ? "group" : "dataset", kDatasets[i]);
    snprintf(what, sizeof what, "no /%s", kDatasets[i]);
    expect_load_error(bad, needle, what);
  }

  char n1[128], n2[128], n3[128], n4[128], n5[128];
  snprintf(n1, sizeof n1, "has shape [%d], expected [%d]", s.num_layers + 1, s.num_layers);
  snprintf(n2, sizeof n2, "has shape [%d, %" PRId64 "], expected [%d, %" PRId64 "]", s.num_layers,
           s.layer_numel - 1, s.num_layers, s.layer_numel);
  snprintf(n3, sizeof n3, "has shape [%d], expected [%d, %" PRId64 "]",
           s.num_layers * (int)s.layer_numel, s.num_layers, s.layer_numel);
  snprintf(n4, sizeof n4, "/layer_probs has shape [%d], expected [%d]", s.num_layers,
           s.num_layers + 1);
  snprintf(n5, sizeof n5, "/lora/params has shape [%d, %" PRId64 "], expected [%d, %" PRId64 "]",
           s.num_layers, s.layer_numel, s.num_layers, s.layer_numel + 1);
  struct {
    EditFn fn;
    const char *needle, *what;
  } edits[] = {
      {e_probs_len, n1, "layer_probs too long"},
      {e_v_cols, n2, "lora/v too narrow"},
      {e_params_flat, n3, "lora/params flat"},
      {e_steps_f64, "/lora/steps has type float64, expected int64", "lora/steps as float"},
      {e_config_int, "/config_yaml has type int32, expected a fixed-length string", "config int"},
      {e_step_f64, "attribute step has type float64, expected int64", "step as float"},
      {e_layers_vec, "attribute num_layers is not a single value", "num_layers a vector"},
      {e_layers_more, n4, "num_layers != probs length"},
      {e_numel_more, n5, "layer_numel != lora width"},
      {e_step_past_total, "inconsistent contents: step", "step past total_steps"},
      {e_version, "format_version 3, this build reads version 2", "newer format version"},
      {e_format, "not a tvaccine checkpoint", "foreign HDF5 file"},
      {e_method, "method 'full-ft' is not", "unknown method"},
      {e_dtype_bf16, "/lora/m has dtype 'BF16', expected 'F32'", "dtype attribute wrong"},
      {e_no_dtype, "missing attribute dtype of dataset /lora/m", "dtype attribute missing"},
      {e_active_dup, "active_layers lists layer", "duplicate active layer"},
      {e_active_many, "more than num_layers", "too many active layers"},
      {e_lora_dataset, "cannot open /lora as a group", "/lora not a group"},
  };
  for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
    edited_copy(good, bad, edits[i].fn, &s);
    expect_load_error(bad, edits[i].needle, edits[i].what);
  }

  H5Eget_auto2(H5E_DEFAULT, &after_fn, &after_data);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  EXPECT(after_fn == before_fn && after_data == before_data, "HDF5 error printing not restored");
  long logged = file_size(errlog);
  EXPECT(logged == 0, "bad files printed %ld bytes to stderr (see below)", logged);
  if (logged > 0) {
    FILE *lf = fopen(errlog, "r");
    char line[512];
    for (int i = 0; i < 40 && fgets(line, sizeof line, lf); i++) fputs(line, stderr);
    fclose(lf);
  }
  expect_loads(good, &s, "good file after all that");
  unlink(bad);
  unlink(good);
  unlink(errlog);
  checkpoint_state_free(&s);
  free(good);
}

int main(void) {
  if (scratch_create() != 0) return 1;
  test_corrupt();
  scratch_remove();
  return tv_test_report("checkpoint_corrupt");
}
