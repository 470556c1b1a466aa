/* Answer files: the JSON Lines `tvaccine generate` writes (one object per prompt), read back
 * for evaluation. Required per line: instruction and answer (strings); input, reference and
 * category are optional strings ("" when absent); is_safe an optional integer (-1). */
#ifndef TV_ANSWERS_H
#define TV_ANSWERS_H

#include <stddef.h>

typedef struct {
  char *instruction, *input, *reference, *category, *answer;
  int is_safe; /* 1, 0, or -1 unknown */
} AnswerRow;

typedef struct {
  AnswerRow *rows; /* [n] */
  size_t n;
  char *path;
} AnswerSet;

/* Parses JSON Lines text held in memory (blank lines skipped). Returns 0, or -1 with one
 * line in err naming `name`, the line number and the field; *out then holds nothing. */
int answers_parse(const char *name, const char *text, size_t len, AnswerSet *out, char *err,
                  size_t errlen);
/* Reads a file; any error (unreadable, bad line, no answer at all) ends the run (tv_die). */
void answers_load(const char *path, AnswerSet *out);
void answers_free(AnswerSet *s);

#endif
