/* tokenizer.json and tokenizer_config.json to a Tokenizer: the BPE model (vocab, merges,
 * options), added tokens with tokenizers' id rule, the BOS/EOS rule, and the accessors. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "tokenizer_internal.h"

/* Ids above this are refused: the id tables are dense arrays. */
#define TK_MAX_ID (1 << 24)

static int json_id(const cJSON *v, int32_t *out) {
  if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble >= TK_MAX_ID ||
      v->valuedouble != (double)(int32_t)v->valuedouble)
    return -1;
  *out = (int32_t)v->valuedouble;
  return 0;
}

static int parse_vocab(Tokenizer *t, const cJSON *model, int32_t *max_id, char *err,
                       size_t errlen) {
  const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
  if (!vocab) {
    tk_err(err, errlen, "model.vocab: missing");
    return -1;
  }
  if (!cJSON_IsObject(vocab)) {
    tk_err(err, errlen, "model.vocab: expected an object of token: id");
    return -1;
  }
  for (const cJSON *e = vocab->child; e; e = e->next) {
    int32_t id;
    if (json_id(e, &id)) {
      tk_err(err, errlen, "model.vocab[\"%.80s\"]: expected an id from 0 to %d", e->string,
             TK_MAX_ID - 1);
      return -1;
    }
    if (tkmap_put(&t->vocab, e->string, strlen(e->string), id)) t->model_vocab_len++;
    if (id > *max_id) *max_id = id;
  }
  return 0;
}

/* One merge: "a b" (exactly one space) or ["a", "b"]. */
static int merge_parts(const cJSON *m, const char **a, size_t *al, const char **b, size_t *bl) {
  if (cJSON_IsString(m)) {
    const char *s = m->valuestring, *sp = strchr(s, ' ');
    if (!sp || strchr(sp + 1, ' ')) return -1;
    *a = s;
    *al = (size_t)(sp - s);
    *b = sp + 1;
    *bl = strlen(sp + 1);
    return 0;
  }
  if (!cJSON_IsArray(m) || !m->child || !m->child->next || m->child->next->next ||
      !cJSON_IsString(m->child) || !cJSON_IsString(m->child->next))
    return -1;
  *a = m->child->valuestring;
  *al = strlen(*a);
  *b = m->child->next->valuestring;
  *bl = strlen(*b);
  return 0;
}

static int parse_merges(Tokenizer *t, const cJSON *model, char *err, size_t errlen) {
  const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
  if (!cJSON_IsArray(merges)) {
    tk_err(err, errlen, "model.merges: %s", merges ? "expected an array" : "missing");
    return -1;
  }
  TkBuf joined = {0};
  int32_t rank = 0, rc = 0;
  for (const cJSON *m = merges->child; m; m = m->next, rank++) {
    const char *a, *b;
    size_t al, bl;
    if (merge_parts(m, &a, &al, &b, &bl)) {
      tk_err(err, errlen, "model.merges[%d]: expected \"left right\" or [\"left\", \"right\"]",
             (int)rank);
      rc = -1;
      break;
    }
    int32_t ia = tkmap_get(&t->vocab, a, al), ib = tkmap_get(&t->vocab, b, bl);
    if (ia < 0 || ib < 0) {
      const char *bad = ia < 0 ? a : b;
      tk_err(err, errlen, "model.merges[%d]: token \"%.*s\" is not in model.vocab", (int)rank,
             (int)((ia < 0 ? al : bl) > 80 ? 80 : (ia < 0 ? al : bl)), bad);
      rc = -1;
      break;
    }
    if (bl < t->cont_prefix_len) {
      tk_err(err, errlen, "model.merges[%d]: \"%.80s\" is shorter than continuing_subword_prefix",
             (int)rank, b);
      rc = -1;
      break;
    }
    joined.len = 0;
    tkbuf_put(&joined, a, al);
    tkbuf_put(&joined, b + t->cont_prefix_len, bl - t->cont_prefix_len);
    int32_t merged = tkmap_get(&t->vocab, joined.p, joined.len);
    if (merged < 0) {
      tk_err(err, errlen, "model.merges[%d]: the merged token \"%.80s\" is not in model.vocab",
             (int)rank, joined.p);
      rc = -1;
      break;
    }
    tkpair_put(&t->merges, ia, ib, rank, merged);
  }
  tkbuf_free(&joined);
  return rc;
}

static char *opt_string(const cJSON *o, const char *key, size_t *len, char *err, size_t errlen,
                        int *failed) {
  const char *s = tk_json_str(o, key, 0, "model", err, errlen, failed);
  if (!s) return NULL;
  *len = strlen(s);
  char *p = tv_malloc(*len + 1);
  memcpy(p, s, *len + 1);
  return p;
}

static int parse_model(Tokenizer *t, const cJSON *root, int32_t *max_id, char *err,
                       size_t errlen) {
  const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
  if (!cJSON_IsObject(model)) {
    tk_err(err, errlen, "model: %s", model ? "expected an object" : "missing");
    return -1;
  }
  int failed = 0;
  const char *type = tk_json_str(model, "type", 0, "model", err, errlen, &failed);
  if (failed) return -1;
  if (type ? strcmp(type, "BPE") != 0 : !cJSON_GetObjectItemCaseSensitive(model, "merges")) {
    tk_err(err, errlen, "model.type: only BPE models are supported, got \"%.40s\"",
           type ? type : "(none)");
    return -1;
  }
  const char *unk = tk_json_str(model, "unk_token", 0, "model", err, errlen, &failed);
  t->cont_prefix = opt_string(model, "continuing_subword_prefix", &t->cont_prefix_len, err,
                              errlen, &failed);
  t->eow_suffix = opt_string(model, "end_of_word_suffix", &t->eow_suffix_len, err, errlen, &failed);
  if (failed || tk_json_bool(model, "fuse_unk", 0, &t->fuse_unk, "model", err, errlen) ||
      tk_json_bool(model, "byte_fallback", 0, &t->byte_fallback, "model", err, errlen) ||
      tk_json_bool(model, "ignore_merges", 0, &t->ignore_merges, "model", err, errlen))
    return -1;
  const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
  if (dropout && !cJSON_IsNull(dropout) &&
      (!cJSON_IsNumber(dropout) || dropout->valuedouble < 0 || dropout->valuedouble > 1)) {
    tk_err(err, errlen, "model.dropout: expected null or a probability");
    return -1;
  }
  if (parse_vocab(t, model, max_id, err, errlen)) return -1;
  /* an unk_token missing from the vocab only fails in tokenizers when it is needed; here it
   * is then treated as absent (unknown characters are dropped) */
  t->unk_id = unk ? tkmap_get(&t->vocab, unk, strlen(unk)) : -1;
  for (int b = 0; b < 256; b++) {
    char name[8];
    snprintf(name, sizeof name, "<0x%02X>", b);
    t->byte_id[b] = tkmap_get(&t->vocab, name, 6);
  }
  return parse_merges(t, model, err, errlen);
}

/* Added tokens get ids the way tokenizers' AddedVocabulary::add_tokens gives them: an
 * existing token keeps its id, a new one takes the next id after the model's vocab (the
 * "id" field is only a hint). A repeated content keeps its id and takes the last flags. */
static int parse_added(Tokenizer *t, const cJSON *root, int32_t *max_id, char *err,
                       size_t errlen) {
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
  if (!arr || cJSON_IsNull(arr)) return 0;
  if (!cJSON_IsArray(arr)) {
    tk_err(err, errlen, "added_tokens: expected an array");
    return -1;
  }
  TkStrMap by_content = {0};
  int32_t max_added = -1;
  int i = 0;
  for (const cJSON *a = arr->child; a; a = a->next, i++) {
    char path[64];
    snprintf(path, sizeof path, "added_tokens[%d]", i);
    int failed = 0;
    int32_t hint;
    TkAdded tok = {0};
    int sw, ls, rs, no, sp;
    if (!cJSON_IsObject(a)) {
      tk_err(err, errlen, "%s: expected an object", path);
      failed = 1;
    }
    const char *content = failed ? NULL : tk_json_str(a, "content", 1, path, err, errlen, &failed);
    if (!failed && json_id(cJSON_GetObjectItemCaseSensitive(a, "id"), &hint)) {
      tk_err(err, errlen, "%s.id: expected an id from 0 to %d", path, TK_MAX_ID - 1);
      failed = 1;
    }
    if (failed || tk_json_bool(a, "single_word", 0, &sw, path, err, errlen) ||
        tk_json_bool(a, "lstrip", 0, &ls, path, err, errlen) ||
        tk_json_bool(a, "rstrip", 0, &rs, path, err, errlen) ||
        tk_json_bool(a, "normalized", 1, &no, path, err, errlen) ||
        tk_json_bool(a, "special", 0, &sp, path, err, errlen)) {
      tkmap_free(&by_content);
      return -1;
    }
    size_t len = strlen(content);
    if (!len) continue; /* tokenizers ignores empty added tokens */
    if (sp) tkmap_put(&t->special, content, len, 1);
    int32_t id = tkmap_get(&by_content, content, len);
    int idx = id >= 0 ? t->added_of_id[id] : -1;
    if (id < 0) id = tkmap_get(&t->vocab, content, len);
    if (id < 0) {
      id = max_added < 0 ? t->model_vocab_len
                         : (max_added >= t->model_vocab_len || !t->model_vocab_len ? max_added + 1
                                                                                   : t->model_vocab_len);
      if (id >= TK_MAX_ID) {
        tk_err(err, errlen, "%s: too many tokens (ids reach %d)", path, TK_MAX_ID);
        tkmap_free(&by_content);
        return -1;
      }
    }
    tkmap_put(&by_content, content, len, id);
    if (id > max_added) max_added = id;
    if (id > *max_id) *max_id = id;
    /* id -> entry table grows with the ids seen */
    if (id >= t->n_ids) {
      int32_t n = id + 1;
      t->added_of_id = realloc(t->added_of_id, (size_t)n * sizeof(int32_t));
      TV_CHECK(t->added_of_id, "out of memory");
      for (int32_t k = t->n_ids; k < n; k++) t->added_of_id[k] = -1;
      t->n_ids = n;
    }
    if (idx < 0) idx = t->added_of_id[id];
    tok.len = len;
    tok.content = tv_malloc(len + 1);
    memcpy(tok.content, content, len + 1);
    tok.id = id;
    tok.special = (unsigned char)sp;
    tok.lstrip = (unsigned char)ls;
    tok.rstrip = (unsigned char)rs;
    tok.single_word = (unsigned char)sw;
    tok.normalized = (unsigned char)no;
    if (idx >= 0) { /* the id is taken: the later token replaces the earlier one */
      free(t->added[idx].content);
      t->added[idx] = tok;
    } else {
      t->added = realloc(t->added, (size_t)(t->n_added + 1) * sizeof(TkAdded));
      TV_CHECK(t->added, "out of memory");
      t->added_of_id[id] = t->n_added;
      t->added[t->n_added++] = tok;
    }
  }
  tkmap_free(&by_content);
  return 0;
}

/* id -> text for decoding: the model's vocab, then the added tokens over it. */
static void build_id_text(Tokenizer *t, int32_t max_id) {
  int32_t n = max_id + 1;
  int32_t old = t->n_ids;
  t->added_of_id = realloc(t->added_of_id, (size_t)(n ? n : 1) * sizeof(int32_t));
  TV_CHECK(t->added_of_id, "out of memory");
  for (int32_t k = old; k < n; k++) t->added_of_id[k] = -1;
  t->n_ids = n;
  t->id_off = tv_malloc((size_t)(n ? n : 1) * sizeof(size_t));
  t->id_len = tv_calloc((size_t)(n ? n : 1), sizeof(uint32_t));
  for (int32_t k = 0; k < n; k++) t->id_off[k] = SIZE_MAX;
  const TkStrMap *v = &t->vocab;
  for (size_t e = 0; e < v->n; e++) {
    int32_t id = v->ent[e].val;
    if (t->id_off[id] != SIZE_MAX) continue; /* two tokens with one id: the first is kept */
    t->id_off[id] = t->id_text.len;
    t->id_len[id] = v->ent[e].len;
    tkbuf_put(&t->id_text, v->keys.p + v->ent[e].off, v->ent[e].len);
  }
  for (int i = 0; i < t->n_added; i++) {
    const TkAdded *a = &t->added[i];
    t->id_off[a->id] = t->id_text.len;
    t->id_len[a->id] = (uint32_t)a->len;
    tkbuf_put(&t->id_text, a->content, a->len);
  }
}

/* Decoding sees a normalised added token as the normaliser wrote it (tokenizers keeps that
 * form for the decoder to invert, e.g. Prepend's "▁"), and so does skip_special. */
static int added_decode_text(Tokenizer *t) {
  for (int i = 0; i < t->n_added; i++) {
    const TkAdded *a = &t->added[i];
    if (!a->normalized || !a->norm || (a->norm_len == a->len && !memcmp(a->norm, a->content, a->len)))
      continue;
    t->id_off[a->id] = t->id_text.len;
    t->id_len[a->id] = (uint32_t)a->norm_len;
    tkbuf_put(&t->id_text, a->norm, a->norm_len);
  }
  return 0;
}

int tokenizer_token_id(const Tokenizer *t, const char *token) {
  size_t len = strlen(token);
  for (int i = 0; i < t->n_added; i++)
    if (t->added[i].len == len && !memcmp(t->added[i].content, token, len)) return t->added[i].id;
  return tkmap_get(&t->vocab, token, len);
}

/* A token named in tokenizer_config.json: a string, {"content": ...}, or null (*named is
 * set when the key is there at all: an explicit null means "none", not "guess"). */
static int config_token(Tokenizer *t, const cJSON *cfg, const char *key, int32_t *id, int *named,
                        char *err, size_t errlen) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
  *named = v != NULL;
  if (!v || cJSON_IsNull(v)) return 0;
  if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
  if (!cJSON_IsString(v)) {
    tk_err(err, errlen, "tokenizer_config.json: %s: expected a string or {\"content\": ...}", key);
    return -1;
  }
  *id = tokenizer_token_id(t, v->valuestring);
  if (*id < 0) {
    tk_err(err, errlen, "tokenizer_config.json: %s: \"%.80s\" is not a token of tokenizer.json",
           key, v->valuestring);
    return -1;
  }
  return 0;
}

static int32_t known_token(const Tokenizer *t, const char *const *names) {
  for (; *names; names++) {
    int32_t id = tokenizer_token_id(t, *names);
    if (id >= 0) return id;
  }
  return -1;
}

/* BOS/EOS/pad ids and the encode(add_special) rule. add_bos_token / add_eos_token in the
 * config win over the post-processor (what transformers' Llama tokenizers do). */
static int parse_config(Tokenizer *t, const char *cfg_text, size_t cfg_len, char *err,
                        size_t errlen) {
  static const char *const bos_names[] = {"<s>", "<|begin_of_text|>", "<bos>", NULL};
  static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>",
                                          NULL};
  int32_t bos = -1, eos = -1, pad = -1;
  int add_bos = -1, add_eos = -1, rc = -1, bos_named = 0, eos_named = 0, pad_named;
  cJSON *cfg = NULL;
  if (cfg_text) {
    cfg = cJSON_ParseWithLength(cfg_text, cfg_len);
    if (!cJSON_IsObject(cfg)) {
      tk_err(err, errlen, "tokenizer_config.json: not a JSON object");
      goto done;
    }
    if (config_token(t, cfg, "bos_token", &bos, &bos_named, err, errlen) ||
        config_token(t, cfg, "eos_token", &eos, &eos_named, err, errlen) ||
        config_token(t, cfg, "pad_token", &pad, &pad_named, err, errlen) ||
        tk_json_bool(cfg, "add_bos_token", -1, &add_bos, "tokenizer_config.json", err, errlen) ||
        tk_json_bool(cfg, "add_eos_token", -1, &add_eos, "tokenizer_config.json", err, errlen))
      goto done;
  }
  /* not named by a config: the post-processor's tokens, then well-known names */
  if (!bos_named && t->prefix.n) bos = t->prefix.v[0];
  if (!eos_named && t->suffix.n) eos = t->suffix.v[t->suffix.n - 1];
  if (!bos_named && bos < 0) bos = known_token(t, bos_names);
  if (!eos_named && eos < 0) eos = known_token(t, eos_names);
  if (add_bos >= 0 || add_eos >= 0) {
    int had_bos = bos >= 0 && t->prefix.n && t->prefix.v[0] == bos;
    int had_eos = eos >= 0 && t->suffix.n && t->suffix.v[t->suffix.n - 1] == eos;
    if (add_bos < 0) add_bos = had_bos;
    if (add_eos < 0) add_eos = had_eos;
    if ((add_bos && bos < 0) || (add_eos && eos < 0)) {
      tk_err(err, errlen, "tokenizer_config.json: %s is true but %s is not set",
             add_bos && bos < 0 ? "add_bos_token" : "add_eos_token",
             add_bos && bos < 0 ? "bos_token" : "eos_token");
      goto done;
    }
    t->prefix.n = t->suffix.n = 0;
    if (add_bos) tkids_push(&t->prefix, bos);
    if (add_eos) tkids_push(&t->suffix, eos);
  }
  t->bos = bos;
  t->eos = eos;
  t->pad = pad;
  rc = 0;
done:
  cJSON_Delete(cfg);
  return rc;
}

Tokenizer *tokenizer_parse(const char *json, size_t len, const char *config_json,
                           size_t config_len, char *err, size_t errlen) {
  tk_err(err, errlen, "no error");
  if (!json || !tk_is_valid_utf8((const unsigned char *)json, len)) {
    tk_err(err, errlen, "tokenizer.json is not UTF-8 text");
    return NULL;
  }
  if (config_json && !tk_is_valid_utf8((const unsigned char *)config_json, config_len)) {
    tk_err(err, errlen, "tokenizer_config.json is not UTF-8 text");
    return NULL;
  }
  cJSON *root = cJSON_ParseWithLength(json, len);
  if (!root) {
    const char *at = cJSON_GetErrorPtr();
    size_t off = at && at >= json && at <= json + len ? (size_t)(at - json) : 0;
    tk_err(err, errlen, "not valid JSON (near byte %zu)", off);
    return NULL;
  }
  Tokenizer *t = tv_calloc(1, sizeof(Tokenizer));
  t->bos = t->eos = t->pad = t->unk_id = -1;
  int32_t max_id = -1;
  int ok = cJSON_IsObject(root);
  if (!ok) tk_err(err, errlen, "the top level is not a JSON object");
  ok = ok && !parse_model(t, root, &max_id, err, errlen) &&
       !parse_added(t, root, &max_id, err, errlen);
  if (ok) build_id_text(t, max_id);
  ok = ok && !tk_parse_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), err, errlen) &&
       !tk_added_prepare(t, err, errlen) && !added_decode_text(t) &&
       !tk_parse_pre_tokenizer(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), err, errlen) &&
       !tk_parse_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder"), err, errlen) &&
       !tk_parse_post_processor(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), err, errlen) &&
       !parse_config(t, config_json, config_len, err, errlen);
  cJSON_Delete(root);
  if (!ok) {
    tokenizer_free(t);
    return NULL;
  }
  return t;
}

void tokenizer_free(Tokenizer *t) {
  if (!t) return;
  tkmap_free(&t->vocab);
  tkmap_free(&t->special);
  tkpair_free(&t->merges);
  free(t->id_off);
  free(t->id_len);
  tkbuf_free(&t->id_text);
  free(t->cont_prefix);
  free(t->eow_suffix);
  for (int i = 0; i < t->n_added; i++) {
    free(t->added[i].content);
    free(t->added[i].norm);
  }
  free(t->added);
  free(t->added_of_id);
  free(t->raw_set.idx);
  free(t->norm_set.idx);
  tkre_free(t->word_start);
  for (int i = 0; i < t->n_norm; i++) {
    free(t->norm[i].text);
    tkre_free(t->norm[i].re);
  }
  free(t->norm);
  for (int i = 0; i < t->n_pre; i++) tkre_free(t->pre[i].re);
  free(t->pre);
  for (int i = 0; i < t->n_dec; i++) {
    tkre_free(t->dec[i].re);
    free(t->dec[i].content);
  }
  free(t->dec);
  free(t->prefix.v);
  free(t->suffix.v);
  free(t);
}

int tokenizer_vocab_size(const Tokenizer *t) { return t->n_ids; }
int tokenizer_bos_id(const Tokenizer *t) { return t->bos; }
int tokenizer_eos_id(const Tokenizer *t) { return t->eos; }
int tokenizer_pad_id(const Tokenizer *t) { return t->pad; }

int tokenizer_adds_bos(const Tokenizer *t) {
  if (!t->prefix.n) return 0;
  if (t->bos < 0) return 1;
  for (int i = 0; i < t->prefix.n; i++)
    if (t->prefix.v[i] == t->bos) return 1;
  return 0;
}

/* Reads a whole file; NULL with errno when it cannot. */
static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  TkBuf b = {0};
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) tkbuf_put(&b, chunk, n);
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    tkbuf_free(&b);
    errno = EIO;
    return NULL;
  }
  tkbuf_reserve(&b, 0);
  *len = b.len;
  return b.p;
}

Tokenizer *tokenizer_load(const char *path) {
  struct stat st;
  TkBuf file = {0}, cfg = {0};
  if (stat(path, &st) != 0) tv_die("cannot open tokenizer %s: %s", path, strerror(errno));
  if (S_ISDIR(st.st_mode)) {
    tkbuf_put(&file, path, strlen(path));
    tkbuf_put(&file, "/tokenizer.json", 15);
  } else {
    tkbuf_put(&file, path, strlen(path));
  }
  /* tokenizer_config.json sits beside tokenizer.json */
  const char *slash = strrchr(file.p, '/');
  if (slash) tkbuf_put(&cfg, file.p, (size_t)(slash - file.p) + 1);
  tkbuf_put(&cfg, "tokenizer_config.json", 21);
  size_t len = 0, cfg_len = 0;
  char *json = read_file(file.p, &len);
  if (!json) tv_die("cannot read tokenizer %s: %s", file.p, strerror(errno));
  char *cfg_json = NULL;
  if (stat(cfg.p, &st) == 0) {
    cfg_json = read_file(cfg.p, &cfg_len);
    if (!cfg_json) tv_die("cannot read %s: %s", cfg.p, strerror(errno));
  }
  char err[512];
  Tokenizer *t = tokenizer_parse(json, len, cfg_json, cfg_len, err, sizeof err);
  if (!t) {
    /* a config error names tokenizer_config.json itself; the rest are tokenizer.json's */
    if (!strncmp(err, "tokenizer_config.json", 21))
      tv_die("bad tokenizer config %s: %s", cfg.p, err);
    tv_die("bad tokenizer %s: %s", file.p, err);
  }
  free(json);
  free(cfg_json);
  tkbuf_free(&file);
  tkbuf_free(&cfg);
  return t;
}
