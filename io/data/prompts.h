/* Prompt files for generation and evaluation: Alpaca / BeaverTails / refusal rows (the
 * dataset readers) or plain text, one instruction per line; the first max_rows rows. */
#ifndef TV_PROMPTS_H
#define TV_PROMPTS_H

#include <stddef.h>

#include "dataset.h"

/* "auto", "alpaca", "beavertails", "refusal" (io/dataset.h) or "plain". Returns 0, or -1
 * for an unknown name. */
int prompt_format_check(const char *name);

/* Reads path as `format` into out (Example rows; plain lines become instructions with no
 * input and no output; blank lines are skipped). max_rows > 0 keeps the first max_rows. A
 * file with no row is an error naming it (tv_die), as is any dataset error. */
void prompts_load(const char *path, const char *format, size_t max_rows, ExampleSet *out);

#endif
