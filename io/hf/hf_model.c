/* Reading a Hugging Face model folder into stages: tensor names mapped to the model's
 * weights, files mapped only when a stage needs a tensor from them, float32 conversion. */
#include "hf_model.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "run_dir.h"

/* Per-layer tensors, in the order HF writes them. */
enum {
  SLOT_ATTN_NORM, SLOT_Q, SLOT_K, SLOT_V, SLOT_O, SLOT_BQ, SLOT_BK, SLOT_BV, SLOT_MLP_NORM,
  SLOT_GATE, SLOT_UP, SLOT_DOWN, SLOT_COUNT, SLOT_BO = SLOT_COUNT /* known, not supported */
};
static const char *const slot_suffix[SLOT_COUNT + 1] = {
    "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
    "self_attn.v_proj.weight", "self_attn.o_proj.weight", "self_attn.q_proj.bias",
    "self_attn.k_proj.bias", "self_attn.v_proj.bias", "post_attention_layernorm.weight",
    "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
    "self_attn.o_proj.bias"};

typedef enum { NAME_UNKNOWN, NAME_EMBED, NAME_NORM, NAME_HEAD, NAME_LAYER } NameKind;

typedef struct {
  char *name;
  int file; /* index into files */
} MapEntry;

struct HfModel {
  char *dir;
  HfConfig cfg;
  MapEntry *map; /* every tensor of the folder, sorted by name */
  int nmap;
  char **files;  /* file names relative to dir */
  SafeTensors **open;
  int nfiles, opened;
  uint64_t digest; /* of the tensors the last hf_model_load_stage read (hf_model_digest) */
};

/* "model.layers.{i}.<suffix>" with i < L; no sign, no leading zeros. */
static NameKind classify(const char *name, int L, int *layer, int *slot) {
  if (!strcmp(name, "model.embed_tokens.weight")) return NAME_EMBED;
  if (!strcmp(name, "model.norm.weight")) return NAME_NORM;
  if (!strcmp(name, "lm_head.weight")) return NAME_HEAD;
  static const char prefix[] = "model.layers.";
  if (strncmp(name, prefix, sizeof prefix - 1)) return NAME_UNKNOWN;
  const char *p = name + sizeof prefix - 1;
  if (*p < '0' || *p > '9' || (*p == '0' && p[1] != '.')) return NAME_UNKNOWN;
  long v = 0;
  while (*p >= '0' && *p <= '9' && v < 100000) v = v * 10 + (*p++ - '0');
  if (*p++ != '.' || v >= L) return NAME_UNKNOWN;
  for (int s = 0; s <= SLOT_COUNT; s++)
    if (!strcmp(p, slot_suffix[s])) {
      *layer = (int)v;
      *slot = s;
      return NAME_LAYER;
    }
  return NAME_UNKNOWN;
}

static char *xstrdup(const char *s) {
  char *d = strdup(s);
  if (!d) tv_fatal_at(__FILE__, __LINE__, "out of memory");
  return d;
}

static int add_file(HfModel *m, const char *file) {
  for (int i = 0; i < m->nfiles; i++)
    if (!strcmp(m->files[i], file)) return i;
  m->files = realloc(m->files, (size_t)(m->nfiles + 1) * sizeof(char *));
  m->open = realloc(m->open, (size_t)(m->nfiles + 1) * sizeof(SafeTensors *));
  TV_CHECK(m->files && m->open, "out of memory");
  m->files[m->nfiles] = xstrdup(file);
  m->open[m->nfiles] = NULL;
  return m->nfiles++;
}

static void add_name(HfModel *m, const char *name, int file, int *cap) {
  if (m->nmap == *cap) {
    *cap = *cap ? 2 * *cap : 64;
    m->map = realloc(m->map, (size_t)*cap * sizeof(MapEntry));
    TV_CHECK(m->map, "out of memory");
  }
  m->map[m->nmap].name = xstrdup(name);
  m->map[m->nmap++].file = file;
}

/* weight_map of model.safetensors.index.json: tensor -> shard file in the same folder. */
static void read_index(HfModel *m, const char *path, const char *text, size_t len) {
  cJSON *root = cJSON_ParseWithLength(text, len);
  if (!root) tv_die("%s: not valid JSON", path);
  const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
  if (!cJSON_IsObject(wm)) tv_die("%s: \"weight_map\" is missing or not an object", path);
  int cap = 0;
  const cJSON *e;
  cJSON_ArrayForEach(e, wm) {
    if (!cJSON_IsString(e) || !e->valuestring[0])
      tv_die("%s: weight_map entry '%s' is not a file name", path, e->string);
    const char *f = e->valuestring;
    /* Shards live in the folder itself: no paths that could point elsewhere. */
    if (strchr(f, '/') || !strcmp(f, ".") || !strcmp(f, ".."))
      tv_die("%s: weight_map file '%s' (tensor '%s') is not a plain file name in the folder",
             path, f, e->string);
    add_name(m, e->string, add_file(m, f), &cap);
  }
  cJSON_Delete(root);
}

static int cmp_entry(const void *a, const void *b) {
  return strcmp(((const MapEntry *)a)->name, ((const MapEntry *)b)->name);
}

static const MapEntry *find_entry(const HfModel *m, const char *name) {
  MapEntry key = {.name = (char *)name, .file = 0};
  return bsearch(&key, m->map, (size_t)m->nmap, sizeof(MapEntry), cmp_entry);
}

static SafeTensors *file_at(HfModel *m, int i) {
  if (!m->open[i]) {
    char *p = hf_path_join(m->dir, m->files[i]);
    m->open[i] = safetensors_open(p);
    m->opened++;
    free(p);
  }
  return m->open[i];
}

/* Tensors the model does not use are ignored, but said once; biases it cannot represent,
 * or that config.json denies, would change the function, so they are errors. */
static void check_names(HfModel *m) {
  const LlamaConfig *c = &m->cfg.cfg;
  int nunk = 0;
  char list[512] = "";
  size_t used = 0;
  for (int i = 0; i < m->nmap; i++) {
    const char *n = m->map[i].name;
    int layer, slot;
    NameKind k = classify(n, c->num_layers, &layer, &slot);
    if (k == NAME_LAYER && slot == SLOT_BO)
      tv_die("%s: tensor %s: o_proj biases are not supported", m->dir, n);
    if (k == NAME_LAYER && slot >= SLOT_BQ && slot <= SLOT_BV && !c->attention_bias)
      tv_die("%s: tensor %s is a bias but config.json says attention_bias false", m->dir, n);
    if (k != NAME_UNKNOWN) continue;
    if (nunk++ < 6) {
      int w = snprintf(list + used, sizeof list - used, "%s%s", nunk > 1 ? ", " : "", n);
      if (w > 0) used = used + (size_t)w < sizeof list ? used + (size_t)w : sizeof list - 1;
    }
  }
  if (nunk)
    fprintf(stderr, "tvaccine: note: %s: ignoring %d tensor%s a Llama model does not use: %s%s\n",
            m->dir, nunk, nunk > 1 ? "s" : "", list, nunk > 6 ? ", ..." : "");
}

HfModel *hf_model_open(const char *dir) {
  HfModel *m = tv_calloc(1, sizeof(HfModel));
  m->dir = xstrdup(dir);
  char *path = hf_path_join(dir, "config.json");
  size_t len;
  char *text = hf_read_text_file(path, &len);
  if (!text) tv_die("cannot read %s: %s", path, strerror(errno));
  char err[512];
  if (hf_config_parse(text, len, path, &m->cfg, err, sizeof err)) tv_die("%s", err);
  free(text);
  free(path);

  /* transformers takes model.safetensors over an index when both are there; so do we. */
  char *single = hf_path_join(dir, "model.safetensors");
  path = hf_path_join(dir, "model.safetensors.index.json");
  if (access(single, F_OK) == 0) {
    /* One file: its header is the list of names (only header pages are touched). */
    int cap = 0, f = add_file(m, "model.safetensors");
    SafeTensors *st = file_at(m, f);
    for (int i = 0; i < safetensors_count(st); i++)
      add_name(m, safetensors_tensor(st, i)->name, f, &cap);
  } else if ((text = hf_read_text_file(path, &len))) {
    read_index(m, path, text, len);
    free(text);
  } else if (errno != ENOENT) {
    tv_die("cannot read %s: %s", path, strerror(errno));
  } else {
    char *bin = hf_path_join(dir, "pytorch_model.bin");
    char *bin_idx = hf_path_join(dir, "pytorch_model.bin.index.json");
    if (access(bin, F_OK) == 0 || access(bin_idx, F_OK) == 0)
      tv_die("%s holds PyTorch .bin weights; only safetensors are read (convert them, e.g. "
             "save_pretrained(..., safe_serialization=True))", dir);
    tv_die("%s has neither model.safetensors nor model.safetensors.index.json", dir);
  }
  free(single);
  free(path);
  qsort(m->map, (size_t)m->nmap, sizeof(MapEntry), cmp_entry);
  for (int i = 1; i < m->nmap; i++)
    if (!strcmp(m->map[i].name, m->map[i - 1].name))
      tv_die("%s: tensor '%s' is listed twice in the weight index", dir, m->map[i].name);
  check_names(m);
  return m;
}

void hf_model_close(HfModel *m) {
  if (!m) return;
  for (int i = 0; i < m->nmap; i++) free(m->map[i].name);
  for (int i = 0; i < m->nfiles; i++) {
    free(m->files[i]);
    safetensors_close(m->open[i]);
  }
  free(m->map);
  free(m->files);
  free(m->open);
  free(m->dir);
  free(m);
}

const HfConfig *hf_model_config(const HfModel *m) { return &m->cfg; }
const char *hf_model_dir(const HfModel *m) { return m->dir; }
int hf_model_files_opened(const HfModel *m) { return m->opened; }

/* One tensor a stage needs: name, destination (backend memory, NULL when only checking)
 * and expected shape. */
typedef struct {
  char name[96];
  void *dst;
  int matrix; /* stored in the stage's weight dtype (else f32: norms, biases) */
  int ndim;
  int64_t shape[2];
  int digested; /* counted in the model digest by this stage (the tied head is not) */
} Want;

static void want(Want *w, int *n, const char *name, void *dst, int64_t d0, int64_t d1,
                 int digested) {
  Want *x = &w[(*n)++];
  snprintf(x->name, sizeof x->name, "%s", name);
  x->dst = dst;
  x->matrix = 0;
  x->ndim = d1 ? 2 : 1;
  x->shape[0] = d0;
  x->shape[1] = d1;
  x->digested = digested;
}

/* The tensors of a stage holding layers [l0, l1) of model c, with the holding rules of
 * stage_create: the embedding on the first stage (and on the last when tied), the final norm
 * and untied head on the last. sw (may be NULL) gives the destinations. */
static int list_wants(const LlamaConfig *c, int l0, int l1, StageWeights *sw, Want *w) {
  int64_t D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
  int64_t HD = (int64_t)c->num_heads * c->head_dim, KD = (int64_t)c->num_kv_heads * c->head_dim;
  int first = l0 == 0, last = l1 == c->num_layers, n = 0;
  if (first || (last && c->tie_word_embeddings)) {
    want(w, &n, "model.embed_tokens.weight", sw ? sw->embed : NULL, V, D, first);
    w[n - 1].matrix = 1;
  }
  for (int l = l0; l < l1; l++) {
    LayerWeights *lw = sw ? &sw->layers[l - l0] : NULL;
    void *dst[SLOT_COUNT] = {0};
    if (lw) {
      void *d[SLOT_COUNT] = {lw->attn_norm, lw->wq, lw->wk, lw->wv, lw->wo, lw->bq,
                              lw->bk, lw->bv, lw->mlp_norm, lw->w_gate, lw->w_up, lw->w_down};
      memcpy(dst, d, sizeof dst);
    }
    int64_t shp[SLOT_COUNT][2] = {{D, 0}, {HD, D}, {KD, D}, {KD, D}, {D, HD}, {HD, 0},
                                  {KD, 0}, {KD, 0}, {D, 0}, {F, D}, {F, D}, {D, F}};
    for (int k = 0; k < SLOT_COUNT; k++) {
      int bias = k == SLOT_BQ || k == SLOT_BK || k == SLOT_BV;
      if (bias && !c->attention_bias) continue;
      char name[96];
      snprintf(name, sizeof name, "model.layers.%d.%s", l, slot_suffix[k]);
      want(w, &n, name, dst[k], shp[k][0], shp[k][1], 1);
      w[n - 1].matrix = shp[k][1] != 0; /* the 2-D ones: projections */
    }
  }
  if (last) want(w, &n, "model.norm.weight", sw ? sw->final_norm : NULL, D, 0, 1);
  if (last && !c->tie_word_embeddings) {
    want(w, &n, "lm_head.weight", sw ? sw->lm_head : NULL, V, D, 1);
    w[n - 1].matrix = 1;
  }
  return n;
}

static void shape_text(char *buf, size_t len, int ndim, const int64_t *shape) {
  size_t used = (size_t)snprintf(buf, len, "[");
  for (int i = 0; i < ndim && used < len; i++)
    used += (size_t)snprintf(buf + used, len - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (used < len) snprintf(buf + used, len - used, "]");
}

/* Every tensor of the stage is present with its config.json shape (one line naming what is
 * not); returns the list, which the caller frees. Reads headers only. c is config.json's
 * shape, but for a headless body (tied, so no lm_head is wanted). */
static Want *checked_wants(HfModel *m, const LlamaConfig *c, int l0, int l1, StageWeights *sw,
                           int *count) {
  TV_CHECK(l0 >= 0 && l0 < l1 && l1 <= c->num_layers, "layers [%d, %d) of %d", l0, l1,
           c->num_layers);
  Want *w = tv_malloc(((size_t)(l1 - l0) * SLOT_COUNT + 4) * sizeof(Want));
  int n = list_wants(c, l0, l1, sw, w);

  /* All missing names in one line before any data is read. */
  char missing[1024] = "";
  size_t used = 0;
  int nmiss = 0;
  for (int i = 0; i < n; i++)
    if (!find_entry(m, w[i].name) && nmiss++ < 8) {
      int k = snprintf(missing + used, sizeof missing - used, "%s%s", nmiss > 1 ? ", " : "", w[i].name);
      if (k > 0) used = used + (size_t)k < sizeof missing ? used + (size_t)k : sizeof missing - 1;
    }
  if (nmiss)
    tv_die("%s: missing %d tensor%s: %s%s", m->dir, nmiss, nmiss > 1 ? "s" : "", missing,
           nmiss > 8 ? ", ..." : "");
  for (int i = 0; i < n; i++) {
    SafeTensors *st = file_at(m, find_entry(m, w[i].name)->file);
    const StTensor *t = safetensors_find(st, w[i].name);
    if (!t)
      tv_die("%s: the weight index puts tensor %s in this file, but it is not there",
             safetensors_path(st), w[i].name);
    int same = t->ndim == w[i].ndim;
    for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == w[i].shape[d];
    if (!same) {
      char got[160], exp[64];
      shape_text(got, sizeof got, t->ndim, t->shape);
      shape_text(exp, sizeof exp, w[i].ndim, w[i].shape);
      tv_die("%s: tensor %s has shape %s, but config.json implies %s", safetensors_path(st),
             w[i].name, got, exp);
    }
  }
  *count = n;
  return w;
}

void hf_model_check_stage(HfModel *m, int l0, int l1) {
  int n;
  free(checked_wants(m, &m->cfg.cfg, l0, l1, NULL, &n));
}

uint64_t hf_model_digest(const HfModel *m) { return m->digest; }

/* headless: the stage is built tied (its "head" is the embedding, never read) to hold a
 * classifier's body whose folder has a score head instead of lm_head. */
static void load_stage(HfModel *m, Stage *s, int headless) {
  const LlamaConfig *a = &m->cfg.cfg, *b = stage_config(s);
  int tie_differs = headless ? !b->tie_word_embeddings
                             : a->tie_word_embeddings != b->tie_word_embeddings;
  if (a->vocab_size != b->vocab_size || a->hidden_size != b->hidden_size ||
      a->intermediate_size != b->intermediate_size || a->num_layers != b->num_layers ||
      a->num_heads != b->num_heads || a->num_kv_heads != b->num_kv_heads ||
      a->head_dim != b->head_dim || tie_differs ||
      a->attention_bias != b->attention_bias)
    tv_die("%s: the stage was built for a different model shape than config.json", m->dir);
  int n;
  Want *w = checked_wants(m, b, stage_first_layer(s), stage_end_layer(s), stage_weights(s), &n);

  Backend *be = stage_backend(s);
  float *host = NULL;
  size_t host_cap = 0;
  m->digest = 0;
  for (int i = 0; i < n; i++) {
    SafeTensors *st = file_at(m, find_entry(m, w[i].name)->file);
    const StTensor *t = safetensors_find(st, w[i].name);
    size_t bytes = (size_t)t->numel * sizeof(float);
    if (bytes > host_cap) {
      free(host);
      host = tv_malloc(bytes);
      host_cap = bytes;
    }
    safetensors_read_f32(st, t, host);
    int64_t bad = st_first_nonfinite(host, (size_t)t->numel);
    if (bad >= 0)
      tv_die("%s: tensor %s holds a non-finite value (%g) at element %lld",
             safetensors_path(st), w[i].name, (double)host[bad], (long long)bad);
    if (w[i].digested) {
      /* Per-tensor digests added up: the sum does not depend on how layers split over ranks. */
      uint64_t h = run_digest_bytes(RUN_DIGEST_SEED, w[i].name, strlen(w[i].name));
      m->digest += run_digest_bytes(h, safetensors_data(st, t), (size_t)(t->end - t->begin));
    }
    /* Into a bf16 stage a bf16 file's values come back bit for bit (widening was exact);
     * f32 / f16 values are rounded to nearest even. */
    if (w[i].matrix)
      stage_matrix_from_host(s, w[i].dst, host, (size_t)t->numel);
    else
      be->from_host(be, w[i].dst, host, bytes);
  }
  free(host);
  free(w);
}

void hf_model_load_stage(HfModel *m, Stage *s) { load_stage(m, s, 0); }

void hf_model_load_headless_stage(HfModel *m, Stage *s) { load_stage(m, s, 1); }

float *hf_model_read_tensor(HfModel *m, const char *name, int *ndim, int64_t *shape) {
  const MapEntry *e = find_entry(m, name);
  if (!e) tv_die("%s: missing tensor %s", m->dir, name);
  SafeTensors *st = file_at(m, e->file);
  const StTensor *t = safetensors_find(st, name);
  if (!t)
    tv_die("%s: the weight index puts tensor %s in this file, but it is not there",
           safetensors_path(st), name);
  if (t->ndim > 2) tv_die("%s: tensor %s has %d dimensions (at most 2 expected)",
                          safetensors_path(st), name, t->ndim);
  *ndim = t->ndim;
  for (int d = 0; d < t->ndim; d++) shape[d] = t->shape[d];
  float *host = tv_malloc(((size_t)t->numel > 0 ? (size_t)t->numel : 1) * sizeof(float));
  safetensors_read_f32(st, t, host);
  int64_t bad = st_first_nonfinite(host, (size_t)t->numel);
  if (bad >= 0)
    tv_die("%s: tensor %s holds a non-finite value (%g) at element %lld", safetensors_path(st),
           name, (double)host[bad], (long long)bad);
  return host;
}
