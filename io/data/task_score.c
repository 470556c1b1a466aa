/* FA scorers (see task_score.h). The GSM8K rule follows the Vaccine reference evaluation:
 * commas removed, numbers found as -?\d+\.?\d*, the final-answer segment preferred. */
#include "task_score.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static const char *const kind_names[] = {"sst2", "agnews", "gsm8k"};

int task_kind_parse(const char *name, TaskKind *out) {
  for (int k = 0; k < 3; k++)
    if (name && strcmp(name, kind_names[k]) == 0) {
      *out = (TaskKind)k;
      return 0;
    }
  return -1;
}

const char *task_kind_name(TaskKind k) { return (unsigned)k < 3 ? kind_names[k] : "?"; }

int task_score_sst2(const char *answer, const char *label) {
  if (!answer || !label || !label[0]) return 0;
  if (strstr(answer, label)) return 1;
  /* The other case of the first letter: "Positive" for "positive" and back. */
  size_t n = strlen(label);
  char *alt = tv_malloc(n + 1);
  memcpy(alt, label, n + 1);
  unsigned char c0 = (unsigned char)alt[0];
  alt[0] = (char)(isupper(c0) ? tolower(c0) : toupper(c0));
  int hit = strstr(answer, alt) != NULL;
  free(alt);
  return hit;
}

int task_score_agnews(const char *answer, const char *label) {
  return answer && label && label[0] && strstr(answer, label) != NULL;
}

/* Next match of -?\d+\.?\d* in [p, end): sets *start and returns its length, 0 when none. */
static size_t next_number(const char *p, const char *end, const char **start) {
  for (; p < end; p++) {
    const char *q = p;
    if (*q == '-' && q + 1 < end && isdigit((unsigned char)q[1])) q++;
    if (!isdigit((unsigned char)*q)) continue;
    while (q < end && isdigit((unsigned char)*q)) q++;
    if (q < end && *q == '.') {
      q++;
      while (q < end && isdigit((unsigned char)*q)) q++;
    }
    *start = p;
    return (size_t)(q - p);
  }
  return 0;
}

static double number_value(const char *s, size_t n) {
  char buf[64];
  if (n >= sizeof buf) n = sizeof buf - 1; /* absurdly long digit runs: compare the prefix */
  memcpy(buf, s, n);
  buf[n] = '\0';
  return strtod(buf, NULL);
}

/* The reference's rule: the first number of the segment after the first final-answer
 * prompt (up to the next one), else the last number anywhere. Returns 0 when none. */
static int predicted_number(const char *text, double *out) {
  static const char prompt[] = "The final answer is: ";
  const size_t plen = sizeof prompt - 1;
  const char *end = text + strlen(text), *s, *last = NULL;
  size_t n, last_n = 0;
  const char *at = strstr(text, prompt);
  if (at) {
    const char *seg = at + plen, *seg_end = strstr(seg, prompt);
    if (!seg_end) seg_end = end;
    if ((n = next_number(seg, seg_end, &s)) > 0) {
      *out = number_value(s, n);
      return 1;
    }
  }
  for (const char *p = text; (n = next_number(p, end, &s)) > 0; p = s + n) {
    last = s;
    last_n = n;
  }
  if (!last) return 0;
  *out = number_value(last, last_n);
  return 1;
}

static char *without_commas(const char *s) {
  size_t n = strlen(s), j = 0;
  char *out = tv_malloc(n + 1);
  for (size_t i = 0; i < n; i++)
    if (s[i] != ',') out[j++] = s[i];
  out[j] = '\0';
  return out;
}

int task_score_gsm8k(const char *answer, const char *reference) {
  if (!answer || !reference) return 0;
  /* A full GSM8K solution carries its number after the last "####". */
  const char *ref = reference, *hash;
  while ((hash = strstr(ref, "####")) != NULL) ref = hash + 4;
  char *ref_clean = without_commas(ref), *ans_clean = without_commas(answer);
  const char *s;
  double want = 0, got = 0;
  int have_ref;
  if (ref == reference && strstr(ref_clean, "The final answer is: ")) {
    /* A solution in the answer format (the synthetic world's, and what training targets
     * look like): its number is read by the same rule as a prediction. */
    have_ref = predicted_number(ref_clean, &want);
  } else {
    size_t n = next_number(ref_clean, ref_clean + strlen(ref_clean), &s);
    have_ref = n > 0;
    if (have_ref) want = number_value(s, n);
  }
  int ok = have_ref && predicted_number(ans_clean, &got) && got == want;
  free(ref_clean);
  free(ans_clean);
  return ok;
}

int task_score(TaskKind k, const char *answer, const char *reference) {
  switch (k) {
    case TASK_SST2: return task_score_sst2(answer, reference);
    case TASK_AGNEWS: return task_score_agnews(answer, reference);
    case TASK_GSM8K: return task_score_gsm8k(answer, reference);
  }
  return 0;
}
