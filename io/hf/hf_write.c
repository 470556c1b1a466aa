/* Writing a Hugging Face model folder from a whole-model Stage (config.json, safetensors
 * shards and their index), plus the small atomic file helpers the HF and PEFT code share. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "hf_model.h"

/* ---- small files ---- */

char *hf_path_join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *p = tv_malloc(a + b + 2);
  memcpy(p, dir, a);
  p[a] = '/';
  memcpy(p + a + 1, name, b + 1);
  return p;
}

char *hf_read_text_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  struct stat sb;
  /* Config and index files are small; a huge one is a wrong path, not something to slurp. */
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > (256 << 20)) {
    fclose(f);
    errno = EINVAL;
    return NULL;
  }
  size_t n = (size_t)sb.st_size;
  char *text = tv_malloc(n + 1);
  size_t got = fread(text, 1, n, f);
  int bad = ferror(f);
  fclose(f);
  if (bad || got != n) {
    free(text);
    errno = EIO;
    return NULL;
  }
  text[n] = 0;
  if (len) *len = n;
  return text;
}

static char *tmp_name(const char *path) {
  size_t n = strlen(path);
  char *t = tv_malloc(n + 5);
  memcpy(t, path, n);
  memcpy(t + n, ".tmp", 5);
  return t;
}

/* Finishes a temporary file: flush, fsync, close, rename; on failure removes it and dies. */
static void commit(FILE *f, int ok, const char *tmp, const char *path) {
  int saved = errno;
  if (ok && (fflush(f) != 0 || fsync(fileno(f)) != 0)) ok = 0, saved = errno;
  if (fclose(f) != 0 && ok) ok = 0, saved = errno;
  if (ok && rename(tmp, path) != 0) ok = 0, saved = errno;
  if (!ok) {
    unlink(tmp);
    tv_die("cannot write %s: %s", path, strerror(saved));
  }
}

void hf_write_text_file(const char *path, const char *text) {
  char *tmp = tmp_name(path);
  FILE *f = fopen(tmp, "wb");
  if (!f) tv_die("cannot write %s: %s", tmp, strerror(errno));
  size_t n = strlen(text);
  commit(f, fwrite(text, 1, n, f) == n, tmp, path);
  free(tmp);
}

void hf_copy_file(const char *src, const char *dst) {
  FILE *in = fopen(src, "rb");
  if (!in) tv_die("cannot read %s: %s", src, strerror(errno));
  char *tmp = tmp_name(dst);
  FILE *out = fopen(tmp, "wb");
  if (!out) tv_die("cannot write %s: %s", tmp, strerror(errno));
  char buf[1 << 16];
  size_t n;
  int ok = 1;
  while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
  if (ferror(in)) {
    fclose(out);
    unlink(tmp);
    tv_die("cannot read %s: %s", src, strerror(errno));
  }
  fclose(in);
  commit(out, ok, tmp, dst);
  free(tmp);
}

void hf_make_dir(const char *dir) {
  if (!dir[0]) tv_die("an empty folder name was given");
  char *p = strdup(dir);
  TV_CHECK(p, "out of memory");
  for (char *s = p + 1;; s++) {
    char c = *s;
    if (c != '/' && c != 0) continue;
    *s = 0;
    struct stat sb;
    if (mkdir(p, 0777) != 0 && (errno != EEXIST || stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)))
      tv_die("cannot create folder %s: %s", p, errno == EEXIST ? "a file is in the way" : strerror(errno));
    *s = c;
    if (!c) break;
  }
  free(p);
}

int hf_parse_size(const char *text, uint64_t *bytes) {
  char *end = NULL;
  errno = 0;
  double v = strtod(text, &end);
  if (errno || end == text || !isfinite(v) || v <= 0) return 0;
  static const struct { const char *unit; double mult; } units[] = {
      {"", 1}, {"b", 1}, {"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
      {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0}, {"tib", 1099511627776.0}};
  char unit[8];
  if (strlen(end) >= sizeof unit) return 0;
  snprintf(unit, sizeof unit, "%s", end);
  for (char *u = unit; *u; u++) *u = (char)tolower((unsigned char)*u);
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (!strcmp(unit, units[i].unit)) {
      double b = v * units[i].mult;
      if (b < 1 || b > 1.8e19) return 0;
      *bytes = (uint64_t)b;
      return 1;
    }
  return 0;
}

/* ---- the model ---- */

typedef struct {
  char name[96];
  const void *src; /* backend memory: a matrix (2-D) in the stage's dtype, else f32 */
  int ndim;
  int64_t shape[2];
  size_t numel;
} Out;

static void out(Out *o, int *n, const char *name, const void *src, int64_t d0, int64_t d1) {
  Out *x = &o[(*n)++];
  snprintf(x->name, sizeof x->name, "%s", name);
  x->src = src;
  x->ndim = d1 ? 2 : 1;
  x->shape[0] = d0;
  x->shape[1] = d1;
  x->numel = (size_t)d0 * (size_t)(d1 ? d1 : 1);
}

static int list_outputs(Stage *s, Out *o) {
  const LlamaConfig *c = stage_config(s);
  StageWeights *w = stage_weights(s);
  int64_t D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
  int64_t HD = (int64_t)c->num_heads * c->head_dim, KD = (int64_t)c->num_kv_heads * c->head_dim;
  int n = 0;
  char name[96];
  out(o, &n, "model.embed_tokens.weight", w->embed, V, D);
  for (int l = 0; l < c->num_layers; l++) {
    const LayerWeights *lw = &w->layers[l];
#define LAYER(suffix, p, d0, d1) \
  (snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix), out(o, &n, name, p, d0, d1))
    LAYER("input_layernorm.weight", lw->attn_norm, D, 0);
    LAYER("self_attn.q_proj.weight", lw->wq, HD, D);
    LAYER("self_attn.k_proj.weight", lw->wk, KD, D);
    LAYER("self_attn.v_proj.weight", lw->wv, KD, D);
    LAYER("self_attn.o_proj.weight", lw->wo, D, HD);
    if (c->attention_bias) {
      LAYER("self_attn.q_proj.bias", lw->bq, HD, 0);
      LAYER("self_attn.k_proj.bias", lw->bk, KD, 0);
      LAYER("self_attn.v_proj.bias", lw->bv, KD, 0);
    }
    LAYER("post_attention_layernorm.weight", lw->mlp_norm, D, 0);
    LAYER("mlp.gate_proj.weight", lw->w_gate, F, D);
    LAYER("mlp.up_proj.weight", lw->w_up, F, D);
    LAYER("mlp.down_proj.weight", lw->w_down, D, F);
#undef LAYER
  }
  out(o, &n, "model.norm.weight", w->final_norm, D, 0);
  if (!c->tie_word_embeddings) out(o, &n, "lm_head.weight", w->lm_head, V, D);
  return n;
}

static void remove_stale(const char *dir, const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (unlink(path) != 0 && errno != ENOENT)
    tv_die("cannot remove the stale %s: %s", path, strerror(errno));
}

void hf_model_write(const char *dir, const HfConfig *cfg, Stage *s, StDtype dtype,
                    uint64_t max_shard_bytes) {
  const LlamaConfig *c = stage_config(s);
  TV_CHECK(stage_is_first(s) && stage_is_last(s), "hf_model_write needs a stage of the whole model");
  if (strlen(dir) > 4000) tv_die("folder name too long: %.60s...", dir);
  hf_make_dir(dir);
  Backend *be = stage_backend(s);
  Out *o = tv_malloc(((size_t)c->num_layers * 12 + 4) * sizeof(Out));
  int n = list_outputs(s, o);

  /* Plan shards in order; a tensor larger than the limit gets a shard of its own. */
  int *shard_of = tv_malloc((size_t)n * sizeof(int));
  int nshards = 1;
  uint64_t cur = 0, total = 0;
  for (int i = 0; i < n; i++) {
    uint64_t b = (uint64_t)o[i].numel * st_dtype_size(dtype);
    if (max_shard_bytes && cur > 0 && cur + b > max_shard_bytes) nshards++, cur = 0;
    cur += b;
    total += b;
    shard_of[i] = nshards - 1;
  }

  size_t host_cap = 0;
  float *host = NULL;
  char path[4096], file[64];
  for (int k = 0; k < nshards; k++) {
    if (nshards == 1) snprintf(file, sizeof file, "model.safetensors");
    else snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", k + 1, nshards);
    snprintf(path, sizeof path, "%s/%s", dir, file);
    StWriter *w = st_writer_create(path);
    st_writer_metadata(w, "format", "pt");
    for (int i = 0; i < n; i++) {
      if (shard_of[i] != k) continue;
      if (o[i].numel * sizeof(float) > host_cap) {
        free(host);
        host_cap = o[i].numel * sizeof(float);
        host = tv_malloc(host_cap);
      }
      /* A bf16 stage's matrices widen exactly, so writing them as bf16 keeps every bit. */
      if (o[i].ndim == 2)
        stage_matrix_to_host(s, host, o[i].src, o[i].numel);
      else
        be->to_host(be, host, o[i].src, o[i].numel * sizeof(float));
      st_writer_add(w, o[i].name, dtype, o[i].ndim, o[i].shape, host);
    }
    st_writer_finish(w);
  }
  free(host);

  if (nshards > 1) {
    size_t cap = 256 + (size_t)n * 160;
    char *idx = tv_malloc(cap);
    size_t used = (size_t)snprintf(idx, cap, "{\n  \"metadata\": {\"total_size\": %llu},\n  \"weight_map\": {\n",
                                   (unsigned long long)total);
    for (int i = 0; i < n; i++)
      used += (size_t)snprintf(idx + used, cap - used, "    \"%s\": \"model-%05d-of-%05d.safetensors\"%s\n",
                               o[i].name, shard_of[i] + 1, nshards, i + 1 < n ? "," : "");
    snprintf(idx + used, cap - used, "  }\n}\n");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    hf_write_text_file(path, idx);
    free(idx);
    remove_stale(dir, "model.safetensors");
  } else {
    remove_stale(dir, "model.safetensors.index.json");
  }

  HfConfig h = *cfg;
  h.cfg = *c;
  h.dtype = dtype;
  char *json = hf_config_to_json(&h);
  snprintf(path, sizeof path, "%s/config.json", dir);
  hf_write_text_file(path, json);
  free(json);
  free(shard_of);
  free(o);
}
