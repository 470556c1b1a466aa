/* The pipeline objects of tokenizer.json: normalizer, pre_tokenizer, decoder and
 * post_processor. Only what BPE tokenizers of the Llama family use; anything else is named. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "tokenizer_internal.h"

int tk_json_bool(const cJSON *o, const char *key, int def, int *out, const char *path, char *err,
                 size_t errlen) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!v || cJSON_IsNull(v)) {
    *out = def;
    return 0;
  }
  if (!cJSON_IsBool(v)) {
    tk_err(err, errlen, "%s.%s: expected true or false", path, key);
    return -1;
  }
  *out = cJSON_IsTrue(v) ? 1 : 0;
  return 0;
}

const char *tk_json_str(const cJSON *o, const char *key, int required, const char *path, char *err,
                        size_t errlen, int *failed) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!v || cJSON_IsNull(v)) {
    if (required) {
      tk_err(err, errlen, "%s.%s: missing", path, key);
      *failed = 1;
    }
    return NULL;
  }
  if (!cJSON_IsString(v)) {
    tk_err(err, errlen, "%s.%s: expected a string", path, key);
    *failed = 1;
    return NULL;
  }
  return v->valuestring;
}

static char *dup_str(const char *s, size_t *len) {
  size_t n = strlen(s);
  char *p = tv_malloc(n + 1);
  memcpy(p, s, n + 1);
  if (len) *len = n;
  return p;
}

/* `{"String": s}` or `{"Regex": r}` as a compiled pattern. */
static TkRegex *parse_pattern(const cJSON *o, const char *path, char *err, size_t errlen) {
  const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "pattern");
  if (!cJSON_IsObject(p)) {
    tk_err(err, errlen, "%s.pattern: expected {\"String\": ...} or {\"Regex\": ...}", path);
    return NULL;
  }
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "String");
  const cJSON *r = cJSON_GetObjectItemCaseSensitive(p, "Regex");
  const cJSON *v = s ? s : r;
  if (!cJSON_IsString(v)) {
    tk_err(err, errlen, "%s.pattern: expected {\"String\": ...} or {\"Regex\": ...}", path);
    return NULL;
  }
  char msg[300];
  TkRegex *re = tkre_compile(v->valuestring, strlen(v->valuestring), s != NULL, msg, sizeof msg);
  if (!re) tk_err(err, errlen, "%s.pattern.%s: bad pattern: %s", path, s ? "String" : "Regex", msg);
  return re;
}

/* Reads the one-character string field key into its code point (cp) and/or its UTF-8 bytes
 * (utf8, utf8_len); either output may be NULL. Nine parameters: the field, its two output
 * forms and the (path, err, errlen) triple every reader of this file reports through. */
static int json_char(const cJSON *o, const char *key, const char *def, uint32_t *cp, char *utf8,
                     size_t *utf8_len, const char *path, char *err, size_t errlen) {
  int failed = 0;
  const char *s = tk_json_str(o, key, 0, path, err, errlen, &failed);
  if (failed) return -1;
  if (!s) s = def;
  size_t n = strlen(s), l = 0;
  uint32_t c = n ? tk_utf8_decode((const unsigned char *)s, n, &l) : 0;
  if (!n || l != n || c == 0xFFFFFFFFu) {
    tk_err(err, errlen, "%s.%s: expected exactly one character", path, key);
    return -1;
  }
  if (cp) *cp = c;
  if (utf8) {
    memcpy(utf8, s, n);
    *utf8_len = n;
  }
  return 0;
}

static int prepend_scheme(const cJSON *o, const char *path, int *out, char *err, size_t errlen) {
  int failed = 0, add_prefix = 1;
  const char *s = tk_json_str(o, "prepend_scheme", 0, path, err, errlen, &failed);
  if (failed) return -1;
  if (!s) { /* files older than prepend_scheme say add_prefix_space */
    if (tk_json_bool(o, "add_prefix_space", 1, &add_prefix, path, err, errlen)) return -1;
    *out = add_prefix ? TK_PREPEND_ALWAYS : TK_PREPEND_NEVER;
  } else if (!strcmp(s, "always")) {
    *out = TK_PREPEND_ALWAYS;
  } else if (!strcmp(s, "first")) {
    *out = TK_PREPEND_FIRST;
  } else if (!strcmp(s, "never")) {
    *out = TK_PREPEND_NEVER;
  } else {
    tk_err(err, errlen, "%s.prepend_scheme: expected always, first or never, got \"%s\"", path, s);
    return -1;
  }
  return 0;
}

/* The "type" of a pipeline object, or NULL with an error. */
static const char *object_type(const cJSON *j, const char *path, char *err, size_t errlen) {
  if (!cJSON_IsObject(j)) {
    tk_err(err, errlen, "%s: expected an object or null", path);
    return NULL;
  }
  int failed = 0;
  return tk_json_str(j, "type", 1, path, err, errlen, &failed);
}

/* Calls fn on each element of the array field key (a Sequence). */
static int each_child(Tokenizer *t, const cJSON *j, const char *key, const char *path,
                      int (*fn)(Tokenizer *, const cJSON *, const char *, char *, size_t),
                      char *err, size_t errlen) {
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, key);
  if (!cJSON_IsArray(arr)) {
    tk_err(err, errlen, "%s.%s: expected an array", path, key);
    return -1;
  }
  int i = 0;
  for (const cJSON *c = arr->child; c; c = c->next, i++) {
    char sub[256];
    snprintf(sub, sizeof sub, "%s.%s[%d]", path, key, i);
    if (fn(t, c, sub, err, errlen)) return -1;
  }
  return 0;
}

static int normalizer(Tokenizer *t, const cJSON *j, const char *path, char *err, size_t errlen) {
  if (cJSON_IsNull(j)) return 0;
  const char *type = object_type(j, path, err, errlen);
  if (!type) return -1;
  if (!strcmp(type, "Sequence")) return each_child(t, j, "normalizers", path, normalizer, err, errlen);
  TkNormStep st = {0};
  int failed = 0;
  if (!strcmp(type, "Prepend")) {
    const char *s = tk_json_str(j, "prepend", 1, path, err, errlen, &failed);
    if (!s) return -1;
    st.kind = TK_NORM_PREPEND;
    st.text = dup_str(s, &st.text_len);
  } else if (!strcmp(type, "Replace")) {
    const char *s = tk_json_str(j, "content", 1, path, err, errlen, &failed);
    if (!s) return -1;
    if (!(st.re = parse_pattern(j, path, err, errlen))) return -1;
    st.kind = TK_NORM_REPLACE;
    st.text = dup_str(s, &st.text_len);
  } else if (!strcmp(type, "NFC")) {
    st.kind = TK_NORM_NFC;
  } else {
    tk_err(err, errlen,
           "%s.type: normalizer \"%s\" is not supported (Sequence, Prepend, Replace, NFC are)",
           path, type);
    return -1;
  }
  t->norm = realloc(t->norm, (size_t)(t->n_norm + 1) * sizeof(TkNormStep));
  TV_CHECK(t->norm, "out of memory");
  t->norm[t->n_norm++] = st;
  return 0;
}

int tk_parse_normalizer(Tokenizer *t, const cJSON *j, char *err, size_t errlen) {
  return j ? normalizer(t, j, "normalizer", err, errlen) : 0;
}

static int split_behavior(const cJSON *j, const char *path, int *out, char *err, size_t errlen) {
  static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                "Contiguous"};
  int failed = 0;
  const char *s = tk_json_str(j, "behavior", 1, path, err, errlen, &failed);
  if (!s) return -1;
  for (int i = 0; i < 5; i++)
    if (!strcmp(s, names[i])) {
      *out = i;
      return 0;
    }
  tk_err(err, errlen, "%s.behavior: unknown split behavior \"%s\"", path, s);
  return -1;
}

static int pre_tokenizer(Tokenizer *t, const cJSON *j, const char *path, char *err,
                         size_t errlen) {
  if (cJSON_IsNull(j)) return 0;
  const char *type = object_type(j, path, err, errlen);
  if (!type) return -1;
  if (!strcmp(type, "Sequence"))
    return each_child(t, j, "pretokenizers", path, pre_tokenizer, err, errlen);
  TkPreStep st = {0};
  if (!strcmp(type, "Split")) {
    st.kind = TK_PRE_SPLIT;
    if (split_behavior(j, path, &st.behavior, err, errlen) ||
        tk_json_bool(j, "invert", 0, &st.invert, path, err, errlen))
      return -1;
    if (!(st.re = parse_pattern(j, path, err, errlen))) return -1;
  } else if (!strcmp(type, "ByteLevel")) {
    int use_regex;
    st.kind = TK_PRE_BYTELEVEL;
    if (tk_json_bool(j, "add_prefix_space", 1, &st.add_prefix_space, path, err, errlen) ||
        tk_json_bool(j, "use_regex", 1, &use_regex, path, err, errlen))
      return -1;
    if (use_regex) {
      st.re = tkre_compile(tk_gpt2_pattern, strlen(tk_gpt2_pattern), 0, err, errlen);
      TV_CHECK(st.re, "the GPT-2 pattern does not compile: %s", err ? err : "");
    }
  } else if (!strcmp(type, "Metaspace")) {
    st.kind = TK_PRE_METASPACE;
    if (json_char(j, "replacement", "\xE2\x96\x81", NULL, st.repl, &st.repl_len, path, err,
                  errlen) ||
        prepend_scheme(j, path, &st.prepend_scheme, err, errlen) ||
        tk_json_bool(j, "split", 1, &st.split, path, err, errlen))
      return -1;
  } else {
    tk_err(err, errlen,
           "%s.type: pre-tokenizer \"%s\" is not supported (Sequence, Split, ByteLevel, Metaspace "
           "are)",
           path, type);
    return -1;
  }
  t->pre = realloc(t->pre, (size_t)(t->n_pre + 1) * sizeof(TkPreStep));
  TV_CHECK(t->pre, "out of memory");
  t->pre[t->n_pre++] = st;
  return 0;
}

int tk_parse_pre_tokenizer(Tokenizer *t, const cJSON *j, char *err, size_t errlen) {
  return j ? pre_tokenizer(t, j, "pre_tokenizer", err, errlen) : 0;
}

static int json_count(const cJSON *j, const char *key, int def, int *out, const char *path,
                      char *err, size_t errlen) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
  if (!v || cJSON_IsNull(v)) {
    *out = def;
    return 0;
  }
  if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e9 ||
      v->valuedouble != (double)(int)v->valuedouble) {
    tk_err(err, errlen, "%s.%s: expected a count", path, key);
    return -1;
  }
  *out = (int)v->valuedouble;
  return 0;
}

static int decoder(Tokenizer *t, const cJSON *j, const char *path, char *err, size_t errlen) {
  if (cJSON_IsNull(j)) return 0;
  const char *type = object_type(j, path, err, errlen);
  if (!type) return -1;
  t->has_decoder = 1;
  if (!strcmp(type, "Sequence")) return each_child(t, j, "decoders", path, decoder, err, errlen);
  TkDecStep st = {0};
  int failed = 0;
  if (!strcmp(type, "Replace")) {
    const char *s = tk_json_str(j, "content", 1, path, err, errlen, &failed);
    if (!s) return -1;
    if (!(st.re = parse_pattern(j, path, err, errlen))) return -1;
    st.kind = TK_DEC_REPLACE;
    st.content = dup_str(s, &st.content_len);
  } else if (!strcmp(type, "ByteFallback")) {
    st.kind = TK_DEC_BYTEFALLBACK;
  } else if (!strcmp(type, "Fuse")) {
    st.kind = TK_DEC_FUSE;
  } else if (!strcmp(type, "Strip")) {
    st.kind = TK_DEC_STRIP;
    if (json_char(j, "content", " ", &st.strip_cp, NULL, NULL, path, err, errlen) ||
        json_count(j, "start", 0, &st.start, path, err, errlen) ||
        json_count(j, "stop", 0, &st.stop, path, err, errlen))
      return -1;
  } else if (!strcmp(type, "ByteLevel")) {
    st.kind = TK_DEC_BYTELEVEL;
  } else if (!strcmp(type, "Metaspace")) {
    st.kind = TK_DEC_METASPACE;
    if (json_char(j, "replacement", "\xE2\x96\x81", &st.strip_cp, NULL, NULL, path, err, errlen) ||
        prepend_scheme(j, path, &st.prepend_scheme, err, errlen))
      return -1;
  } else {
    tk_err(err, errlen,
           "%s.type: decoder \"%s\" is not supported (Sequence, Replace, ByteFallback, Fuse, "
           "Strip, ByteLevel, Metaspace are)",
           path, type);
    return -1;
  }
  t->dec = realloc(t->dec, (size_t)(t->n_dec + 1) * sizeof(TkDecStep));
  TV_CHECK(t->dec, "out of memory");
  t->dec[t->n_dec++] = st;
  return 0;
}

int tk_parse_decoder(Tokenizer *t, const cJSON *j, char *err, size_t errlen) {
  return j ? decoder(t, j, "decoder", err, errlen) : 0;
}

/* Wraps the current rule: new prefix = pre + prefix, new suffix = suffix + post. */
static void wrap(Tokenizer *t, const TkIds *pre, const TkIds *post) {
  TkIds np = {0};
  for (int i = 0; i < pre->n; i++) tkids_push(&np, pre->v[i]);
  for (int i = 0; i < t->prefix.n; i++) tkids_push(&np, t->prefix.v[i]);
  free(t->prefix.v);
  t->prefix = np;
  for (int i = 0; i < post->n; i++) tkids_push(&t->suffix, post->v[i]);
}

/* TemplateProcessing's `single`: special-token pieces around exactly one $A. */
static int template_single(Tokenizer *t, const cJSON *j, const char *path, char *err,
                           size_t errlen) {
  const cJSON *single = cJSON_GetObjectItemCaseSensitive(j, "single");
  const cJSON *specials = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
  if (!cJSON_IsArray(single)) {
    tk_err(err, errlen, "%s.single: expected an array of pieces", path);
    return -1;
  }
  TkIds pre = {0}, post = {0};
  int seen_a = 0, i = 0, rc = -1;
  for (const cJSON *p = single->child; p; p = p->next, i++) {
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(p, "Sequence");
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(p, "SpecialToken");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(seq ? seq : sp, "id");
    if (!cJSON_IsString(id)) {
      tk_err(err, errlen, "%s.single[%d]: expected {\"Sequence\": {\"id\": ...}} or "
             "{\"SpecialToken\": {\"id\": ...}}", path, i);
      goto done;
    }
    if (seq) {
      if (strcmp(id->valuestring, "A") || seen_a++) {
        tk_err(err, errlen, "%s.single[%d]: a single-sequence template takes $A exactly once", path,
               i);
        goto done;
      }
      continue;
    }
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(specials, id->valuestring);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(tok, "ids");
    if (!cJSON_IsArray(ids)) {
      tk_err(err, errlen, "%s.special_tokens: \"%s\" is missing or has no ids", path,
             id->valuestring);
      goto done;
    }
    for (const cJSON *v = ids->child; v; v = v->next) {
      if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= t->n_ids ||
          v->valuedouble != (double)(int32_t)v->valuedouble) {
        tk_err(err, errlen, "%s.special_tokens.%s.ids: expected ids below %d", path,
               id->valuestring, t->n_ids);
        goto done;
      }
      tkids_push(seen_a ? &post : &pre, (int32_t)v->valuedouble);
    }
  }
  if (!seen_a) {
    tk_err(err, errlen, "%s.single: a single-sequence template takes $A exactly once", path);
    goto done;
  }
  wrap(t, &pre, &post);
  rc = 0;
done:
  free(pre.v);
  free(post.v);
  return rc;
}

/* BertProcessing / RobertaProcessing: cls $A sep, each given as [token, id]. */
static int cls_sep(Tokenizer *t, const cJSON *j, const char *path, char *err, size_t errlen) {
  TkIds pre = {0}, post = {0};
  const char *keys[2] = {"cls", "sep"};
  for (int k = 0; k < 2; k++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[k]);
    const cJSON *id = cJSON_IsArray(v) ? cJSON_GetArrayItem(v, 1) : NULL;
    if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= t->n_ids ||
        id->valuedouble != (double)(int32_t)id->valuedouble) {
      tk_err(err, errlen, "%s.%s: expected [token, id] with an id below %d", path, keys[k],
             t->n_ids);
      free(pre.v);
      return -1;
    }
    tkids_push(k ? &post : &pre, (int32_t)id->valuedouble);
  }
  wrap(t, &pre, &post);
  free(pre.v);
  free(post.v);
  return 0;
}

static int post_processor(Tokenizer *t, const cJSON *j, const char *path, char *err,
                          size_t errlen) {
  if (cJSON_IsNull(j)) return 0;
  const char *type = object_type(j, path, err, errlen);
  if (!type) return -1;
  if (!strcmp(type, "Sequence"))
    return each_child(t, j, "processors", path, post_processor, err, errlen);
  if (!strcmp(type, "TemplateProcessing")) return template_single(t, j, path, err, errlen);
  if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing"))
    return cls_sep(t, j, path, err, errlen);
  if (!strcmp(type, "ByteLevel")) return 0; /* it only trims offsets */
  tk_err(err, errlen,
         "%s.type: post-processor \"%s\" is not supported (Sequence, TemplateProcessing, "
         "ByteLevel, BertProcessing, RobertaProcessing are)",
         path, type);
  return -1;
}

int tk_parse_post_processor(Tokenizer *t, const cJSON *j, char *err, size_t errlen) {
  return j ? post_processor(t, j, "post_processor", err, errlen) : 0;
}
