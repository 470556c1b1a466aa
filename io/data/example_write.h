/* Writing example sets back out as Alpaca JSON Lines ({instruction, input, output}), e.g. the
 * attack's poison mix, so a training run reads them like any user file. */
#ifndef TV_EXAMPLE_WRITE_H
#define TV_EXAMPLE_WRITE_H

#include "dataset.h"

/* One object per example in order; written to path.tmp and renamed, so a crash never leaves
 * a torn file. One error line naming the path when it cannot be written. */
void example_set_write_jsonl(const ExampleSet *s, const char *path);

#endif
