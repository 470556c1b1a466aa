/* PEFT adapter folders: adapter_config.json as PEFT writes it (target_modules list, suffix,
 * regex, all-linear) and refuses what we cannot compute; write -> read round trips of whole
 * and partial LoRA sets in every dtype; r / shape / name mismatches named clearly. */
#include "hf_test_util.h"

#include <cjson/cJSON.h>

#include "backend.h"
#include "check.h"
#include "lora.h"
#include "model.h"
#include "peft.h"
#include "rng.h"

static Backend *be;
static LlamaConfig model;

static const char *parse(const char *json, PeftConfig *p, char *err) {
  return peft_config_parse(json, strlen(json), "ad/adapter_config.json", model.num_layers, p, err, 512);
}

#define PEFT_HEAD "\"peft_type\": \"LORA\", \"r\": 8, \"lora_alpha\": 16, \"lora_dropout\": 0.05, "

static void expect_mask(const char *json, unsigned mask) {
  PeftConfig p;
  char err[512];
  const char *e = parse(json, &p, err);
  EXPECT(!e, "rejected %s: %s", json, e ? err : "");
  if (!e) EXPECT(p.lora.target_mask == mask, "mask 0x%x, want 0x%x for %s", p.lora.target_mask, mask, json);
}

static void expect_reject(const char *json, const char *need) {
  PeftConfig p;
  char err[512];
  const char *e = parse(json, &p, err);
  EXPECT(e != NULL, "accepted: %s", json);
  if (e) {
    EXPECT(strstr(e, "ad/adapter_config.json: ") == e, "names the file: %s", e);
    EXPECT(strstr(e, need), "'%s' not in: %s", need, e);
  }
}

static void test_config(void) {
  PeftConfig p;
  char err[512];
  /* What PEFT writes, with fields of several PEFT versions we do not use. */
  const char *full = "{\"alpha_pattern\": {}, \"auto_mapping\": null, \"base_model_name_or_path\": "
                     "\"meta-llama/Llama-2-7b-hf\", \"bias\": \"none\", \"fan_in_fan_out\": false, "
                     "\"inference_mode\": true, \"init_lora_weights\": true, \"layer_replication\": null, "
                     "\"layers_pattern\": null, \"layers_to_transform\": null, \"loftq_config\": {}, "
                     "\"lora_alpha\": 16, \"lora_dropout\": 0.05, \"megatron_config\": null, "
                     "\"modules_to_save\": null, \"peft_type\": \"LORA\", \"r\": 8, \"rank_pattern\": {}, "
                     "\"revision\": null, \"target_modules\": [\"v_proj\", \"q_proj\"], "
                     "\"task_type\": \"CAUSAL_LM\", \"use_dora\": false, \"use_rslora\": false}";
  EXPECT(!parse(full, &p, err), "PEFT's own file: %s", err);
  EXPECT(p.lora.r == 8 && p.lora.alpha == 16.0f && p.lora.dropout == 0.05f &&
             p.lora.target_mask == ((1u << LORA_Q) | (1u << LORA_V)) &&
             !strcmp(p.base_model, "meta-llama/Llama-2-7b-hf"), "fields");
  expect_mask("{" PEFT_HEAD "\"target_modules\": [\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\", "
              "\"gate_proj\", \"up_proj\", \"down_proj\"]}", 0x7f);
  expect_mask("{" PEFT_HEAD "\"target_modules\": \"all-linear\"}", 0x7f);
  expect_mask("{" PEFT_HEAD "\"target_modules\": \".*\\\\.(q_proj|v_proj)\"}", (1u << LORA_Q) | (1u << LORA_V));
  expect_mask("{" PEFT_HEAD "\"target_modules\": \".*mlp.*\"}", (1u << LORA_GATE) | (1u << LORA_UP) | (1u << LORA_DOWN));
  expect_mask("{" PEFT_HEAD "\"target_modules\": [\"self_attn.o_proj\", \"mlp.down_proj\", \"fc1\"]}",
              (1u << LORA_O) | (1u << LORA_DOWN));
  /* PEFT defaults: alpha 8, dropout 0; task_type may be absent */
  EXPECT(!parse("{\"peft_type\": \"LORA\", \"r\": 4, \"target_modules\": [\"q_proj\"]}", &p, err) &&
             p.lora.alpha == 8.0f && p.lora.dropout == 0.0f && p.base_model[0] == 0,
         "defaults: %s", err);

  /* A string is a regex matched against the whole module name, so bare "q_proj" selects none. */
  expect_reject("{" PEFT_HEAD "\"target_modules\": \"q_proj\"}", "selects none");
  expect_reject("{" PEFT_HEAD "\"target_modules\": [\"proj\", \"_proj\"]}", "selects none"); /* whole names */
  expect_reject("{" PEFT_HEAD "\"target_modules\": [\"q_proj\", \"lm_head\"]}", "lm_head");
  expect_reject("{" PEFT_HEAD "\"target_modules\": [\"embed_tokens\"]}", "model.embed_tokens");
  expect_reject("{" PEFT_HEAD "\"target_modules\": \".*layers\\\\.0\\\\..*q_proj\"}", "q_proj in 1 of 3 layers");
  expect_reject("{" PEFT_HEAD "\"target_modules\": [\"model.layers.1.self_attn.q_proj\"]}", "in 1 of 3");
  expect_reject("{" PEFT_HEAD "\"target_modules\": \"(\"}", "regex is invalid");
  expect_reject("{" PEFT_HEAD "\"target_modules\": 5}", "target_modules must be");
  expect_reject("{" PEFT_HEAD "\"target_modules\": [1]}", "must list strings");
  expect_reject("{" PEFT_HEAD "\"target_modules\": null}", "target_modules is missing");
  expect_reject("{\"peft_type\": \"PREFIX_TUNING\", \"r\": 8, \"target_modules\": [\"q_proj\"]}", "peft_type");
  expect_reject("{" PEFT_HEAD "\"target_modules\": [\"q_proj\"], \"use_dora\": true}", "use_dora");
  expect_reject("{" PEFT_HEAD "\"target_modules\": [\"q_proj\"], \"use_rslora\": true}", "use_rslora");
  expect_reject("{" PEFT_HEAD "\"target_modules\": [\"q_proj\"], \"bias\": \"all\"}", "bias");
  expect_reject("{" PEFT_HEAD "\"target_modules\": [\"q_proj\"], \"modules_to_save\": [\"lm_head\"]}",
                "modules_to_save");
  expect_reject("{" PEFT_HEAD "\"target_modules\": [\"q_proj\"], \"layers_to_transform\": [0]}",
                "layers_to_transform");
  expect_reject("{" PEFT_HEAD "\"target_modules\": [\"q_proj\"], \"rank_pattern\": {\"q_proj\": 4}}",
                "rank_pattern");
  expect_reject("{" PEFT_HEAD "\"target_modules\": [\"q_proj\"], \"task_type\": \"SEQ_CLS\"}", "task_type");
  expect_reject("{\"peft_type\": \"LORA\", \"r\": 0, \"target_modules\": [\"q_proj\"]}", "r must be");
  expect_reject("{\"peft_type\": \"LORA\", \"r\": 2.5, \"target_modules\": [\"q_proj\"]}", "r must be");
  expect_reject("{\"peft_type\": \"LORA\", \"r\": 4, \"lora_dropout\": 1.5, \"target_modules\": [\"q_proj\"]}",
                "dropout");
  expect_reject("{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": \"16\", \"target_modules\": [\"q_proj\"]}",
                "lora_alpha");
  expect_reject("{\"peft_type\": ", "not valid JSON");

  /* What we write is what PEFT's LoraConfig expects, and reads back the same. */
  PeftConfig w;
  memset(&w, 0, sizeof w);
  w.lora = lora_config_default();
  w.lora.target_mask = (1u << LORA_Q) | (1u << LORA_DOWN);
  snprintf(w.base_model, sizeof w.base_model, "path/with \"quotes\"");
  char *text = peft_config_to_json(&w);
  cJSON *j = cJSON_Parse(text);
  EXPECT(j != NULL, "valid JSON: %s", text);
  EXPECT(!strcmp(cJSON_GetObjectItem(j, "peft_type")->valuestring, "LORA") &&
             cJSON_GetObjectItem(j, "r")->valueint == 8 &&
             !strcmp(cJSON_GetObjectItem(j, "bias")->valuestring, "none") &&
             !strcmp(cJSON_GetObjectItem(j, "task_type")->valuestring, "CAUSAL_LM") &&
             cJSON_IsTrue(cJSON_GetObjectItem(j, "inference_mode")) &&
             cJSON_IsFalse(cJSON_GetObjectItem(j, "fan_in_fan_out")) &&
             cJSON_IsNull(cJSON_GetObjectItem(j, "modules_to_save")) &&
             cJSON_IsNull(cJSON_GetObjectItem(j, "layers_to_transform")) &&
             cJSON_GetArraySize(cJSON_GetObjectItem(j, "target_modules")) == 2 &&
             !strcmp(cJSON_GetObjectItem(j, "base_model_name_or_path")->valuestring, "path/with \"quotes\""),
         "written fields: %s", text);
  EXPECT(strstr(text, "\"lora_dropout\":\t0.1,") || strstr(text, "\"lora_dropout\": 0.1,") ||
             strstr(text, "\"lora_dropout\":0.1"), "dropout written as 0.1: %s", text);
  cJSON_Delete(j);
  EXPECT(!parse(text, &p, err), "re-parse: %s", err);
  EXPECT(p.lora.r == w.lora.r && p.lora.alpha == w.lora.alpha && p.lora.dropout == w.lora.dropout &&
             p.lora.target_mask == w.lora.target_mask && !strcmp(p.base_model, w.base_model),
         "round trip of the config");
  free(text);
}

/* ---- tensors ---- */

static float convert(float x, StDtype dt) {
  if (dt == ST_F16) return st_f16_to_f32(st_f32_to_f16(x));
  if (dt == ST_BF16) return st_bf16_to_f32(st_f32_to_bf16(x));
  return x;
}

static LoraSet *random_set(const LoraConfig *lc, int l0, int l1, uint64_t seed) {
  LoraSet *s = lora_set_create(be, lc, &model, l0, l1);
  size_t n = (size_t)(l1 - l0) * s->layer_numel;
  float *h = malloc(n * sizeof(float));
  Rng r = rng_make(seed, 3);
  for (size_t i = 0; i < n; i++) h[i] = (float)(rng_next_double(&r) * 2 - 1);
  be->from_host(be, s->params, h, n * sizeof(float));
  free(h);
  return s;
}

static float *host_params(LoraSet *s) {
  size_t n = (size_t)(s->l1 - s->l0) * s->layer_numel;
  float *h = malloc(n * sizeof(float) + 1);
  be->to_host(be, h, s->params, n * sizeof(float));
  return h;
}

static void test_round_trip(StDtype dt) {
  LoraConfig lc = lora_config_default();
  lc.target_mask = 0x7f & ~(1u << LORA_K); /* a gap in the targets */
  LoraSet *full = random_set(&lc, 0, model.num_layers, 17 + (uint64_t)dt);
  char *dir = scratch_dir("peft");
  peft_save(dir, &model, be, full, "base/model", dt);
  char *tmp = path_in(dir, "adapter_model.safetensors.tmp");
  EXPECT(!file_exists(tmp), "no temporary file left");
  PeftConfig pc = peft_read_config(dir, model.num_layers);
  EXPECT(pc.lora.r == lc.r && pc.lora.alpha == lc.alpha && pc.lora.target_mask == lc.target_mask &&
             !strcmp(pc.base_model, "base/model"), "config read back");

  float *want = host_params(full);
  /* whole set, then a middle stage's layers */
  int ranges[2][2] = {{0, 3}, {1, 2}};
  for (int k = 0; k < 2; k++) {
    LoraSet *s = lora_set_create(be, &lc, &model, ranges[k][0], ranges[k][1]);
    peft_load(dir, &model, be, s);
    float *got = host_params(s);
    size_t n = (size_t)(s->l1 - s->l0) * s->layer_numel, off = (size_t)s->l0 * s->layer_numel, bad = 0;
    for (size_t i = 0; i < n; i++) {
      float w = convert(want[off + i], dt);
      bad += memcmp(&w, &got[i], 4) != 0;
    }
    EXPECT(bad == 0, "%s layers [%d, %d): %zu values differ", st_dtype_name(dt), s->l0, s->l1, bad);
    /* the A of one adapter really is at its LoraSet pointer (layout agreement) */
    LoraAdapter *a = &s->layers[0][LORA_DOWN];
    float first;
    be->to_host(be, &first, a->A, sizeof(float));
    LoraAdapter *fa = &full->layers[s->l0][LORA_DOWN];
    float fw;
    be->to_host(be, &fw, fa->A, sizeof(float));
    EXPECT(first == convert(fw, dt), "down_proj A of layer %d lands at its pointer", s->l0);
    free(got);
    lora_set_destroy(be, s);
  }

  /* Host-array writer of all layers == the LoraSet writer, byte for byte. */
  char *dir2 = scratch_dir("peft2");
  PeftConfig p2;
  memset(&p2, 0, sizeof p2);
  p2.lora = lc;
  snprintf(p2.base_model, sizeof p2.base_model, "base/model");
  peft_write_host(dir2, &p2, &model, 0, model.num_layers, want, dt);
  const char *files[] = {"adapter_model.safetensors", "adapter_config.json"};
  for (int f = 0; f < 2; f++) {
    char *a = path_in(dir, files[f]), *b = path_in(dir2, files[f]);
    size_t la, lb;
    char *x = read_all(a, &la), *y = read_all(b, &lb);
    EXPECT(x && y && la == lb && memcmp(x, y, la) == 0, "%s identical from host arrays", files[f]);
    free(x), free(y), free(a), free(b);
  }

  /* A partial set writes only its layers. */
  LoraSet *part = random_set(&lc, 2, 3, 99);
  peft_save(dir2, &model, be, part, NULL, dt);
  char *ap = path_in(dir2, "adapter_model.safetensors");
  SafeTensors *st = safetensors_open(ap);
  EXPECT(safetensors_count(st) == 2 * 6, "partial adapter holds %d tensors", safetensors_count(st));
  EXPECT(safetensors_find(st, "base_model.model.model.layers.2.mlp.up_proj.lora_B.weight") &&
             !safetensors_find(st, "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight") &&
             !safetensors_find(st, "base_model.model.model.layers.2.self_attn.k_proj.lora_A.weight"),
         "partial adapter names");
  const StTensor *t = safetensors_find(st, "base_model.model.model.layers.2.self_attn.o_proj.lora_A.weight");
  EXPECT(t && t->ndim == 2 && t->shape[0] == 8 && t->shape[1] == model.num_heads * model.head_dim,
         "o_proj A is [r, H*Dh]");
  t = safetensors_find(st, "base_model.model.model.layers.2.mlp.gate_proj.lora_B.weight");
  EXPECT(t && t->shape[0] == model.intermediate_size && t->shape[1] == 8, "gate B is [F, r]");
  EXPECT(safetensors_metadata(st, "format") && !strcmp(safetensors_metadata(st, "format"), "pt"),
         "format pt metadata (transformers checks it)");
  safetensors_close(st);
  free(ap);
  lora_set_destroy(be, part);
  free(want);
  free(tmp);
  scratch_free(dir2);
  scratch_free(dir);
  lora_set_destroy(be, full);
}

/* ---- mismatches ---- */

static const char *g_dir;
static LoraConfig g_lc;
static void load_into(void *arg) {
  (void)arg;
  LoraSet *s = lora_set_create(be, &g_lc, &model, 0, model.num_layers);
  peft_load(g_dir, &model, be, s);
  lora_set_destroy(be, s);
}

/* Replaces dir's adapter tensors: drop one name, add one with a given shape. */
static void doctor(const char *dir, const char *drop, const char *add, int64_t d0, int64_t d1) {
  char *p = path_in(dir, "adapter_model.safetensors");
  SafeTensors *st = safetensors_open(p);
  StWriter *w = st_writer_create(p);
  float *buf = calloc(1 << 16, sizeof(float));
  for (int i = 0; i < safetensors_count(st); i++) {
    const StTensor *t = safetensors_tensor(st, i);
    if (drop && !strcmp(drop, t->name)) continue;
    safetensors_read_f32(st, t, buf);
    st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, buf);
  }
  int64_t shape[2] = {d0, d1};
  if (add) st_writer_add(w, add, ST_F32, 2, shape, buf);
  st_writer_finish(w);
  safetensors_close(st);
  free(buf);
  free(p);
}

static void test_mismatches(void) {
  LoraConfig lc = lora_config_default();
  LoraSet *full = random_set(&lc, 0, model.num_layers, 5);
  char *dir = scratch_dir("peftbad");
  g_dir = dir;
  peft_save(dir, &model, be, full, NULL, ST_F32);

  g_lc = lc;
  g_lc.r = 4;
  EXPECT_DIES(load_into, NULL, "adapter_config.json", "r 8 does not match", "r 4");
  g_lc = lc;
  g_lc.alpha = 2;
  EXPECT_DIES(load_into, NULL, "lora_alpha 1 does not match");
  g_lc = lc;
  g_lc.target_mask = 1;
  EXPECT_DIES(load_into, NULL, "target_modules differ");
  g_lc = lc;

  const char *qa = "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight";
  doctor(dir, qa, NULL, 0, 0);
  EXPECT_DIES(load_into, NULL, "adapter_model.safetensors", "missing tensor", qa);
  doctor(dir, NULL, qa, 8, model.hidden_size + 1);
  EXPECT_DIES(load_into, NULL, qa, "[8, 17]", "expected [8, 16]");
  peft_save(dir, &model, be, full, NULL, ST_F32);
  doctor(dir, NULL, "base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight", 8, 16);
  EXPECT_DIES(load_into, NULL, "layers.9", "for layer 9", "3 layers");

  /* An adapter on fewer targets than its tensors claim */
  lc.target_mask = (1u << LORA_Q) | (1u << LORA_V);
  LoraSet *qv = random_set(&lc, 0, model.num_layers, 6);
  peft_save(dir, &model, be, qv, NULL, ST_F32);
  doctor(dir, NULL, "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight", 8, 16);
  g_lc = lc;
  EXPECT_DIES(load_into, NULL, "k_proj", "target_modules does not list");

  /* Names that are no LoRA tensor: one note, then a normal load. */
  peft_save(dir, &model, be, qv, NULL, ST_F32);
  doctor(dir, NULL, "base_model.model.lm_head.weight", 2, 2);
  int code;
  char *msg = run_captured(load_into, NULL, &code);
  EXPECT(code == 0 && strstr(msg, "note:") && strstr(msg, "base_model.model.lm_head.weight"),
         "unknown tensor noted: %d %s", code, msg);
  free(msg);

  char *cp = path_in(dir, "adapter_config.json");
  write_bytes(cp, "{\"peft_type\": \"LORA\"", 20);
  EXPECT_DIES(load_into, NULL, "adapter_config.json", "not valid JSON");
  remove(cp);
  EXPECT_DIES(load_into, NULL, "cannot read", "adapter_config.json");
  free(cp);
  lora_set_destroy(be, qv);
  lora_set_destroy(be, full);
  scratch_free(dir);
}

int main(void) {
  be = backend_cpu_create(1);
  model = llama_config_default(32, 16, 24, 3, 4, 2);
  model.head_dim = 6;
  test_config();
  test_round_trip(ST_F32);
  test_round_trip(ST_F16);
  test_round_trip(ST_BF16);
  test_mismatches();
  backend_destroy(be);
  return tv_test_report("peft");
}
