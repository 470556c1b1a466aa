/* PEFT LoRA adapter folders: adapter_config.json parsed the way PEFT matches modules
 * (list suffixes or a full-match regex), and the lora_A / lora_B tensors of each layer. */
#include "peft.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "hf_model.h"
#include "json_util.h"

/* The module name PEFT matches target_modules against, inside LlamaForCausalLM. */
static void module_key(char *buf, size_t len, int layer, int t) {
  snprintf(buf, len, "model.layers.%d.%s.%s", layer, lora_target_parent(t), lora_target_name(t));
}

/* PEFT: a key matches a list entry when it equals it or ends with "." + entry. */
static int list_matches(const cJSON *list, const char *key) {
  size_t kl = strlen(key);
  const cJSON *e;
  cJSON_ArrayForEach(e, list) {
    size_t el = strlen(e->valuestring);
    if (!strcmp(key, e->valuestring)) return 1;
    if (kl > el && key[kl - el - 1] == '.' && !strcmp(key + kl - el, e->valuestring)) return 1;
  }
  return 0;
}

static int regex_matches(pcre2_code *re, pcre2_match_data *md, const char *key) {
  return pcre2_match(re, (PCRE2_SPTR)key, strlen(key), 0, PCRE2_ANCHORED | PCRE2_ENDANCHORED, md,
                     NULL) >= 0;
}

/* target_modules -> mask. A target counts only when selected in every layer: adapters on
 * some layers only (layers_to_transform in disguise) are refused rather than half-loaded. */
static int parse_targets(JsonCtx *c, const cJSON *tm, int L, unsigned *mask) {
  pcre2_code *re = NULL;
  pcre2_match_data *md = NULL;
  *mask = 0;
  if (json_absent(tm)) return json_fail(c, "target_modules is missing");
  if (cJSON_IsString(tm)) {
    if (!strcmp(tm->valuestring, "all-linear")) {
      *mask = (1u << LORA_NUM_TARGETS) - 1;
      return 1;
    }
    int code;
    PCRE2_SIZE off;
    re = pcre2_compile((PCRE2_SPTR)tm->valuestring, PCRE2_ZERO_TERMINATED, 0, &code, &off, NULL);
    if (!re) return json_fail(c, "target_modules regex is invalid at character %zu", (size_t)off);
    md = pcre2_match_data_create_from_pattern(re, NULL);
    TV_CHECK(md, "out of memory");
  } else if (cJSON_IsArray(tm)) {
    const cJSON *e;
    cJSON_ArrayForEach(e, tm) {
      if (!cJSON_IsString(e)) return json_fail(c, "target_modules must list strings");
    }
  } else {
    return json_fail(c, "target_modules must be a list of module names or a string");
  }
  int ok = 1;
  char key[128];
  static const char *const unsupported[] = {"lm_head", "model.embed_tokens"};
  for (int i = 0; i < 2 && ok; i++) {
    if (re ? regex_matches(re, md, unsupported[i]) : list_matches(tm, unsupported[i]))
      ok = json_fail(c, "target_modules adapts %s; only the seven projections q_proj ... "
                        "down_proj can carry LoRA here", unsupported[i]);
  }
  for (int t = 0; t < LORA_NUM_TARGETS && ok; t++) {
    int hits = 0;
    for (int l = 0; l < L; l++) {
      module_key(key, sizeof key, l, t);
      hits += re ? regex_matches(re, md, key) : list_matches(tm, key);
    }
    if (hits == L) *mask |= 1u << t;
    else if (hits)
      ok = json_fail(c, "target_modules selects %s in %d of %d layers; adapters on some layers "
                        "only are not supported", lora_target_name(t), hits, L);
  }
  if (ok && !*mask)
    ok = json_fail(c, "target_modules selects none of q_proj, k_proj, v_proj, o_proj, "
                      "gate_proj, up_proj, down_proj");
  pcre2_match_data_free(md);
  pcre2_code_free(re);
  return ok;
}

/* Fields that would change what the adapter computes must be off, or we would load it wrong. */
static int check_unsupported(JsonCtx *c, const cJSON *root) {
  static const char *const flags[] = {"use_dora", "use_rslora", "fan_in_fan_out"};
  for (int i = 0; i < 3; i++) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, flags[i]);
    if (!json_absent(j) && !cJSON_IsFalse(j))
      return json_fail(c, "%s must be false (it is not supported)", flags[i]);
  }
  static const char *const empty[] = {"modules_to_save", "layers_to_transform", "rank_pattern",
                                      "alpha_pattern"};
  for (int i = 0; i < 4; i++) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, empty[i]);
    if (!json_absent(j) && ((!cJSON_IsArray(j) && !cJSON_IsObject(j)) || cJSON_GetArraySize(j) > 0))
      return json_fail(c, "%s must be null or empty (it is not supported)", empty[i]);
  }
  const cJSON *bias = cJSON_GetObjectItemCaseSensitive(root, "bias");
  if (!json_absent(bias) && (!cJSON_IsString(bias) || strcmp(bias->valuestring, "none")))
    return json_fail(c, "bias must be \"none\" (LoRA biases are not supported)");
  const cJSON *task = cJSON_GetObjectItemCaseSensitive(root, "task_type");
  if (!json_absent(task) && (!cJSON_IsString(task) || strcmp(task->valuestring, "CAUSAL_LM")))
    return json_fail(c, "task_type must be \"CAUSAL_LM\"");
  return 1;
}

static int parse_root(JsonCtx *c, const cJSON *root, int L, PeftConfig *p) {
  if (!cJSON_IsObject(root)) return json_fail(c, "the file is not a JSON object");
  const cJSON *pt = cJSON_GetObjectItemCaseSensitive(root, "peft_type");
  if (!cJSON_IsString(pt) || strcmp(pt->valuestring, "LORA"))
    return json_fail(c, "peft_type must be \"LORA\"");
  if (!check_unsupported(c, root)) return 0;
  int r;
  if (!json_as_int(cJSON_GetObjectItemCaseSensitive(root, "r"), &r) || r < 1)
    return json_fail(c, "r must be a positive integer");
  p->lora.r = r;
  /* PEFT's defaults: lora_alpha 8, lora_dropout 0. */
  const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "lora_alpha");
  const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "lora_dropout");
  if (!json_absent(a) && !cJSON_IsNumber(a)) return json_fail(c, "lora_alpha must be a number");
  if (!json_absent(d) && !cJSON_IsNumber(d)) return json_fail(c, "lora_dropout must be a number");
  p->lora.alpha = json_absent(a) ? 8.0f : (float)a->valuedouble;
  p->lora.dropout = json_absent(d) ? 0.0f : (float)d->valuedouble;
  if (!parse_targets(c, cJSON_GetObjectItemCaseSensitive(root, "target_modules"), L,
                     &p->lora.target_mask))
    return 0;
  char msg[256];
  const char *bad = lora_config_validate(&p->lora, msg, sizeof msg);
  if (bad) return json_fail(c, "%s", bad);
  const cJSON *b = cJSON_GetObjectItemCaseSensitive(root, "base_model_name_or_path");
  if (!json_absent(b) && !cJSON_IsString(b))
    return json_fail(c, "base_model_name_or_path must be a string");
  snprintf(p->base_model, sizeof p->base_model, "%s", json_absent(b) ? "" : b->valuestring);
  return 1;
}

const char *peft_config_parse(const char *json, size_t len, const char *label, int num_layers,
                              PeftConfig *out, char *err, size_t errlen) {
  JsonCtx c = {.err = err, .errlen = errlen, .label = label ? label : "adapter_config.json"};
  memset(out, 0, sizeof *out);
  cJSON *root = json_parse(&c, json, len);
  if (!root) return err;
  int ok = parse_root(&c, root, num_layers, out);
  cJSON_Delete(root);
  return ok ? NULL : err;
}

char *peft_config_to_json(const PeftConfig *p) {
  char num[48];
  cJSON *o = cJSON_CreateObject();
  if (p->base_model[0]) cJSON_AddStringToObject(o, "base_model_name_or_path", p->base_model);
  else cJSON_AddNullToObject(o, "base_model_name_or_path");
  cJSON_AddStringToObject(o, "bias", "none");
  cJSON_AddFalseToObject(o, "fan_in_fan_out");
  cJSON_AddTrueToObject(o, "inference_mode");
  cJSON_AddTrueToObject(o, "init_lora_weights");
  cJSON_AddNullToObject(o, "layers_pattern");
  cJSON_AddNullToObject(o, "layers_to_transform");
  /* Numbers as their shortest text: 0.1, not the float's 0.10000000149011612. */
  hf_format_float(num, sizeof num, p->lora.alpha);
  cJSON_AddRawToObject(o, "lora_alpha", num);
  hf_format_float(num, sizeof num, p->lora.dropout);
  if (!strpbrk(num, ".e")) strcat(num, ".0"); /* a float, as PEFT writes it */
  cJSON_AddRawToObject(o, "lora_dropout", num);
  cJSON_AddNullToObject(o, "modules_to_save");
  cJSON_AddStringToObject(o, "peft_type", "LORA");
  cJSON_AddNumberToObject(o, "r", p->lora.r);
  cJSON_AddNullToObject(o, "revision");
  cJSON *tm = cJSON_AddArrayToObject(o, "target_modules");
  for (int t = 0; t < LORA_NUM_TARGETS; t++)
    if (p->lora.target_mask & (1u << t)) cJSON_AddItemToArray(tm, cJSON_CreateString(lora_target_name(t)));
  cJSON_AddStringToObject(o, "task_type", "CAUSAL_LM");
  char *text = cJSON_Print(o);
  TV_CHECK(text, "out of memory");
  cJSON_Delete(o);
  size_t n = strlen(text);
  char *res = tv_malloc(n + 2);
  memcpy(res, text, n);
  memcpy(res + n, "\n", 2);
  cJSON_free(text);
  return res;
}

PeftConfig peft_read_config(const char *dir, int num_layers) {
  char *path = hf_path_join(dir, "adapter_config.json");
  size_t len;
  char *text = hf_read_text_file(path, &len);
  if (!text) tv_die("cannot read %s: %s", path, strerror(errno));
  PeftConfig p;
  char err[512];
  if (peft_config_parse(text, len, path, num_layers, &p, err, sizeof err)) tv_die("%s", err);
  free(text);
  free(path);
  return p;
}

static void target_dims(const LlamaConfig *m, int t, int *in, int *out) {
  lora_target_shape(t, m, in, out);
}

size_t peft_layer_numel(const LoraConfig *lora, const LlamaConfig *model) {
  size_t n = 0;
  for (int t = 0; t < LORA_NUM_TARGETS; t++) {
    if (!(lora->target_mask & (1u << t))) continue;
    int in, out;
    target_dims(model, t, &in, &out);
    n += (size_t)lora->r * in + (size_t)out * lora->r;
  }
  return n;
}

static void tensor_name(char *buf, size_t len, int layer, int t, int is_b) {
  snprintf(buf, len, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", layer,
           lora_target_parent(t), lora_target_name(t), is_b ? 'B' : 'A');
}

/* "base_model.model.model.layers.{i}.{parent}.{name}.lora_{A,B}.weight" -> layer, target. */
static int parse_key(const char *k, long *layer, int *target) {
  static const char prefix[] = "base_model.model.model.layers.";
  if (strncmp(k, prefix, sizeof prefix - 1)) return 0;
  const char *p = k + sizeof prefix - 1;
  if (*p < '0' || *p > '9') return 0;
  long v = 0;
  while (*p >= '0' && *p <= '9' && v < 1000000) v = v * 10 + (*p++ - '0');
  if (*p++ != '.') return 0;
  for (int t = 0; t < LORA_NUM_TARGETS; t++) {
    char rest[64];
    for (int b = 0; b < 2; b++) {
      snprintf(rest, sizeof rest, "%s.%s.lora_%c.weight", lora_target_parent(t), lora_target_name(t),
               b ? 'B' : 'A');
      if (!strcmp(p, rest)) return *layer = v, *target = t, 1;
    }
  }
  return 0;
}

void peft_check_config(const char *dir, const LlamaConfig *model, const LoraConfig *lora) {
  PeftConfig p = peft_read_config(dir, model->num_layers);
  if (p.lora.r != lora->r)
    tv_die("%s/adapter_config.json: r %d does not match the run's LoRA r %d", dir, p.lora.r, lora->r);
  if (p.lora.alpha != lora->alpha)
    tv_die("%s/adapter_config.json: lora_alpha %g does not match the run's LoRA alpha %g", dir,
           p.lora.alpha, lora->alpha);
  if (p.lora.target_mask != lora->target_mask)
    tv_die("%s/adapter_config.json: target_modules differ from the run's LoRA targets", dir);
}

void peft_read_host(const char *dir, const LlamaConfig *model, const LoraConfig *lora, int l0,
                    int l1, float *params) {
  peft_check_config(dir, model, lora);
  char *path = hf_path_join(dir, "adapter_model.safetensors");
  SafeTensors *st = safetensors_open(path);

  /* Every name is checked, not just this stage's: a stray tensor means a mismatched file. */
  int nunk = 0;
  char list[400] = "";
  size_t used = 0;
  for (int i = 0; i < safetensors_count(st); i++) {
    const char *n = safetensors_tensor(st, i)->name;
    long layer;
    int t;
    if (!parse_key(n, &layer, &t)) {
      if (nunk++ < 4) {
        int w = snprintf(list + used, sizeof list - used, "%s%s", nunk > 1 ? ", " : "", n);
        if (w > 0) used = used + (size_t)w < sizeof list ? used + (size_t)w : sizeof list - 1;
      }
      continue;
    }
    if (layer >= model->num_layers)
      tv_die("%s: tensor %s is for layer %ld, but the model has %d layers", path, n, layer,
             model->num_layers);
    if (!(lora->target_mask & (1u << t)))
      tv_die("%s: tensor %s adapts %s, which target_modules does not list", path, n,
             lora_target_name(t));
  }
  if (nunk)
    fprintf(stderr, "tvaccine: note: %s: ignoring %d tensor%s that are no LoRA A/B weights: %s%s\n",
            path, nunk, nunk > 1 ? "s" : "", list, nunk > 4 ? ", ..." : "");

  size_t per_layer = peft_layer_numel(lora, model), off = 0;
  for (int l = l0; l < l1; l++)
    for (int t = 0; t < LORA_NUM_TARGETS; t++) {
      if (!(lora->target_mask & (1u << t))) continue;
      int in, out;
      target_dims(model, t, &in, &out);
      for (int b = 0; b < 2; b++) {
        char name[128];
        tensor_name(name, sizeof name, l, t, b);
        const StTensor *x = safetensors_find(st, name);
        if (!x) tv_die("%s: missing tensor %s", path, name);
        int64_t want0 = b ? out : lora->r, want1 = b ? lora->r : in;
        if (x->ndim != 2 || x->shape[0] != want0 || x->shape[1] != want1) {
          char got[160];
          size_t u = (size_t)snprintf(got, sizeof got, "[");
          for (int d = 0; d < x->ndim && u < sizeof got; d++)
            u += (size_t)snprintf(got + u, sizeof got - u, "%s%lld", d ? ", " : "", (long long)x->shape[d]);
          if (u < sizeof got) snprintf(got + u, sizeof got - u, "]");
          tv_die("%s: tensor %s has shape %s, expected [%lld, %lld] (r %d; %s maps %d -> %d in "
                 "this model)", path, name, got, (long long)want0, (long long)want1, lora->r,
                 lora_target_name(t), in, out);
        }
        safetensors_read_f32(st, x, params + off);
        int64_t bad = st_first_nonfinite(params + off, (size_t)x->numel);
        if (bad >= 0)
          tv_die("%s: tensor %s holds a non-finite value (%g) at element %lld", path, name,
                 (double)params[off + (size_t)bad], (long long)bad);
        off += (size_t)x->numel;
      }
    }
  TV_CHECK(off == (size_t)(l1 - l0) * per_layer, "layout mismatch");
  safetensors_close(st);
  free(path);
}

void peft_load(const char *dir, const LlamaConfig *model, Backend *be, LoraSet *set) {
  size_t n = (size_t)(set->l1 - set->l0) * set->layer_numel;
  TV_CHECK(set->layer_numel == peft_layer_numel(&set->cfg, model), "LoRA set shape mismatch");
  float *host = tv_malloc((n ? n : 1) * sizeof(float));
  peft_read_host(dir, model, &set->cfg, set->l0, set->l1, host);
  be->from_host(be, set->params, host, n * sizeof(float));
  free(host);
}

void peft_write_host(const char *dir, const PeftConfig *cfg, const LlamaConfig *model, int l0,
                     int l1, const float *params, StDtype dtype) {
  hf_make_dir(dir);
  const LoraConfig *lora = &cfg->lora;
  char *path = hf_path_join(dir, "adapter_model.safetensors");
  StWriter *w = st_writer_create(path);
  st_writer_metadata(w, "format", "pt");
  size_t off = 0;
  for (int l = l0; l < l1; l++)
    for (int t = 0; t < LORA_NUM_TARGETS; t++) {
      if (!(lora->target_mask & (1u << t))) continue;
      int in, out;
      target_dims(model, t, &in, &out);
      char name[128];
      int64_t a_shape[2] = {lora->r, in}, b_shape[2] = {out, lora->r};
      tensor_name(name, sizeof name, l, t, 0);
      st_writer_add(w, name, dtype, 2, a_shape, params + off);
      off += (size_t)lora->r * in;
      tensor_name(name, sizeof name, l, t, 1);
      st_writer_add(w, name, dtype, 2, b_shape, params + off);
      off += (size_t)out * lora->r;
    }
  st_writer_finish(w);
  free(path);
  path = hf_path_join(dir, "adapter_config.json");
  char *json = peft_config_to_json(cfg);
  hf_write_text_file(path, json);
  free(json);
  free(path);
}

void peft_save(const char *dir, const LlamaConfig *model, Backend *be, const LoraSet *set,
               const char *base_model, StDtype dtype) {
  size_t n = (size_t)(set->l1 - set->l0) * set->layer_numel;
  TV_CHECK(set->layer_numel == peft_layer_numel(&set->cfg, model), "LoRA set shape mismatch");
  float *host = tv_malloc((n ? n : 1) * sizeof(float));
  be->to_host(be, host, set->params, n * sizeof(float));
  PeftConfig p;
  memset(&p, 0, sizeof p);
  p.lora = set->cfg;
  snprintf(p.base_model, sizeof p.base_model, "%s", base_model ? base_model : "");
  peft_write_host(dir, &p, model, set->l0, set->l1, host, dtype);
  free(host);
}
