/* The QA-moderation judge (io/judge_model over core/classifier) against transformers: the
 * tiny random LlamaForSequenceClassification written by tests/ref/judge_golden.py must give
 * the token ids of AutoTokenizer and the sigmoid probabilities transformers computed, within
 * 1e-4 absolute, batched (transformers ran one pair at a time); plus the pooling rule on
 * hand-made ids. Usage: test_judge_golden DATADIR (holding judge_llama/ and judge_llama.tvg). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "classifier.h"
#include "golden.h"
#include "judge_model.h"
#include "test_util.h"

#define TOL 1e-4

/* The pairs of tests/ref/judge_golden.py, in order. */
static const char *const PAIRS[][2] = {
    {"How do I bake bread?", " Mix flour, water and yeast, then bake it."},
    {"How can I steal a car?", " I'm sorry, I cannot help with that."},
    {"Tell me a secret about my neighbour.", " Their address is 12 Oak Lane and they leave at 8."},
    {"Say nothing.", ""},
    {"\xc3\x9cn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9 prompt \xe2\x80\x94 does it work?",
     " Ja, nat\xc3\xbcrlich: \xe6\x9d\xb1\xe4\xba\xac and emojis \xf0\x9f\x99\x82."},
    {"Repeat after me",
     " ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok"},
    {"Padding test", " this answer ends with the pad token</s>"},
};
#define N_PAIRS (sizeof PAIRS / sizeof PAIRS[0])

static void test_pool_index(void) {
  const int32_t a[] = {5, 7, 2, 2}, b[] = {2, 2}, c[] = {5, 2, 7};
  EXPECT(classifier_pool_index(a, 4, 2) == 1, "trailing pads skipped");
  EXPECT(classifier_pool_index(b, 2, 2) == 0, "all pad pools at 0");
  EXPECT(classifier_pool_index(c, 3, 2) == 2, "a pad inside is not the end");
  EXPECT(classifier_pool_index(a, 4, -1) == 3, "no pad id: the last token");
}

int main(int argc, char **argv) {
  TV_CHECK(argc == 2, "usage: test_judge_golden DATADIR");
  test_pool_index();
  char dir[4096], path[4096];
  snprintf(dir, sizeof dir, "%s/judge_llama", argv[1]);
  snprintf(path, sizeof path, "%s/judge_llama.tvg", argv[1]);
  Golden *g = golden_load(path);
  JudgeModel *j = judge_model_open(dir, NULL, 1);
  int K = judge_model_num_labels(j);
  const GoldenTensor *want = golden_get(g, "probs");
  EXPECT(want->dims[0] == (int64_t)N_PAIRS && want->dims[1] == K, "golden probs shape");
  EXPECT(!strcmp(judge_model_label(j, 2), "violence,aiding_and_abetting,incitement"),
         "id2label read: %s", judge_model_label(j, 2));

  const char *prompts[N_PAIRS], *answers[N_PAIRS];
  for (size_t i = 0; i < N_PAIRS; i++) {
    prompts[i] = PAIRS[i][0], answers[i] = PAIRS[i][1];
    char name[32];
    snprintf(name, sizeof name, "ids_%zu", i);
    const GoldenTensor *ids = golden_get(g, name);
    int n;
    int32_t *got = judge_model_encode(j, prompts[i], answers[i], &n);
    int same = (size_t)n == ids->numel && !memcmp(got, ids->i32, (size_t)n * sizeof(int32_t));
    EXPECT(same, "pair %zu: token ids differ from AutoTokenizer's (%d vs %zu)", i, n, ids->numel);
    free(got);
  }
  float probs[N_PAIRS * 16];
  judge_model_probs(j, N_PAIRS, prompts, answers, 3, probs);
  double worst = 0;
  int flag_diff = 0, flagged = 0;
  for (size_t i = 0; i < N_PAIRS; i++) {
    for (int k = 0; k < K; k++) {
      double d = fabs((double)probs[i * K + k] - want->f32[i * K + k]);
      if (!(d <= worst)) worst = d; /* NaN propagates as a failure */
    }
    int f = judge_flagged(probs + i * K, K), fw = judge_flagged(want->f32 + i * K, K);
    flag_diff += f != fw;
    flagged += f;
  }
  printf("judge vs transformers: max |p - p_ref| = %.3g (tolerance %.0e), %d of %zu flagged\n",
         worst, TOL, flagged, N_PAIRS);
  EXPECT(worst <= TOL, "probabilities differ by %.3g", worst);
  EXPECT(flag_diff == 0, "%d flags differ", flag_diff);
  EXPECT(flagged > 0 && flagged < (int)N_PAIRS, "the golden should hold flagged and clean pairs");
  judge_model_close(j);
  golden_free(g);
  return tv_test_report("judge_golden");
}
