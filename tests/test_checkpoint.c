/* io/checkpoint: save -> load is bit-exact, a failed or crashed save never damages the
 * previous file, every kind of bad file ends in one clear line, latest-checkpoint lookup. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <hdf5.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "test_util.h"

static uint64_t rng_state;
static uint64_t rnd(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static char *dup_str(const char *s) {
  char *d = malloc(strlen(s) + 1);
  strcpy(d, s);
  return d;
}

/* Random contents in every field. Floats are random bit patterns (NaN payloads, infinities,
 * subnormals included), so "bit-exact" means exactly that. */
static void make_state(CheckpointState *s, uint64_t seed, int L, int64_t N, int A) {
  rng_state = seed;
  memset(s, 0, sizeof *s);
  s->total_steps = (int64_t)(rnd() % 100000) + 1;
  s->step = (int64_t)(rnd() % (uint64_t)(s->total_steps + 1));
  s->seed = rnd();
  s->sample_rng_stream = rnd();
  s->sample_rng_counter = rnd();
  s->data_epoch = (int64_t)(rnd() >> 2);
  s->data_cursor = (int64_t)(rnd() >> 2);
  s->probe_epoch = (int64_t)(rnd() >> 2);
  s->probe_cursor = (int64_t)(rnd() >> 2);
  s->num_layers = L;
  s->layer_probs = malloc(sizeof(double) * (size_t)L);
  double sum = 0;
  for (int l = 0; l < L; l++) sum += (s->layer_probs[l] = (double)(rnd() >> 11) + 1.0);
  for (int l = 0; l < L; l++) s->layer_probs[l] /= sum;
  int *perm = malloc(sizeof(int) * (size_t)L);
  for (int l = 0; l < L; l++) perm[l] = l;
  for (int l = L - 1; l > 0; l--) {
    int j = (int)(rnd() % (uint64_t)(l + 1)), t = perm[l];
    perm[l] = perm[j], perm[j] = t;
  }
  s->num_active = A;
  s->active_layers = malloc(sizeof(int32_t) * (size_t)(A > 0 ? A : 1));
  for (int i = 0; i < A; i++) s->active_layers[i] = perm[i];
  free(perm);
  size_t ylen = 1 + rnd() % 400;
  s->config_yaml = malloc(ylen + 1);
  for (size_t i = 0; i < ylen; i++) s->config_yaml[i] = (char)(1 + rnd() % 255); /* no NUL */
  s->config_yaml[ylen] = '\0';
  static const char *methods[] = {"sft", "vaccine", "tvaccine"};
  s->method = dup_str(methods[rnd() % 3]);
  s->lora_r = 1 + (int)(rnd() % 64);
  s->lora_alpha = (double)(rnd() >> 11) / 1e9;
  s->lora_target_mask = 1 + (uint32_t)(rnd() % 127);
  s->layer_numel = N;
  size_t n = (size_t)L * (size_t)N;
  float **arrays[3] = {&s->lora_params, &s->lora_m, &s->lora_v};
  for (int a = 0; a < 3; a++) {
    *arrays[a] = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) {
      uint32_t bits = (uint32_t)rnd();
      memcpy(&(*arrays[a])[i], &bits, 4);
    }
  }
  s->lora_steps = malloc(sizeof(int64_t) * (size_t)L * CHECKPOINT_LORA_TARGETS);
  for (int l = 0; l < L * CHECKPOINT_LORA_TARGETS; l++) s->lora_steps[l] = (int64_t)(rnd() % 1000000);
}

static void expect_same(const CheckpointState *a, const CheckpointState *b, const char *what) {
#define SAME(f) EXPECT(a->f == b->f, "%s: field " #f " differs", what)
  SAME(step); SAME(total_steps); SAME(seed); SAME(sample_rng_stream); SAME(sample_rng_counter);
  SAME(data_epoch); SAME(data_cursor); SAME(probe_epoch); SAME(probe_cursor);
  SAME(num_layers); SAME(num_active); SAME(lora_r); SAME(lora_target_mask); SAME(layer_numel);
#undef SAME
  EXPECT(memcmp(&a->lora_alpha, &b->lora_alpha, sizeof(double)) == 0, "%s: lora_alpha", what);
  if (a->num_layers != b->num_layers || a->num_active != b->num_active ||
      a->layer_numel != b->layer_numel)
    return;
  size_t L = (size_t)a->num_layers, n = L * (size_t)a->layer_numel;
  EXPECT(!memcmp(a->layer_probs, b->layer_probs, L * sizeof(double)), "%s: layer_probs", what);
  EXPECT(!memcmp(a->active_layers, b->active_layers, (size_t)a->num_active * sizeof(int32_t)),
         "%s: active_layers", what);
  EXPECT(!strcmp(a->config_yaml, b->config_yaml), "%s: config_yaml", what);
  EXPECT(!strcmp(a->method, b->method), "%s: method", what);
  EXPECT(!memcmp(a->lora_params, b->lora_params, n * sizeof(float)), "%s: lora_params", what);
  EXPECT(!memcmp(a->lora_m, b->lora_m, n * sizeof(float)), "%s: lora_m", what);
  EXPECT(!memcmp(a->lora_v, b->lora_v, n * sizeof(float)), "%s: lora_v", what);
  EXPECT(!memcmp(a->lora_steps, b->lora_steps, L * CHECKPOINT_LORA_TARGETS * sizeof(int64_t)),
         "%s: lora_steps", what);
}

/* Loads path and expects exactly `want`. */
static void expect_loads(const char *path, const CheckpointState *want, const char *what) {
  CheckpointState got;
  char err[1024];
  const char *msg = checkpoint_load(path, &got, err, sizeof err);
  EXPECT(msg == NULL, "%s: load failed: %s", what, msg);
  if (msg) return;
  expect_same(want, &got, what);
  checkpoint_state_free(&got);
}

/* Loads path and expects one line naming the file and containing `needle`; *s zeroed. */
static void expect_load_error(const char *path, const char *needle, const char *what) {
  CheckpointState s;
  char err[1024];
  memset(&s, 0xab, sizeof s);
  const char *msg = checkpoint_load(path, &s, err, sizeof err);
  EXPECT(msg != NULL, "%s: a bad file loaded", what);
  if (!msg) {
    checkpoint_state_free(&s);
    return;
  }
  char prefix[600];
  snprintf(prefix, sizeof prefix, "checkpoint %s: ", path);
  EXPECT(strncmp(msg, prefix, strlen(prefix)) == 0, "%s: '%s' does not name the file", what, msg);
  EXPECT(!needle || strstr(msg, needle), "%s: '%s' lacks '%s'", what, msg, needle);
  EXPECT(!strchr(msg, '\n'), "%s: message has several lines: '%s'", what, msg);
  CheckpointState zero;
  memset(&zero, 0, sizeof zero);
  EXPECT(!memcmp(&s, &zero, sizeof s), "%s: state not zeroed after a failed load", what);
  ssize_t open_ids = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL);
  EXPECT(open_ids == 0, "%s: %zd HDF5 ids left open", what, open_ids);
  if (needle) printf("  %-28s -> %s\n", what, msg + strlen(prefix));
}

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

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}
static int exists(const char *path) { return access(path, F_OK) == 0; }

/* ---- child processes: tv_die exits, so failing saves run in a fork ---- */

typedef struct {
  int status;
  char err[4096]; /* what the child wrote to stderr */
} Child;

typedef struct {
  const char *path;
  const CheckpointState *s;
  rlim_t fsize_limit; /* 0 = none */
  int die_on_limit;   /* SIGXFSZ kills (a crash) instead of write failing with EFBIG */
  int as_nobody;      /* root ignores folder permissions: drop to uid/gid 65534 first */
} SaveJob;

static void run_save(const SaveJob *job) {
  if (job->as_nobody && geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(77);
  if (job->fsize_limit) {
    struct rlimit rl = {job->fsize_limit, job->fsize_limit};
    setrlimit(RLIMIT_FSIZE, &rl);
    signal(SIGXFSZ, job->die_on_limit ? SIG_DFL : SIG_IGN);
  }
  checkpoint_save(job->path, job->s);
}

static Child in_child(void (*fn)(const void *), const void *arg) {
  Child c = {0, {0}};
  int p[2];
  if (pipe(p) != 0) return c;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    dup2(p[1], 2);
    fn(arg);
    _exit(0);
  }
  close(p[1]);
  size_t got = 0;
  ssize_t n;
  while ((n = read(p[0], c.err + got, sizeof c.err - 1 - got)) > 0) got += (size_t)n;
  close(p[0]);
  waitpid(pid, &c.status, 0);
  return c;
}

static void save_fn(const void *arg) { run_save(arg); }
static Child save_in_child(const char *path, const CheckpointState *s, rlim_t limit, int die) {
  SaveJob job = {path, s, limit, die, 0};
  return in_child(save_fn, &job);
}

static int one_line(const char *s) {
  const char *nl = strchr(s, '\n');
  return nl && nl[1] == '\0';
}

/* A failed save: exit 1, one "cannot write checkpoint PATH" line naming `needle`, no .tmp. */
static void expect_save_fails(const char *path, const CheckpointState *s, rlim_t limit,
                              const char *needle, const char *what) {
  Child c = save_in_child(path, s, limit, 0);
  EXPECT(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 1, "%s: status %d", what, c.status);
  char want[600];
  snprintf(want, sizeof want, "tvaccine: error: cannot write checkpoint %s: ", path);
  EXPECT(strncmp(c.err, want, strlen(want)) == 0, "%s: stderr '%s'", what, c.err);
  EXPECT(one_line(c.err), "%s: stderr is not one line: '%s'", what, c.err);
  EXPECT(strstr(c.err, needle), "%s: '%s' lacks '%s'", what, c.err, needle);
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  struct stat st;
  EXPECT(stat(tmp, &st) != 0 || S_ISDIR(st.st_mode), "%s: a .tmp file was left", what);
  printf("  %-28s -> %s", what, c.err + strlen("tvaccine: error: "));
}

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
  hsize_t d[2] = {(hsize_t)s->num_layers, CHECKPOINT_LORA_TARGETS};
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
                               "layer_numel"};
static const char *kDatasets[] = {"config_yaml", "layer_probs", "active_layers", "lora/params",
                                  "lora/m", "lora/v", "lora/steps", "lora"};

/* ---- the tests ---- */

static char root[64]; /* scratch folder of this run */

static void test_round_trip(void) {
  char *path = checkpoint_path(root, 5);
  char want[200];
  snprintf(want, sizeof want, "%s/checkpoints/step-000005.h5", root);
  EXPECT(!strcmp(path, want), "checkpoint_path gave %s", path);
  struct {
    int L;
    int64_t N;
    int A;
  } shapes[] = {{4, 1000, 2}, {1, 1, 0}, {3, 70001, 3}, {32, 17, 5}};
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    CheckpointState s;
    make_state(&s, 100 + i, shapes[i].L, shapes[i].N, shapes[i].A);
    if (i == 1) s.config_yaml[0] = '\0'; /* an empty config is still a string */
    checkpoint_save(path, &s);            /* overwrites the previous shape's file */
    char what[64];
    snprintf(what, sizeof what, "round trip L=%d N=%" PRId64 " A=%d", shapes[i].L, shapes[i].N,
             shapes[i].A);
    expect_loads(path, &s, what);
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    EXPECT(!exists(tmp), "%s: .tmp left after a good save", what);
    checkpoint_state_free(&s);
  }
  unlink(path);
  free(path);
}

static const char *self_exe; /* argv[0] (not /proc/self/exe, which is valgrind under it) */

/* Runs this program again as "--resume-then-fail PATH" (see main). */
static void resume_then_fail(const void *path) {
  execl(self_exe, self_exe, "--resume-then-fail", (const char *)path, (char *)0);
  _exit(3);
}

static int resume_then_fail_main(const char *path) {
  CheckpointState s;
  char err[1024];
  if (checkpoint_load(path, &s, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 4;
  }
  struct rlimit rl = {4096, 4096};
  setrlimit(RLIMIT_FSIZE, &rl);
  signal(SIGXFSZ, SIG_IGN);
  s.step = s.total_steps;
  checkpoint_save(path, &s);
  return 0;
}

static void test_atomicity(void) {
  char *p3 = checkpoint_path(root, 3), *p4 = checkpoint_path(root, 4);
  char tmp3[256], tmp4[256];
  snprintf(tmp3, sizeof tmp3, "%s.tmp", p3);
  snprintf(tmp4, sizeof tmp4, "%s.tmp", p4);
  CheckpointState old, next;
  make_state(&old, 7, 6, 5000, 3);
  make_state(&next, 8, 6, 5000, 3);
  checkpoint_save(p3, &old);
  long size = file_size(p3);

  /* A crash half-way through writing step 4 (killed by SIGXFSZ at half the file size). */
  Child c = save_in_child(p4, &next, (rlim_t)size / 2, 1);
  EXPECT(WIFSIGNALED(c.status) && WTERMSIG(c.status) == SIGXFSZ, "crash: status %d", c.status);
  EXPECT(exists(tmp4) && !exists(p4), "crash: expected a torn .tmp and no step-4 file");
  expect_loads(p3, &old, "previous file after a crash");
  int64_t step = -1;
  char err[512];
  char *latest = checkpoint_find_latest(root, &step, err, sizeof err);
  EXPECT(latest && step == 3 && !strcmp(latest, p3), "latest after crash: %s step %" PRId64,
         latest ? latest : err, step);
  free(latest);
  expect_load_error(tmp4, "", "the torn .tmp itself");
  unlink(tmp4);

  /* Writes failing (EFBIG, like a full disk) while replacing step 3 in place. */
  expect_save_fails(p3, &next, (rlim_t)size / 2, "File too large", "write fails half-way");
  expect_loads(p3, &old, "previous file after a failed write");
  expect_save_fails(p3, &next, 1, "creating", "write fails at once");
  expect_loads(p3, &old, "previous file after a failed create");

  /* A fresh process that resumes (its first HDF5 use is a load) and then fails to save:
   * still one line and exit 1, not HDF5's exit handler crashing on the broken file. */
  c = in_child(resume_then_fail, p3);
  EXPECT(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 1 && one_line(c.err) &&
             strstr(c.err, "File too large"),
         "resume then failed save: status %d, '%s'", c.status, c.err);
  expect_loads(p3, &old, "previous file after resume + failed save");

  /* The temporary name is blocked (a directory sits there). */
  mkdir(tmp3, 0755);
  expect_save_fails(p3, &next, 0, "creating", "tmp name blocked");
  expect_loads(p3, &old, "previous file after blocked tmp");
  rmdir(tmp3);

  /* The rename fails (a non-empty directory has the target name). */
  char *p9 = checkpoint_path(root, 9), inner[300];
  snprintf(inner, sizeof inner, "%s/x", p9);
  mkdir(p9, 0755);
  fclose(fopen(inner, "w"));
  expect_save_fails(p9, &next, 0, "renaming", "rename fails");
  unlink(inner);
  rmdir(p9);
  free(p9);

  /* A folder that cannot be written (as root the child saves as user nobody, since root
   * ignores permissions). */
  char *dir = checkpoint_dir(root);
  chmod(root, 0711);
  chmod(dir, 0555);
  SaveJob job = {p3, &next, 0, 0, 1};
  c = in_child(save_fn, &job);
  if (WIFEXITED(c.status) && WEXITSTATUS(c.status) == 77) {
    printf("  (cannot drop root privileges here: the unwritable-folder case is skipped)\n");
  } else {
    EXPECT(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 1 && one_line(c.err) &&
               strstr(c.err, "Permission denied") && strstr(c.err, p3),
           "unwritable folder: status %d, '%s'", c.status, c.err);
    printf("  %-28s -> %s", "folder not writable", c.err + strlen("tvaccine: error: "));
  }
  chmod(dir, 0755);
  chmod(root, 0700);
  free(dir);
  expect_loads(p3, &old, "previous file after unwritable folder");

  /* And after all that a good save still replaces the file. */
  checkpoint_save(p3, &next);
  expect_loads(p3, &next, "replace after failures");
  unlink(p3);
  checkpoint_state_free(&old);
  checkpoint_state_free(&next);
  free(p3);
  free(p4);
}

static void save_bad_state(const void *arg) {
  CheckpointState s;
  make_state(&s, 9, 4, 10, 2);
  s.active_layers[1] = 4; /* outside [0, L) */
  checkpoint_save(arg, &s);
}

static void make_dir_in_the_way(const void *arg) { checkpoint_dir_create(arg); }

static void test_bad_calls(void) {
  char *p = checkpoint_path(root, 11);
  Child c = in_child(save_bad_state, p);
  EXPECT(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 2 && strstr(c.err, "active_layers[1]"),
         "inconsistent state: status %d, '%s'", c.status, c.err);
  EXPECT(!exists(p), "inconsistent state was written");
  free(p);
  char file[128];
  snprintf(file, sizeof file, "%s/plainfile", root);
  fclose(fopen(file, "w"));
  c = in_child(make_dir_in_the_way, file);
  EXPECT(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 1 && one_line(c.err) &&
             strstr(c.err, "cannot create checkpoint folder"),
         "dir over a file: status %d, '%s'", c.status, c.err);
}

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
      {e_version, "format_version 2, this build reads version 1", "newer format version"},
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

static void touch(const char *dir, const char *name) {
  char p[300];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  fclose(fopen(p, "w"));
}

static void test_latest(void) {
  char run[128], err[512];
  snprintf(run, sizeof run, "%s/run2", root);
  int64_t step = -1;
  char *got = checkpoint_find_latest(run, &step, err, sizeof err);
  EXPECT(!got && strstr(err, "cannot open") && strstr(err, run), "missing folder: '%s'", err);
  checkpoint_dir_create(run);
  checkpoint_dir_create(run); /* twice is fine */
  got = checkpoint_find_latest(run, &step, err, sizeof err);
  EXPECT(!got && strstr(err, "no checkpoints"), "empty folder: '%s'", err);
  char *dir = checkpoint_dir(run);
  const char *names[] = {"step-000002.h5", "step-000010.h5", "step-000009.h5",
                         "step-1000000.h5", "step-999999.h5", "step-2000000.h5.tmp",
                         "step-.h5", "step-12a.h5", "step-0000033.h5x", "notes.txt",
                         "step-99999999999999999999.h5"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) touch(dir, names[i]);
  got = checkpoint_find_latest(run, &step, err, sizeof err);
  char want[300];
  snprintf(want, sizeof want, "%s/step-1000000.h5", dir);
  EXPECT(got && !strcmp(got, want) && step == 1000000, "latest: %s step %" PRId64,
         got ? got : err, step);
  free(got);
  char *p = checkpoint_path(run, 1000001);
  EXPECT(strstr(p, "/step-1000001.h5") != NULL, "seven-digit name %s", p);
  free(p);
  free(dir);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--resume-then-fail")) return resume_then_fail_main(argv[2]);
  self_exe = argv[0];
  snprintf(root, sizeof root, "/tmp/tv_checkpoint_XXXXXX");
  if (!mkdtemp(root)) {
    perror("mkdtemp");
    return 1;
  }
  checkpoint_dir_create(root);
  test_round_trip();
  test_atomicity();
  test_bad_calls();
  test_corrupt();
  test_latest();
  nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  return tv_test_report("checkpoint");
}
