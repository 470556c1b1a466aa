/* Hugging Face model folders: config.json variants and errors, write -> read round trips in
 * every dtype and stage split, sharded folders opening only the shards a stage needs,
 * unknown tensors noted, missing / misshapen tensors rejected by name. */
#include "hf_test_util.h"

#include <cjson/cJSON.h>
#include <math.h>

#include "backend.h"
#include "check.h"
#include "hf_model.h"
#include "model.h"
#include "safetensors.h"

static Backend *be;

/* ---- config.json ---- */

static const char *parse(const char *json, HfConfig *h, char *err, size_t n) {
  return hf_config_parse(json, strlen(json), "cfg/config.json", h, err, n);
}

#define BASE "\"vocab_size\": 100, \"hidden_size\": 64, \"intermediate_size\": 96, " \
             "\"num_hidden_layers\": 3, \"num_attention_heads\": 8"

static void test_config_variants(void) {
  HfConfig h;
  char err[512];
  const char *e = parse("{" BASE ", \"bos_token_id\": 1, \"eos_token_id\": 2}", &h, err, sizeof err);
  EXPECT(!e, "minimal config: %s", err);
  EXPECT(h.cfg.num_kv_heads == 8 && h.cfg.head_dim == 8, "defaults kv %d head_dim %d",
         h.cfg.num_kv_heads, h.cfg.head_dim);
  EXPECT(!h.cfg.tie_word_embeddings && !h.cfg.attention_bias, "untied, no bias by default");
  EXPECT(h.cfg.rope_theta == 10000.0f && h.cfg.rope_scaling == ROPE_SCALING_NONE, "rope default");
  EXPECT(h.bos_id == 1 && h.n_eos == 1 && h.eos_ids[0] == 2 && h.pad_id == -1, "ids");
  EXPECT(!strcmp(h.model_type, "llama") && h.dtype == ST_F32, "model_type/dtype defaults");

  e = parse("{" BASE ", \"num_key_value_heads\": 2, \"head_dim\": 16, \"rms_norm_eps\": 1e-05, "
            "\"rope_theta\": 500000.0, \"torch_dtype\": \"bfloat16\", \"model_type\": \"mistral\"}",
            &h, err, sizeof err);
  EXPECT(!e, "GQA/head_dim: %s", err);
  EXPECT(h.cfg.num_kv_heads == 2 && h.cfg.head_dim == 16 && h.cfg.rms_norm_eps == 1e-5f &&
             h.cfg.rope_theta == 500000.0f && h.dtype == ST_BF16 && !strcmp(h.model_type, "mistral"),
         "GQA fields");
  e = parse("{" BASE ", \"head_dim\": null, \"num_key_value_heads\": null}", &h, err, sizeof err);
  EXPECT(!e && h.cfg.head_dim == 8 && h.cfg.num_kv_heads == 8, "null head_dim / kv: %s", e ? err : "");

  e = parse("{" BASE ", \"rope_scaling\": {\"factor\": 32.0, \"high_freq_factor\": 4.0, "
            "\"low_freq_factor\": 1.0, \"original_max_position_embeddings\": 8192, "
            "\"rope_type\": \"llama3\"}, \"eos_token_id\": [5, 6, 7]}", &h, err, sizeof err);
  EXPECT(!e, "llama3: %s", err);
  EXPECT(h.cfg.rope_scaling == ROPE_SCALING_LLAMA3 && h.cfg.rope_factor == 32.0f &&
             h.cfg.rope_high_freq_factor == 4.0f && h.cfg.rope_low_freq_factor == 1.0f &&
             h.cfg.rope_original_max_pos == 8192, "llama3 fields");
  EXPECT(h.n_eos == 3 && h.eos_ids[0] == 5 && h.eos_ids[2] == 7, "eos list");
  e = parse("{" BASE ", \"rope_scaling\": {\"factor\": 8, \"high_freq_factor\": 4, "
            "\"low_freq_factor\": 1, \"original_max_position_embeddings\": 8192, "
            "\"type\": \"llama3\"}}", &h, err, sizeof err);
  EXPECT(!e && h.cfg.rope_scaling == ROPE_SCALING_LLAMA3 && h.cfg.rope_factor == 8.0f,
         "llama3 via 'type': %s", e ? err : "");
  e = parse("{" BASE ", \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1000000.0}}",
            &h, err, sizeof err);
  EXPECT(!e && h.cfg.rope_theta == 1e6f && h.cfg.rope_scaling == ROPE_SCALING_NONE,
         "rope_parameters default: %s", e ? err : "");
  e = parse("{" BASE ", \"rope_theta\": 7.0, \"rope_parameters\": {\"rope_type\": \"llama3\", "
            "\"rope_theta\": 500000.0, \"factor\": 8.0, \"low_freq_factor\": 1.0, "
            "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}",
            &h, err, sizeof err);
  EXPECT(!e && h.cfg.rope_theta == 5e5f && h.cfg.rope_scaling == ROPE_SCALING_LLAMA3,
         "rope_parameters llama3: %s", e ? err : "");
  e = parse("{" BASE ", \"rope_scaling\": null, \"tie_word_embeddings\": true, "
            "\"attention_bias\": true, \"eos_token_id\": null, \"pad_token_id\": -1}", &h, err, sizeof err);
  EXPECT(!e && h.cfg.tie_word_embeddings && h.cfg.attention_bias && h.n_eos == 0 && h.pad_id == -1,
         "tied / bias / null ids: %s", e ? err : "");
  e = parse("{" BASE ", \"model_type\": \"qwen2\"}", &h, err, sizeof err);
  EXPECT(!e && h.cfg.attention_bias, "qwen2 has q/k/v biases without saying so: %s", e ? err : "");
  e = parse("{" BASE ", \"model_type\": \"qwen2\", \"attention_bias\": false}", &h, err, sizeof err);
  EXPECT(!e && !h.cfg.attention_bias, "an explicit attention_bias wins");
  e = parse("{" BASE ", \"architectures\": [\"LlamaForCausalLM\"], \"use_cache\": true, "
            "\"hidden_act\": \"silu\", \"mlp_bias\": false, \"pretraining_tp\": 1}", &h, err, sizeof err);
  EXPECT(!e, "extra fields ignored: %s", e ? err : "");
}

static void expect_config_error(const char *json, const char *need) {
  HfConfig h;
  char err[512];
  const char *e = parse(json, &h, err, sizeof err);
  EXPECT(e != NULL, "accepted: %s", json);
  if (e) {
    EXPECT(strstr(e, "cfg/config.json: ") == e, "names the file: %s", e);
    EXPECT(strstr(e, need), "'%s' not in: %s", need, e);
  }
}

static void test_config_errors(void) {
  expect_config_error("{\"vocab_size\": 100", "not valid JSON");
  expect_config_error("[]", "not a JSON object");
  expect_config_error("{\"vocab_size\": 100, \"intermediate_size\": 96, \"num_hidden_layers\": 3, "
                      "\"num_attention_heads\": 8}", "hidden_size is missing");
  expect_config_error("{" BASE ", \"hidden_size\": 64}", "field hidden_size appears twice");
  expect_config_error("{\"vocab_size\": 100, \"hidden_size\": \"64\", \"intermediate_size\": 96, "
                      "\"num_hidden_layers\": 3, \"num_attention_heads\": 8}", "hidden_size must be an integer");
  expect_config_error("{\"vocab_size\": 100, \"hidden_size\": 64.5, \"intermediate_size\": 96, "
                      "\"num_hidden_layers\": 3, \"num_attention_heads\": 8}", "hidden_size must be an integer");
  expect_config_error("{" BASE ", \"model_type\": \"gemma\"}", "model_type 'gemma'");
  expect_config_error("{" BASE ", \"hidden_act\": \"gelu\"}", "hidden_act");
  expect_config_error("{" BASE ", \"mlp_bias\": true}", "mlp_bias");
  expect_config_error("{\"vocab_size\": 100, \"hidden_size\": 60, \"intermediate_size\": 96, "
                      "\"num_hidden_layers\": 3, \"num_attention_heads\": 8}", "not divisible");
  expect_config_error("{" BASE ", \"num_key_value_heads\": 3}", "num_key_value_heads 3");
  expect_config_error("{" BASE ", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}",
                      "rope_scaling type 'linear' is not supported");
  expect_config_error("{" BASE ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 2.0}}",
                      "'yarn'");
  expect_config_error("{" BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}}",
                      "rope_scaling.low_freq_factor");
  expect_config_error("{" BASE ", \"rope_scaling\": 3}", "rope_scaling must be an object");
  expect_config_error("{" BASE ", \"eos_token_id\": 100}", "eos_token_id 100 is not below vocab_size");
  expect_config_error("{" BASE ", \"eos_token_id\": [1, \"x\"]}", "eos_token_id");
  expect_config_error("{" BASE ", \"tie_word_embeddings\": 1}", "tie_word_embeddings must be true or false");
  expect_config_error("{" BASE ", \"rms_norm_eps\": 0}", "rms_norm_eps");
}

static void test_config_json_round_trip(void) {
  HfConfig h, back;
  char err[512];
  EXPECT(!parse("{" BASE ", \"num_key_value_heads\": 4, \"head_dim\": 12, \"rms_norm_eps\": 1e-06, "
                "\"rope_theta\": 500000, \"rope_scaling\": {\"factor\": 32.0, \"high_freq_factor\": 4.0, "
                "\"low_freq_factor\": 1.0, \"original_max_position_embeddings\": 8192, "
                "\"rope_type\": \"llama3\"}, \"bos_token_id\": 0, \"eos_token_id\": [1, 2], "
                "\"pad_token_id\": 3, \"tie_word_embeddings\": true, \"max_position_embeddings\": 4096}",
                &h, err, sizeof err), "%s", err);
  char *text = hf_config_to_json(&h);
  EXPECT(strstr(text, "\"rms_norm_eps\": 1e-06,") && strstr(text, "\"rope_theta\": 500000.0,") &&
             strstr(text, "\"factor\": 32.0,"),
         "floats written in their shortest form: %s", text);
  EXPECT(!hf_config_parse(text, strlen(text), "rt", &back, err, sizeof err), "re-parse: %s", err);
  EXPECT(memcmp(&h.cfg, &back.cfg, sizeof h.cfg) == 0, "LlamaConfig survives the round trip");
  EXPECT(back.n_eos == 2 && back.eos_ids[1] == 2 && back.bos_id == 0 && back.pad_id == 3 &&
             back.max_position_embeddings == 4096, "ids survive");
  cJSON *j = cJSON_Parse(text);
  EXPECT(j && !strcmp(cJSON_GetObjectItem(j, "model_type")->valuestring, "llama") &&
             cJSON_IsArray(cJSON_GetObjectItem(j, "architectures")), "architectures / model_type");
  cJSON_Delete(j);
  free(text);
  /* q/k/v biases are written as Qwen2 (Llama's attention_bias would add an o_proj bias). */
  h.cfg.attention_bias = 1;
  text = hf_config_to_json(&h);
  EXPECT(strstr(text, "\"model_type\": \"qwen2\"") && !strstr(text, "attention_bias"), "%s", text);
  EXPECT(!hf_config_parse(text, strlen(text), "rt", &back, err, sizeof err) && back.cfg.attention_bias,
         "qwen2 re-parse: %s", err);
  free(text);
}

/* ---- model folders ---- */

static LlamaConfig small_config(int tied, int bias) {
  LlamaConfig c = llama_config_default(32, 16, 24, 4, 4, 2);
  c.head_dim = 6; /* H * Dh = 24 != D: shapes must come from head_dim */
  c.tie_word_embeddings = tied;
  c.attention_bias = bias;
  return c;
}

static Stage *make_stage(const LlamaConfig *c, int l0, int l1) {
  LoraConfig lc = lora_config_default();
  return stage_create(be, c, &lc, l0, l1, 1, 4);
}

static float convert(float x, StDtype dt) {
  if (dt == ST_F16) return st_f16_to_f32(st_f32_to_f16(x));
  if (dt == ST_BF16) return st_bf16_to_f32(st_f32_to_bf16(x));
  return x;
}

/* Counts elements of b that differ from convert(a). */
static size_t diff(const float *a, const float *b, size_t n, StDtype dt) {
  if (!a || !b) return a == b ? 0 : 1;
  float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
  be->to_host(be, x, a, n * sizeof(float));
  be->to_host(be, y, b, n * sizeof(float));
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    float w = convert(x[i], dt);
    bad += memcmp(&w, &y[i], 4) != 0;
  }
  free(x);
  free(y);
  return bad;
}

/* part's tensors equal full's (after conversion through dt). */
static void compare_stage(Stage *full, Stage *part, StDtype dt, const char *what) {
  const LlamaConfig *c = stage_config(full);
  size_t D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
  size_t HD = (size_t)c->num_heads * c->head_dim, KD = (size_t)c->num_kv_heads * c->head_dim;
  StageWeights *a = stage_weights(full), *b = stage_weights(part);
  size_t bad = 0;
  for (int l = stage_first_layer(part); l < stage_end_layer(part); l++) {
    LayerWeights *x = &a->layers[l], *y = &b->layers[l - stage_first_layer(part)];
    bad += diff(x->attn_norm, y->attn_norm, D, dt) + diff(x->wq, y->wq, HD * D, dt) +
           diff(x->wk, y->wk, KD * D, dt) + diff(x->wv, y->wv, KD * D, dt) +
           diff(x->wo, y->wo, D * HD, dt) + diff(x->mlp_norm, y->mlp_norm, D, dt) +
           diff(x->w_gate, y->w_gate, F * D, dt) + diff(x->w_up, y->w_up, F * D, dt) +
           diff(x->w_down, y->w_down, D * F, dt);
    if (c->attention_bias)
      bad += diff(x->bq, y->bq, HD, dt) + diff(x->bk, y->bk, KD, dt) + diff(x->bv, y->bv, KD, dt);
  }
  if (b->embed) bad += diff(a->embed, b->embed, V * D, dt);
  if (b->final_norm) bad += diff(a->final_norm, b->final_norm, D, dt);
  if (b->lm_head && b->lm_head != b->embed) bad += diff(a->lm_head, b->lm_head, V * D, dt);
  EXPECT(bad == 0, "%s: %zu elements differ", what, bad);
}

/* A full model with random weights (norms randomised too, so they are checked). */
static Stage *random_model(const LlamaConfig *c, uint64_t seed) {
  Stage *s = make_stage(c, 0, c->num_layers);
  stage_init_random_weights(s, seed, 0.5f);
  StageWeights *w = stage_weights(s);
  float tmp[64];
  for (int i = 0; i < c->hidden_size; i++) tmp[i] = 1.0f + 0.01f * (float)(i + seed % 7);
  for (int l = 0; l < c->num_layers; l++)
    be->from_host(be, w->layers[l].mlp_norm, tmp, (size_t)c->hidden_size * sizeof(float));
  be->from_host(be, w->final_norm, tmp, (size_t)c->hidden_size * sizeof(float));
  return s;
}

static void test_round_trip(int tied, int bias, StDtype dt) {
  LlamaConfig c = small_config(tied, bias);
  Stage *full = random_model(&c, 11 + (uint64_t)dt);
  char *dir = scratch_dir("hf");
  HfConfig hc = hf_config_from_llama(&c);
  hc.bos_id = 1, hc.eos_ids[0] = 2, hc.n_eos = 1;
  hf_model_write(dir, &hc, full, dt, 0);
  char *single = path_in(dir, "model.safetensors"), *idx = path_in(dir, "model.safetensors.index.json");
  EXPECT(file_exists(single) && !file_exists(idx), "one file, no index");
  HfModel *m = hf_model_open(dir);
  EXPECT(hf_model_config(m)->dtype == dt && hf_model_config(m)->eos_ids[0] == 2, "config.json read back");
  EXPECT(memcmp(&hf_model_config(m)->cfg, &c, sizeof c) == 0, "LlamaConfig read back");
  int splits[3][2] = {{0, 4}, {0, 1}, {1, 4}};
  for (int k = 0; k < 3; k++) {
    Stage *s = make_stage(&c, splits[k][0], splits[k][1]);
    hf_model_load_stage(m, s);
    char what[96];
    snprintf(what, sizeof what, "%s tied %d bias %d layers [%d, %d)", st_dtype_name(dt), tied, bias,
             splits[k][0], splits[k][1]);
    compare_stage(full, s, dt, what);
    stage_destroy(s);
  }
  hf_model_close(m);
  free(single);
  free(idx);
  scratch_free(dir);
  stage_destroy(full);
}

/* Distinct shard files that hold tensors of layers [l0, l1), read from the index itself. */
static int shards_for_layers(const char *dir, int l0, int l1, char files[][64], int *nfiles) {
  char *p = path_in(dir, "model.safetensors.index.json");
  char *text = read_all(p, NULL);
  free(p);
  cJSON *root = cJSON_Parse(text), *wm = cJSON_GetObjectItem(root, "weight_map"), *e;
  int need = 0;
  *nfiles = 0;
  char used[64][64];
  cJSON_ArrayForEach(e, wm) {
    int seen = 0;
    for (int i = 0; i < *nfiles; i++) seen |= !strcmp(files[i], e->valuestring);
    if (!seen) snprintf(files[(*nfiles)++], 64, "%s", e->valuestring);
    int l;
    if (sscanf(e->string, "model.layers.%d.", &l) == 1 && l >= l0 && l < l1) {
      int dup = 0;
      for (int i = 0; i < need; i++) dup |= !strcmp(used[i], e->valuestring);
      if (!dup) snprintf(used[need++], 64, "%s", e->valuestring);
    }
  }
  /* files[] then lists the needed ones first */
  for (int i = 0; i < *nfiles; i++) {
    int is_needed = 0;
    for (int j = 0; j < need; j++) is_needed |= !strcmp(files[i], used[j]);
    if (!is_needed) {
      memcpy(files[63], files[i], 64); /* an unneeded one, for the caller */
    }
  }
  cJSON_Delete(root);
  free(text);
  return need;
}

static const char *g_dir;
static LlamaConfig g_cfg;
static int g_l0, g_l1;
static void load_split(void *arg) {
  (void)arg;
  HfModel *m = hf_model_open(g_dir);
  Stage *s = make_stage(&g_cfg, g_l0, g_l1);
  hf_model_load_stage(m, s);
  stage_destroy(s);
  hf_model_close(m);
}

static void test_sharded(void) {
  LlamaConfig c = small_config(0, 0);
  Stage *full = random_model(&c, 5);
  char *dir = scratch_dir("hfs");
  HfConfig hc = hf_config_from_llama(&c);
  hf_model_write(dir, &hc, full, ST_F32, 0); /* first one file, then shards over it */
  hf_model_write(dir, &hc, full, ST_F32, 4000);
  char *single = path_in(dir, "model.safetensors"), *idx = path_in(dir, "model.safetensors.index.json");
  EXPECT(!file_exists(single) && file_exists(idx), "shards replace the stale single file");
  char files[64][64];
  int nfiles = 0;
  int need = shards_for_layers(dir, 1, 3, files, &nfiles);
  EXPECT(nfiles >= 4 && need < nfiles, "%d shards, %d needed by layers 1-2", nfiles, need);

  /* Ruin a shard the middle stage does not need: it must not even be opened. */
  char *victim = path_in(dir, files[63]);
  write_bytes(victim, "garbage!garbage!", 16);
  HfModel *m = hf_model_open(dir);
  EXPECT(hf_model_files_opened(m) == 0, "open maps no shard (%d)", hf_model_files_opened(m));
  Stage *s = make_stage(&c, 1, 3);
  hf_model_load_stage(m, s);
  EXPECT(hf_model_files_opened(m) == need, "stage [1, 3) opened %d files, needs %d",
         hf_model_files_opened(m), need);
  compare_stage(full, s, ST_F32, "sharded layers [1, 3)");
  stage_destroy(s);
  hf_model_close(m);

  /* A stage that does need the ruined shard gets a clear error naming it. */
  g_dir = dir, g_cfg = c;
  int found = 0;
  for (int l0 = 0; l0 < 4 && !found; l0++) {
    g_l0 = l0, g_l1 = l0 + 1;
    int code;
    char *msg = run_captured(load_split, NULL, &code);
    if (code) {
      found = 1;
      EXPECT(strstr(msg, files[63]) && code < 128, "error names the ruined shard: %s", msg);
    }
    free(msg);
  }
  EXPECT(found, "some stage needs the ruined shard %s", files[63]);

  /* And back to one file: the index goes. */
  hf_model_write(dir, &hc, full, ST_F32, 0);
  EXPECT(file_exists(single) && !file_exists(idx), "single file replaces the stale index");
  free(victim);
  free(single);
  free(idx);
  scratch_free(dir);
  stage_destroy(full);
}

/* Rewrites dir/file without `drop` and with extra tensors added. */
static void rewrite_file(const char *dir, const char *file, const char *const *drop, int ndrop,
                         const char *const *extra, const int64_t (*extra_shape)[2], int nextra) {
  char *p = path_in(dir, file);
  SafeTensors *st = safetensors_open(p);
  StWriter *w = st_writer_create(p);
  float *buf = calloc(4096, sizeof(float));
  for (int i = 0; i < safetensors_count(st); i++) {
    const StTensor *t = safetensors_tensor(st, i);
    int skip = 0;
    for (int k = 0; k < ndrop; k++) skip |= !strcmp(drop[k], t->name);
    if (skip) continue;
    safetensors_read_f32(st, t, buf);
    st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, buf);
  }
  for (int k = 0; k < nextra; k++) st_writer_add(w, extra[k], ST_F32, extra_shape[k][1] ? 2 : 1, extra_shape[k], buf);
  st_writer_finish(w);
  safetensors_close(st);
  free(buf);
  free(p);
}

static void rewrite(const char *dir, const char *const *drop, int ndrop, const char *const *extra,
                    const int64_t (*extra_shape)[2], int nextra) {
  rewrite_file(dir, "model.safetensors", drop, ndrop, extra, extra_shape, nextra);
}

static void open_only(void *arg) {
  (void)arg;
  hf_model_close(hf_model_open(g_dir));
}

static void test_bad_folders(void) {
  LlamaConfig c = small_config(0, 0);
  Stage *full = random_model(&c, 9);
  HfConfig hc = hf_config_from_llama(&c);
  char *dir = scratch_dir("hfb");
  g_dir = dir, g_cfg = c;

  /* Unknown tensors: one note line listing them; loading still works. */
  hf_model_write(dir, &hc, full, ST_F32, 0);
  const char *extra[] = {"model.rotary_emb.inv_freq", "model.layers.7.self_attn.q_proj.weight",
                         "model.layers.01.mlp.up_proj.weight"};
  const int64_t shp[3][2] = {{3, 0}, {2, 2}, {2, 2}};
  rewrite(dir, NULL, 0, extra, shp, 3);
  g_l0 = 0, g_l1 = 4;
  int code;
  char *msg = run_captured(load_split, NULL, &code);
  EXPECT(code == 0, "unknown tensors are not an error: %s", msg);
  EXPECT(strstr(msg, "note:") && strstr(msg, "ignoring 3 tensors") &&
             strstr(msg, "model.rotary_emb.inv_freq") && strstr(msg, "model.layers.7.") &&
             strstr(msg, "model.layers.01."), "note lists the unknown tensors: %s", msg);
  EXPECT(strchr(msg, '\n') && !strchr(msg, '\n')[1], "one note line: %s", msg);
  free(msg);

  /* Missing tensors: named, all of them, only when a stage needs them. */
  hf_model_write(dir, &hc, full, ST_F32, 0);
  const char *drop[] = {"model.layers.2.mlp.up_proj.weight", "model.norm.weight", "lm_head.weight"};
  rewrite(dir, drop, 3, NULL, NULL, 0);
  g_l0 = 0, g_l1 = 4;
  EXPECT_DIES(load_split, NULL, "missing 3 tensors", "model.layers.2.mlp.up_proj.weight",
              "model.norm.weight", "lm_head.weight");
  g_l0 = 0, g_l1 = 2;
  msg = run_captured(load_split, NULL, &code);
  EXPECT(code == 0, "layers [0, 2) need none of the missing tensors: %s", msg);
  free(msg);

  /* Wrong shape */
  hf_model_write(dir, &hc, full, ST_F32, 0);
  const char *q[] = {"model.layers.1.self_attn.k_proj.weight"};
  const int64_t qs[1][2] = {{12, 17}};
  rewrite(dir, q, 1, q, qs, 1);
  g_l0 = 1, g_l1 = 2;
  EXPECT_DIES(load_split, NULL, "model.layers.1.self_attn.k_proj.weight", "[12, 17]", "[12, 16]");

  /* Biases the config denies, and o_proj biases */
  hf_model_write(dir, &hc, full, ST_F32, 0);
  const char *b[] = {"model.layers.0.self_attn.q_proj.bias"};
  const int64_t bs[1][2] = {{24, 0}};
  rewrite(dir, NULL, 0, b, bs, 1);
  EXPECT_DIES(open_only, NULL, "model.layers.0.self_attn.q_proj.bias", "attention_bias false");
  hf_model_write(dir, &hc, full, ST_F32, 0);
  const char *o[] = {"model.layers.0.self_attn.o_proj.bias"};
  rewrite(dir, NULL, 0, o, bs, 1);
  EXPECT_DIES(open_only, NULL, "o_proj.bias", "not supported");

  /* Index problems (the weights moved to part.safetensors: a model.safetensors would win) */
  hf_model_write(dir, &hc, full, ST_F32, 0);
  char *ip = path_in(dir, "model.safetensors.index.json");
  char *single = path_in(dir, "model.safetensors"), *part = path_in(dir, "part.safetensors");
  EXPECT(rename(single, part) == 0, "rename");
  const char *esc = "{\"weight_map\": {\"model.norm.weight\": \"../part.safetensors\"}}";
  write_bytes(ip, esc, strlen(esc));
  EXPECT_DIES(open_only, NULL, "model.safetensors.index.json", "../part.safetensors", "plain file name");
  const char *nomap = "{\"metadata\": {}}";
  write_bytes(ip, nomap, strlen(nomap));
  EXPECT_DIES(open_only, NULL, "weight_map", "missing");
  /* An index that lists a tensor its file lacks. */
  {
    SafeTensors *st = safetensors_open(part);
    size_t cap = 64 + 96 * (size_t)safetensors_count(st), used = 0;
    char *text = malloc(cap);
    used += (size_t)snprintf(text, cap, "{\"weight_map\": {");
    for (int i = 0; i < safetensors_count(st); i++)
      used += (size_t)snprintf(text + used, cap - used, "%s\"%s\": \"part.safetensors\"", i ? ", " : "",
                               safetensors_tensor(st, i)->name);
    snprintf(text + used, cap - used, "}}");
    safetensors_close(st);
    write_bytes(ip, text, strlen(text));
    free(text);
  }
  rewrite_file(dir, "part.safetensors", drop + 1, 1, NULL, NULL, 0);
  g_l0 = 3, g_l1 = 4;
  EXPECT_DIES(load_split, NULL, "part.safetensors", "model.norm.weight", "not there");
  /* With model.safetensors back, it wins over the index (as in transformers). */
  hf_model_write(dir, &hc, full, ST_F32, 0);
  write_bytes(ip, esc, strlen(esc));
  int rc;
  char *out = run_captured(load_split, NULL, &rc);
  EXPECT(rc == 0, "model.safetensors is preferred over an index: %s", out);
  free(out);
  remove(part);
  free(single), free(part);
  remove(ip);

  /* No weights at all, or PyTorch ones */
  char *mp = path_in(dir, "model.safetensors"), *bin = path_in(dir, "pytorch_model.bin");
  remove(mp);
  EXPECT_DIES(open_only, NULL, "neither model.safetensors nor model.safetensors.index.json");
  write_bytes(bin, "x", 1);
  EXPECT_DIES(open_only, NULL, "PyTorch .bin weights");
  remove(bin);
  free(mp), free(bin);

  /* Missing config.json; a stage of another shape */
  char *cp = path_in(dir, "config.json");
  remove(cp);
  EXPECT_DIES(open_only, NULL, "cannot read", "config.json");
  hf_model_write(dir, &hc, full, ST_F32, 0);
  g_cfg.intermediate_size = 20;
  g_l0 = 0, g_l1 = 1;
  EXPECT_DIES(load_split, NULL, "different model shape");
  free(cp);
  free(ip);
  scratch_free(dir);
  stage_destroy(full);
}

static void test_parse_size(void) {
  uint64_t b = 0;
  EXPECT(hf_parse_size("5GB", &b) && b == 5000000000ull, "5GB");
  EXPECT(hf_parse_size("2GiB", &b) && b == 2147483648ull, "2GiB");
  EXPECT(hf_parse_size("500mb", &b) && b == 500000000ull, "500mb");
  EXPECT(hf_parse_size("4096", &b) && b == 4096, "bytes");
  EXPECT(hf_parse_size("1.5KB", &b) && b == 1500, "1.5KB");
  EXPECT(!hf_parse_size("0", &b) && !hf_parse_size("abc", &b) && !hf_parse_size("5XB", &b) &&
             !hf_parse_size("-1GB", &b) && !hf_parse_size("", &b), "bad sizes refused");
}

int main(void) {
  be = backend_cpu_create(1);
  test_config_variants();
  test_config_errors();
  test_config_json_round_trip();
  test_round_trip(0, 0, ST_F32);
  test_round_trip(1, 1, ST_F32);
  test_round_trip(0, 1, ST_F16);
  test_round_trip(1, 0, ST_BF16);
  test_sharded();
  test_bad_folders();
  test_parse_size();
  backend_destroy(be);
  return tv_test_report("hf_model");
}
