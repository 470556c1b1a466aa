/* A Llama sequence classifier with a multi-label head (the beaver-dam QA-moderation
 * layout, LlamaForSequenceClassification): the decoder's final-norm hidden state at the
 * last token that is not the pad id, times score [labels, D], through a sigmoid. */
#ifndef TV_CLASSIFIER_H
#define TV_CLASSIFIER_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

typedef struct Classifier Classifier;

/* s holds every layer [0, L) of the body (its LM head is never read). score: host [labels, D]
 * (copied). pad_id < 0: no pad id (pool at the last token). Sequences of up to max_len
 * tokens, up to max_seqs per decoder call (the stage may be built for one token). */
Classifier *classifier_create(Stage *s, const float *score, int num_labels, int pad_id,
                              int max_seqs, int max_len);
void classifier_destroy(Classifier *c);

/* Where the head reads sequence ids[0 .. n): the last position whose id is not pad_id, or
 * 0 when every id is pad (as transformers pools). */
int classifier_pool_index(const int32_t *ids, int n, int pad_id);

/* probs[i * labels + k] = sigmoid(score_k . h_i) for sequence i = ids[offset[i] ..
 * offset[i + 1]) (each 1 .. max_len tokens), i < n. */
void classifier_probs(Classifier *c, size_t n, const int32_t *ids, const size_t *offset,
                      float *probs);

#endif
