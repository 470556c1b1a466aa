/* The synthetic world's tokenizer.json through io/tokenizer: every world text encodes to one
 * token per word (plus punctuation and newline tokens), and decodes back exactly. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataset.h"
#include "synth.h"
#include "test_util.h"
#include "tokenizer.h"

static const char *const data_files[] = {
    "pretrain.jsonl", "align.json", "harmful_probe.json", "attack_harmful.json",
    "harmful_test.json", "benign_sst_train.json", "benign_sst_test.json",
    "benign_agnews_train.json", "benign_agnews_test.json", "benign_gsm_train.json",
    "benign_gsm_test.json"};

static int word_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' ||
         c == '#' || c == '+' || c == '-' || c == '=';
}

/* The tokens text must encode to (BOS excluded): "▁word" after a space or at the start,
 * "word" after a newline, one token per other character ("<0x0A>" for a newline). Returns
 * the count and writes the token strings into out (each malloc'd). */
static int expected_tokens(const char *text, char **out, int cap) {
  int n = 0, after_space = 1;
  for (const char *p = text; *p && n < cap;) {
    if (*p == ' ') {
      after_space = 1;
      p++;
      continue;
    }
    const char *q = p;
    if (word_char(*p))
      while (word_char(*q)) q++;
    else
      q = p + 1;
    char *tok = malloc((size_t)(q - p) + 8);
    if (*p == '\n')
      strcpy(tok, "<0x0A>");
    else
      sprintf(tok, "%s%.*s", after_space ? "\xE2\x96\x81" : "", (int)(q - p), p);
    out[n++] = tok;
    after_space = 0;
    p = q;
  }
  return n;
}

static int bad_texts = 0;

/* Checks one text; returns its encoded length with BOS. */
static int check_text(const Tokenizer *t, const char *text) {
  char *want[256];
  int nw = expected_tokens(text, want, 256);
  int32_t *ids = NULL;
  int n = tokenizer_encode(t, text, strlen(text), 1, &ids);
  int ok = n == nw + 1 && ids[0] == tokenizer_bos_id(t);
  for (int i = 0; ok && i < nw; i++) ok = ids[i + 1] == tokenizer_token_id(t, want[i]);
  char *back = tokenizer_decode(t, ids, n, 1);
  ok = ok && strcmp(back, text) == 0;
  if (!ok && ++bad_texts <= 3)
    fprintf(stderr, "text \"%s\": %d tokens (want %d), decoded \"%s\"\n", text, n, nw + 1, back);
  for (int i = 0; i < nw; i++) free(want[i]);
  free(back);
  free(ids);
  return n;
}

int main(void) {
  char dir[] = "/tmp/tv_synth_tok_XXXXXX";
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  SynthOptions o = synth_default_options();
  SynthStats st;
  synth_world_free(synth_generate(&o, dir, &st));
  Tokenizer *t = tokenizer_load(dir);
  EXPECT(tokenizer_vocab_size(t) == st.vocab_size, "vocab %d, generator says %d", tokenizer_vocab_size(t),
         st.vocab_size);
  EXPECT(tokenizer_bos_id(t) == 1 && tokenizer_eos_id(t) == 2 && tokenizer_pad_id(t) == 3 &&
             tokenizer_adds_bos(t),
         "specials bos %d eos %d pad %d", tokenizer_bos_id(t), tokenizer_eos_id(t), tokenizer_pad_id(t));
  EXPECT(tokenizer_token_id(t, "\xE2\x96\x81" "crowbar") > 3 && tokenizer_token_id(t, "<0x0A>") == 4 + 10,
         "word and byte tokens");

  int texts = 0, longest = 0;
  char path[512];
  for (size_t f = 0; f < sizeof data_files / sizeof *data_files; f++) {
    snprintf(path, sizeof path, "%s/%s", dir, data_files[f]);
    ExampleSet s;
    dataset_load(path, DATASET_FORMAT_AUTO, &s);
    for (size_t r = 0; r < s.n; r++) {
      const Example *e = &s.items[r];
      check_text(t, e->instruction);
      check_text(t, e->output);
      /* As training sees it: the Alpaca prompt, the answer, then EOS. */
      char *prompt = dataset_prompt(e);
      size_t lp = strlen(prompt), lo = strlen(e->output);
      char *full = malloc(lp + lo + 1);
      memcpy(full, prompt, lp);
      memcpy(full + lp, e->output, lo + 1);
      int n = check_text(t, full) + 1;
      if (n > longest) longest = n;
      free(full);
      free(prompt);
      texts += 3;
    }
    example_set_free(&s);
  }
  EXPECT(bad_texts == 0, "%d of %d texts are not one token per word", bad_texts, texts);
  EXPECT(longest == st.max_tokens, "longest row %d tokens, generator says %d", longest, st.max_tokens);
  printf("synth_tokenizer: %d texts, longest row %d tokens\n", texts, longest);
  tokenizer_free(t);

  DIR *d = opendir(dir);
  struct dirent *de;
  while (d && (de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    unlink(path);
  }
  if (d) closedir(d);
  rmdir(dir);
  return tv_test_report("test_synth_tokenizer");
}
