/* Loading and running the QA-moderation judge (see judge_model.h). The body is a Llama
 * stage built tied, so it holds no LM head: the folder has a score head instead. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "classifier.h"
#include "hf_model.h"
#include "json_util.h"
#include "judge_model.h"
#include "lora.h"

struct JudgeModel {
  HfModel *model;
  Tokenizer *tok;
  float *score; /* [K, D] host */
  int K, threads;
  char **labels; /* [K] */
};

/* id2label {"0": name, ...} of config.json; names absent there stay NULL. */
static void read_labels(JudgeModel *j, const char *dir) {
  char *path = hf_path_join(dir, "config.json");
  size_t len;
  char *text = hf_read_text_file(path, &len);
  if (!text) tv_die("cannot read %s: %s", path, strerror(errno));
  char err[512];
  JsonCtx c = {.err = err, .errlen = sizeof err, .label = path};
  cJSON *root = json_parse(&c, text, len);
  if (!root) tv_die("%s", err);
  const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "id2label");
  j->labels = tv_calloc((size_t)j->K, sizeof(char *));
  if (!json_absent(map)) {
    if (!cJSON_IsObject(map)) tv_die("%s: id2label: expected an object", path);
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
      char *end = NULL;
      long k = strtol(e->string, &end, 10);
      if (end == e->string || *end || k < 0 || k >= j->K)
        tv_die("%s: id2label: key '%s' is not a label index in [0, %d)", path, e->string, j->K);
      if (!cJSON_IsString(e)) tv_die("%s: id2label.%s: expected a string", path, e->string);
      free(j->labels[k]);
      j->labels[k] = strdup(e->valuestring);
    }
  }
  for (int k = 0; k < j->K; k++)
    if (!j->labels[k]) {
      char name[32];
      snprintf(name, sizeof name, "LABEL_%d", k);
      j->labels[k] = strdup(name);
    }
  cJSON_Delete(root);
  free(text);
  free(path);
}

JudgeModel *judge_model_open(const char *dir, const char *tokenizer_path, int threads) {
  JudgeModel *j = tv_calloc(1, sizeof(JudgeModel));
  j->model = hf_model_open(dir);
  j->threads = threads;
  const LlamaConfig *cfg = &hf_model_config(j->model)->cfg;
  int ndim;
  int64_t shape[2];
  j->score = hf_model_read_tensor(j->model, "score.weight", &ndim, shape);
  if (ndim != 2 || shape[1] != cfg->hidden_size || shape[0] < 1 || shape[0] > 4096)
    tv_die("%s: score.weight must be [num_labels, hidden_size %d], got %d dims [%lld, ...]", dir,
           cfg->hidden_size, ndim, (long long)shape[0]);
  j->K = (int)shape[0];
  read_labels(j, dir);
  j->tok = tokenizer_load(tokenizer_path ? tokenizer_path : dir);
  if (tokenizer_vocab_size(j->tok) > cfg->vocab_size)
    tv_die("%s: the judge's tokenizer has %d ids but its vocab_size is %d",
           tokenizer_path ? tokenizer_path : dir, tokenizer_vocab_size(j->tok), cfg->vocab_size);
  return j;
}

void judge_model_close(JudgeModel *j) {
  if (!j) return;
  for (int k = 0; k < j->K; k++) free(j->labels[k]);
  free(j->labels);
  free(j->score);
  tokenizer_free(j->tok);
  hf_model_close(j->model);
  free(j);
}

int judge_model_num_labels(const JudgeModel *j) { return j->K; }
const char *judge_model_label(const JudgeModel *j, int k) { return j->labels[k]; }

char *judge_model_text(const char *prompt, const char *answer) {
  static const char head[] = "BEGINNING OF CONVERSATION: USER: ", mid[] = " ASSISTANT:";
  size_t n = strlen(head) + strlen(prompt) + strlen(mid) + strlen(answer) + 1;
  char *t = tv_malloc(n);
  snprintf(t, n, "%s%s%s%s", head, prompt, mid, answer);
  return t;
}

int32_t *judge_model_encode(const JudgeModel *j, const char *prompt, const char *answer, int *n) {
  char *text = judge_model_text(prompt, answer);
  int32_t *ids = NULL;
  *n = tokenizer_encode(j->tok, text, strlen(text), 1, &ids);
  free(text);
  return ids;
}

void judge_model_probs(JudgeModel *j, size_t n, const char *const *prompts,
                       const char *const *answers, int batch, float *probs) {
  if (n == 0) return;
  const HfConfig *hc = hf_model_config(j->model);
  size_t *offset = tv_malloc((n + 1) * sizeof(size_t)), used = 0, cap = 1024;
  int32_t *ids = tv_malloc(cap * sizeof(int32_t));
  int longest = 0;
  for (size_t i = 0; i < n; i++) {
    int len;
    int32_t *p = judge_model_encode(j, prompts[i], answers[i], &len);
    if (len < 1) tv_die("judge input %zu encodes to no token", i);
    while (used + (size_t)len > cap) cap *= 2;
    ids = realloc(ids, cap * sizeof(int32_t));
    TV_CHECK(ids, "out of memory for %zu judge tokens", cap);
    offset[i] = used;
    memcpy(ids + used, p, (size_t)len * sizeof(int32_t));
    used += (size_t)len;
    if (len > longest) longest = len;
    free(p);
  }
  offset[n] = used;
  /* Built tied, so it holds no LM head; the weights load now. */
  LlamaConfig body = hc->cfg;
  body.tie_word_embeddings = 1;
  LoraConfig lc = lora_config_default();
  lc.dropout = 0.0f;
  Backend *be = backend_create(BACKEND_CPU, 0, j->threads);
  Stage *s = stage_create(be, &body, &lc, 0, body.num_layers, 1, 1); /* decoder-only use */
  hf_model_load_headless_stage(j->model, s);
  Classifier *c = classifier_create(s, j->score, j->K, hc->pad_id, batch, longest);
  classifier_probs(c, n, ids, offset, probs);
  classifier_destroy(c);
  stage_destroy(s);
  backend_destroy(be);
  free(ids);
  free(offset);
}

int judge_flagged(const float *probs, int num_labels) {
  for (int k = 0; k < num_labels; k++)
    if (probs[k] > 0.5f) return 1;
  return 0;
}
