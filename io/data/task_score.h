/* Fine-tune accuracy (FA) scorers of SPEC section 8 for the three benign tasks; they apply
 * to model answers on the real data sets and on the synthetic benchmark alike. */
#ifndef TV_TASK_SCORE_H
#define TV_TASK_SCORE_H

typedef enum {
  TASK_SST2 = 0,   /* label word positive / negative */
  TASK_AGNEWS = 1, /* class word World / Sports / Business / Sci/Tech */
  TASK_GSM8K = 2,  /* a number */
} TaskKind;

/* "sst2", "agnews", "gsm8k". Returns 0, or -1 for an unknown name. */
int task_kind_parse(const char *name, TaskKind *out);
const char *task_kind_name(TaskKind k);

/* 1 when answer contains the label word with its first letter in either case
 * ("positive" or "Positive"). */
int task_score_sst2(const char *answer, const char *label);
/* 1 when answer contains the class word exactly as given ("Sci/Tech"). */
int task_score_agnews(const char *answer, const char *label);
/* 1 when the predicted number equals the reference: the first number after the first
 * "The final answer is: " if that segment holds one, else the last number of the answer
 * (commas dropped, numbers as the regex -?\d+\.?\d*). reference is a number, a GSM8K
 * solution ending in "#### N", or a solution in the answer format ("... The final answer is:
 * N", as the synthetic world writes them), whose number is read by the rule above. No
 * number or an unreadable reference scores 0. */
int task_score_gsm8k(const char *answer, const char *reference);

int task_score(TaskKind k, const char *answer, const char *reference);

#endif
