/* config.json of a Hugging Face Llama-family model (SPEC section 9) in all the variants
 * transformers has written, to and from HfConfig; parse errors name the field, never exit. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "hf_model.h"
#include "json_util.h"

/* Integer field: absent/null gives dflt unless required. */
static int get_int(JsonCtx *c, const cJSON *o, const char *key, int required, int dflt, int *out) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
  if (json_absent(j)) {
    if (required) return json_fail(c, "%s is missing", key);
    *out = dflt;
    return 1;
  }
  if (!json_as_int(j, out)) return json_fail(c, "%s must be an integer", key);
  return 1;
}

static int get_num(JsonCtx *c, const cJSON *o, const char *key, int required, double dflt,
                   float *out) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
  if (json_absent(j)) {
    if (required) return json_fail(c, "%s is missing", key);
    *out = (float)dflt;
    return 1;
  }
  if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble))
    return json_fail(c, "%s must be a number", key);
  *out = (float)j->valuedouble;
  return 1;
}

static int get_bool(JsonCtx *c, const cJSON *o, const char *key, int dflt, int *out) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
  if (json_absent(j)) {
    *out = dflt;
    return 1;
  }
  if (!cJSON_IsBool(j)) return json_fail(c, "%s must be true or false", key);
  *out = cJSON_IsTrue(j);
  return 1;
}

/* A token id: absent, null or negative (old Llama configs say pad_token_id -1) is "none". */
static int token_id(JsonCtx *c, const cJSON *j, const char *key, int vocab, int *out) {
  int v;
  if (json_absent(j)) return *out = -1, 1;
  if (!json_as_int(j, &v))
    return json_fail(c, "%s must be an integer, a list of integers or null", key);
  if (v >= vocab) return json_fail(c, "%s %d is not below vocab_size %d", key, v, vocab);
  *out = v < 0 ? -1 : v;
  return 1;
}

static int parse_ids(JsonCtx *c, const cJSON *root, HfConfig *h) {
  int V = h->cfg.vocab_size;
  if (!token_id(c, cJSON_GetObjectItemCaseSensitive(root, "bos_token_id"), "bos_token_id", V, &h->bos_id))
    return 0;
  if (!token_id(c, cJSON_GetObjectItemCaseSensitive(root, "pad_token_id"), "pad_token_id", V, &h->pad_id))
    return 0;
  const cJSON *eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
  h->n_eos = 0;
  if (cJSON_IsArray(eos)) {
    if (cJSON_GetArraySize(eos) > HF_MAX_EOS)
      return json_fail(c, "eos_token_id lists more than %d ids", HF_MAX_EOS);
    const cJSON *e;
    cJSON_ArrayForEach(e, eos) {
      int id;
      if (json_absent(e)) return json_fail(c, "eos_token_id list holds a null");
      if (!token_id(c, e, "eos_token_id", V, &id)) return 0;
      if (id >= 0) h->eos_ids[h->n_eos++] = id;
    }
  } else {
    int id;
    if (!token_id(c, eos, "eos_token_id", V, &id)) return 0;
    if (id >= 0) h->eos_ids[h->n_eos++] = id;
  }
  return 1;
}

/* One rope description: rope_scaling (type or rope_type) or transformers v5's
 * rope_parameters (rope_type plus rope_theta). Only "default" and "llama3" compute what
 * this trainer computes; linear, dynamic, yarn, longrope... are refused, not approximated. */
static int parse_rope(JsonCtx *c, const cJSON *r, const char *field, LlamaConfig *m) {
  if (json_absent(r)) return 1;
  if (!cJSON_IsObject(r)) return json_fail(c, "%s must be an object or null", field);
  const cJSON *th = cJSON_GetObjectItemCaseSensitive(r, "rope_theta");
  if (!json_absent(th)) {
    if (!cJSON_IsNumber(th)) return json_fail(c, "%s.rope_theta must be a number", field);
    m->rope_theta = (float)th->valuedouble;
  }
  const cJSON *ty = cJSON_GetObjectItemCaseSensitive(r, "rope_type");
  if (json_absent(ty)) ty = cJSON_GetObjectItemCaseSensitive(r, "type");
  if (json_absent(ty)) {
    if (!json_absent(th)) return 1; /* v5 default rope: only rope_theta */
    return json_fail(c, "%s has no rope_type (or type)", field);
  }
  if (!cJSON_IsString(ty)) return json_fail(c, "%s.rope_type must be a string", field);
  if (!strcmp(ty->valuestring, "default")) {
    m->rope_scaling = ROPE_SCALING_NONE;
    return 1;
  }
  if (strcmp(ty->valuestring, "llama3") != 0)
    return json_fail(c, "%s type '%.40s' is not supported (only llama3 scaling, or none)", field,
                     ty->valuestring);
  m->rope_scaling = ROPE_SCALING_LLAMA3;
  const cJSON *f = cJSON_GetObjectItemCaseSensitive(r, "factor");
  const cJSON *lo = cJSON_GetObjectItemCaseSensitive(r, "low_freq_factor");
  const cJSON *hi = cJSON_GetObjectItemCaseSensitive(r, "high_freq_factor");
  const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(r, "original_max_position_embeddings");
  if (!cJSON_IsNumber(f)) return json_fail(c, "%s.factor is missing or not a number", field);
  if (!cJSON_IsNumber(lo))
    return json_fail(c, "%s.low_freq_factor is missing or not a number", field);
  if (!cJSON_IsNumber(hi))
    return json_fail(c, "%s.high_freq_factor is missing or not a number", field);
  if (!json_as_int(ctx, &m->rope_original_max_pos))
    return json_fail(c, "%s.original_max_position_embeddings is missing or not an integer", field);
  m->rope_factor = (float)f->valuedouble;
  m->rope_low_freq_factor = (float)lo->valuedouble;
  m->rope_high_freq_factor = (float)hi->valuedouble;
  return 1;
}

static StDtype parse_torch_dtype(const cJSON *root) {
  const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "torch_dtype");
  if (!cJSON_IsString(d)) d = cJSON_GetObjectItemCaseSensitive(root, "dtype");
  if (!cJSON_IsString(d)) return ST_F32;
  if (!strcmp(d->valuestring, "float16")) return ST_F16;
  if (!strcmp(d->valuestring, "bfloat16")) return ST_BF16;
  return ST_F32;
}

static int parse_root(JsonCtx *c, const cJSON *root, HfConfig *h) {
  LlamaConfig *m = &h->cfg;
  if (!cJSON_IsObject(root)) return json_fail(c, "the file is not a JSON object");
  /* Python keeps the last of two equal keys and cJSON the first: refuse rather than guess. */
  for (const cJSON *a = root->child; a; a = a->next)
    for (const cJSON *b = a->next; b; b = b->next)
      if (!strcmp(a->string, b->string)) return json_fail(c, "field %s appears twice", a->string);
  const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
  snprintf(h->model_type, sizeof h->model_type, "llama");
  if (!json_absent(mt)) {
    if (!cJSON_IsString(mt)) return json_fail(c, "model_type must be a string");
    if (strcmp(mt->valuestring, "llama") && strcmp(mt->valuestring, "mistral") &&
        strcmp(mt->valuestring, "qwen2"))
      return json_fail(c, "model_type '%.40s' is not supported (llama, mistral or qwen2)",
                       mt->valuestring);
    snprintf(h->model_type, sizeof h->model_type, "%s", mt->valuestring);
  }
  const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
  if (!json_absent(act) && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu")))
    return json_fail(c, "hidden_act must be \"silu\" (SwiGLU MLP)");
  int mlp_bias = 0;
  if (!get_bool(c, root, "mlp_bias", 0, &mlp_bias)) return 0;
  if (mlp_bias) return json_fail(c, "mlp_bias true is not supported");
  if (!get_int(c, root, "vocab_size", 1, 0, &m->vocab_size) ||
      !get_int(c, root, "hidden_size", 1, 0, &m->hidden_size) ||
      !get_int(c, root, "intermediate_size", 1, 0, &m->intermediate_size) ||
      !get_int(c, root, "num_hidden_layers", 1, 0, &m->num_layers) ||
      !get_int(c, root, "num_attention_heads", 1, 0, &m->num_heads) ||
      !get_int(c, root, "num_key_value_heads", 0, m->num_heads, &m->num_kv_heads))
    return 0;
  if (json_absent(cJSON_GetObjectItemCaseSensitive(root, "head_dim"))) {
    if (m->num_heads < 1 || m->hidden_size % m->num_heads)
      return json_fail(c, "head_dim is absent and hidden_size %d is not divisible by "
                          "num_attention_heads %d", m->hidden_size, m->num_heads);
    m->head_dim = m->hidden_size / m->num_heads;
  } else if (!get_int(c, root, "head_dim", 1, 0, &m->head_dim)) {
    return 0;
  }
  if (!get_num(c, root, "rms_norm_eps", 0, 1e-6, &m->rms_norm_eps) ||
      !get_num(c, root, "rope_theta", 0, 10000.0, &m->rope_theta) ||
      !get_bool(c, root, "tie_word_embeddings", 0, &m->tie_word_embeddings) ||
      /* Qwen2's config has no attention_bias: its q, k, v projections always carry one. */
      !get_bool(c, root, "attention_bias", !strcmp(h->model_type, "qwen2"), &m->attention_bias) ||
      !get_int(c, root, "max_position_embeddings", 0, 0, &h->max_position_embeddings))
    return 0;
  m->rope_scaling = ROPE_SCALING_NONE;
  if (!parse_rope(c, cJSON_GetObjectItemCaseSensitive(root, "rope_scaling"), "rope_scaling", m) ||
      !parse_rope(c, cJSON_GetObjectItemCaseSensitive(root, "rope_parameters"), "rope_parameters", m))
    return 0;
  char msg[256];
  const char *bad = llama_config_validate(m, msg, sizeof msg);
  if (bad) return json_fail(c, "%s", bad);
  h->dtype = parse_torch_dtype(root);
  return parse_ids(c, root, h);
}

HfConfig hf_config_from_llama(const LlamaConfig *cfg) {
  HfConfig h;
  memset(&h, 0, sizeof h);
  h.cfg = *cfg;
  snprintf(h.model_type, sizeof h.model_type, "llama");
  h.bos_id = h.pad_id = -1;
  h.dtype = ST_F32;
  return h;
}

const char *hf_config_parse(const char *json, size_t len, const char *label, HfConfig *out,
                            char *err, size_t errlen) {
  JsonCtx c = {.err = err, .errlen = errlen, .label = label ? label : "config.json"};
  LlamaConfig base = llama_config_default(0, 0, 0, 0, 0, 0);
  *out = hf_config_from_llama(&base);
  cJSON *root = json_parse(&c, json, len);
  if (!root) return err;
  int ok = parse_root(&c, root, out);
  cJSON_Delete(root);
  return ok ? NULL : err;
}

/* ---- writing ---- */

typedef struct {
  char *s;
  size_t len, cap;
} Text;

static void put(Text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(Text *t, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
    va_end(ap);
    TV_CHECK(n >= 0, "formatting failed");
    if (t->s && t->len + (size_t)n < t->cap) {
      t->len += (size_t)n;
      return;
    }
    t->cap = (t->cap + (size_t)n + 1) * 2;
    t->s = realloc(t->s, t->cap);
    TV_CHECK(t->s, "out of memory");
  }
}

static void float_text(char *buf, size_t len, float x);

static void put_float(Text *t, const char *key, float x) {
  char b[48];
  float_text(b, sizeof b, x);
  put(t, "  \"%s\": %s,\n", key, b);
}

static void put_id(Text *t, const char *key, int id) {
  if (id >= 0) put(t, "  \"%s\": %d,\n", key, id);
  else put(t, "  \"%s\": null,\n", key);
}

char *hf_config_to_json(const HfConfig *h) {
  const LlamaConfig *m = &h->cfg;
  /* Llama's attention_bias also gives o_proj a bias, which this model lacks: a model with
   * q/k/v biases is written as Qwen2, whose biases are exactly those three. */
  const char *type = m->attention_bias ? "qwen2" : h->model_type;
  if (!m->attention_bias && !strcmp(type, "qwen2")) type = "llama";
  const char *arch = !strcmp(type, "qwen2") ? "Qwen2ForCausalLM"
                     : !strcmp(type, "mistral") ? "MistralForCausalLM" : "LlamaForCausalLM";
  Text t = {0};
  put(&t, "{\n  \"architectures\": [\"%s\"],\n", arch);
  if (strcmp(type, "qwen2") != 0) put(&t, "  \"attention_bias\": %s,\n", m->attention_bias ? "true" : "false");
  put_id(&t, "bos_token_id", h->bos_id);
  if (h->n_eos == 1) {
    put(&t, "  \"eos_token_id\": %d,\n", h->eos_ids[0]);
  } else if (h->n_eos > 1) {
    put(&t, "  \"eos_token_id\": [");
    for (int i = 0; i < h->n_eos; i++) put(&t, i ? ", %d" : "%d", h->eos_ids[i]);
    put(&t, "],\n");
  } else {
    put(&t, "  \"eos_token_id\": null,\n");
  }
  put(&t, "  \"head_dim\": %d,\n  \"hidden_act\": \"silu\",\n  \"hidden_size\": %d,\n"
          "  \"intermediate_size\": %d,\n", m->head_dim, m->hidden_size, m->intermediate_size);
  if (h->max_position_embeddings > 0)
    put(&t, "  \"max_position_embeddings\": %d,\n", h->max_position_embeddings);
  put(&t, "  \"model_type\": \"%s\",\n  \"num_attention_heads\": %d,\n"
          "  \"num_hidden_layers\": %d,\n  \"num_key_value_heads\": %d,\n",
      type, m->num_heads, m->num_layers, m->num_kv_heads);
  if (h->pad_id >= 0) put(&t, "  \"pad_token_id\": %d,\n", h->pad_id);
  put_float(&t, "rms_norm_eps", m->rms_norm_eps);
  if (m->rope_scaling == ROPE_SCALING_LLAMA3) {
    char f[48], lo[48], hi[48];
    float_text(f, sizeof f, m->rope_factor);
    float_text(lo, sizeof lo, m->rope_low_freq_factor);
    float_text(hi, sizeof hi, m->rope_high_freq_factor);
    put(&t, "  \"rope_scaling\": {\"factor\": %s, \"high_freq_factor\": %s, \"low_freq_factor\": %s, "
            "\"original_max_position_embeddings\": %d, \"rope_type\": \"llama3\"},\n",
        f, hi, lo, m->rope_original_max_pos);
  } else {
    put(&t, "  \"rope_scaling\": null,\n");
  }
  put_float(&t, "rope_theta", m->rope_theta);
  if (!strcmp(type, "mistral")) put(&t, "  \"sliding_window\": null,\n");
  if (!strcmp(type, "qwen2")) put(&t, "  \"use_sliding_window\": false,\n");
  put(&t, "  \"tie_word_embeddings\": %s,\n  \"torch_dtype\": \"%s\",\n  \"vocab_size\": %d\n}\n",
      m->tie_word_embeddings ? "true" : "false",
      h->dtype == ST_F16 ? "float16" : h->dtype == ST_BF16 ? "bfloat16" : "float32",
      m->vocab_size);
  return t.s;
}

void hf_format_float(char *buf, size_t len, float x) {
  for (int p = 1; p <= 9; p++) {
    snprintf(buf, len, "%.*g", p, (double)x);
    if (strtof(buf, NULL) == x) break;
  }
  /* 500000 rather than 5e+05, as Python prints it */
  if (strstr(buf, "e+") && fabsf(x) < 1e16f && x == floorf(x)) snprintf(buf, len, "%.0f", (double)x);
}

/* A float that reads back as a Python float: 32.0, not 32. */
static void float_text(char *buf, size_t len, float x) {
  hf_format_float(buf, len, x);
  if (!strpbrk(buf, ".eEn") && strlen(buf) + 2 < len) strcat(buf, ".0");
}
