/* The Alpaca prompt template and tokenization with label masks, SPEC section 4: the same
 * token ids and prompt lengths as the Alpaca / Vaccine reference preprocessing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dataset.h"

/* The two strings of the Stanford Alpaca reference, verbatim (SPEC section 4). */
static const char prompt_no_input_head[] =
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n";
static const char prompt_input_head[] =
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n### Instruction:\n";
static const char prompt_input_mid[] = "\n\n### Input:\n";
static const char prompt_tail[] = "\n\n### Response:\n";

const char *const dataset_template_texts[DATASET_TEMPLATE_TEXTS] = {
    prompt_no_input_head, prompt_input_head, prompt_input_mid, prompt_tail};

char *dataset_prompt(const Example *ex) {
  /* As the reference: an empty input selects the template without the input block. */
  int with_input = ex->input && ex->input[0];
  const char *head = with_input ? prompt_input_head : prompt_no_input_head;
  size_t n = strlen(head) + strlen(ex->instruction) + strlen(prompt_tail) + 1;
  if (with_input) n += strlen(prompt_input_mid) + strlen(ex->input);
  char *s = tv_malloc(n);
  if (with_input)
    snprintf(s, n, "%s%s%s%s%s", head, ex->instruction, prompt_input_mid, ex->input, prompt_tail);
  else
    snprintf(s, n, "%s%s%s", head, ex->instruction, prompt_tail);
  return s;
}

void dataset_encode(const Tokenizer *tok, const ExampleSet *set, int max_len, EncodedSet *out) {
  const char *name = set->name ? set->name : "dataset";
  if (max_len < 2) tv_die("%s: max_len must be at least 2 tokens, got %d", name, max_len);
  int32_t eos = tokenizer_eos_id(tok);
  if (eos < 0) tv_die("%s: the tokenizer defines no EOS token, and every target ends with one", name);
  int32_t pad = tokenizer_pad_id(tok);
  memset(out, 0, sizeof *out);
  out->n = set->n;
  out->max_len = max_len;
  out->pad_id = pad >= 0 ? pad : eos;
  out->offset = tv_malloc((set->n + 1) * sizeof *out->offset);
  out->n_prompt = tv_malloc((set->n ? set->n : 1) * sizeof *out->n_prompt);
  size_t cap = set->n * 64 + 64, used = 0;
  out->ids = tv_malloc(cap * sizeof *out->ids);
  /* A tokenizer whose special-token rule also appends EOS (add_eos_token: true) would end the
   * prompt with EOS and the target with two: drop the one it adds, the target gets ours. */
  int32_t *empty = NULL;
  int n_empty = tokenizer_encode(tok, "", 0, 1, &empty);
  int adds_eos = n_empty > tokenizer_adds_bos(tok) && empty[n_empty - 1] == eos;
  free(empty);
  for (size_t i = 0; i < set->n; i++) {
    const Example *ex = &set->items[i];
    char *prompt = dataset_prompt(ex);
    size_t plen = strlen(prompt), olen = strlen(ex->output);
    char *text = tv_malloc(plen + olen + 1);
    memcpy(text, prompt, plen);
    memcpy(text + plen, ex->output, olen + 1);
    int32_t *full = NULL, *head = NULL;
    int nfull = tokenizer_encode(tok, text, plen + olen, 1, &full);
    int nhead = tokenizer_encode(tok, prompt, plen, 1, &head);
    TV_CHECK(nfull >= 0 && nhead >= 0, "tokenizer_encode failed on example %zu of %s", i, name);
    if (adds_eos) nfull--, nhead--;
    /* The reference tokenizes with truncation to max_len: the sequence loses its end
     * (the EOS first), and the prompt length is counted on the truncated prompt. */
    int len = nfull + 1;
    if (len > max_len) {
      len = max_len;
      out->n_truncated++;
    }
    int np = nhead < len ? nhead : len;
    if (used + (size_t)len > cap) {
      while (used + (size_t)len > cap) cap *= 2;
      out->ids = realloc(out->ids, cap * sizeof *out->ids);
      TV_CHECK(out->ids, "out of memory encoding %s (%zu tokens)", name, cap);
    }
    int keep = nfull < len ? nfull : len;
    memcpy(out->ids + used, full, (size_t)keep * sizeof *full);
    if (keep < len) out->ids[used + keep] = eos;
    out->offset[i] = used;
    out->n_prompt[i] = np;
    used += (size_t)len;
    /* Position 0 is never predicted (next-token shift), so it is never a target. */
    int first_target = np > 1 ? np : 1;
    if (first_target >= len)
      out->n_no_target++;
    else
      out->n_target_tokens += (size_t)(len - first_target);
    free(full);
    free(head);
    free(text);
    free(prompt);
  }
  out->offset[set->n] = used;
}

int dataset_check_targets(const EncodedSet *s, const char *name, char *err, size_t errlen) {
  if (s->n_target_tokens > 0) return 0;
  snprintf(err, errlen,
           "%s: none of its %zu samples keeps a target token after truncation to max_len %d "
           "(each prompt fills max_len); raise max_len or shorten the prompts",
           name, s->n, s->max_len);
  return -1;
}

void encoded_set_free(EncodedSet *s) {
  free(s->ids);
  free(s->offset);
  free(s->n_prompt);
  memset(s, 0, sizeof *s);
}

void dataset_encode_summary(const EncodedSet *s, const char *name, char *buf, size_t buflen) {
  snprintf(buf, buflen,
           "%s: %zu samples, %zu target tokens, %zu truncated at max_len %d, %zu with no target "
           "(prompt >= max_len; kept, no loss)",
           name ? name : "dataset", s->n, s->n_target_tokens, s->n_truncated, s->max_len, s->n_no_target);
}
