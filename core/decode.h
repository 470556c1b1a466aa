/* KV-cache decoding for generation: a Decoder keeps the keys and values of its stage's
 * layers for up to S sequences, so each new token costs one row through the layers instead
 * of a forward over the whole sequence. Works on any pipeline stage: the first embeds
 * tokens, later ones take hidden states, the last also gives final-norm states and logits. */
#ifndef TV_DECODE_H
#define TV_DECODE_H

#include <stdint.h>

#include "model.h"

/* Letters: n appended rows of one call, S sequence slots, Tc cache positions per slot,
 * D width, V vocab, KD = Hkv * Dh. */

typedef struct Decoder Decoder;

/* A decoder over stage s for max_seqs sequences of up to max_len positions each, taking at
 * most max_rows rows per call. It keeps its own cache, rotary tables and buffers, so the
 * stage may be built for a single token (stage_create(..., 1, 1)): its activation arena is
 * not used. The decoder reads the base weights only: adapters must be merged first
 * (stage_merge_lora), and a stage whose LoRA B is not zero is refused. */
Decoder *decoder_create(Stage *s, int max_seqs, int max_len, int max_rows);
void decoder_destroy(Decoder *d);

/* Empties every sequence slot (the next rows start at position 0). */
void decoder_clear(Decoder *d);
int decoder_length(const Decoder *d, int seq); /* positions cached for slot seq */

/* Appends n rows: row i is the next position of sequence slot seq[i] (rows of one slot in
 * order). First stage: tokens [n] host ids; x_in ignored. Other stages: x_in [n, D] backend
 * memory. Returns this stage's output [n, D] (decoder-owned backend memory, valid until the
 * next call): the input of the next stage, or on the last stage the final norm's input. */
const float *decoder_forward(Decoder *d, int n, const int32_t *seq, const int32_t *tokens,
                             const float *x_in);

/* Last stage only, for rows[0 .. count) of the last decoder_forward (count <= max_seqs): the
 * final-norm hidden states [count, D], or the logits [count, V] (decoder-owned backend
 * memory). */
const float *decoder_final_hidden(Decoder *d, const int *rows, int count);
const float *decoder_logits(Decoder *d, const int *rows, int count);

/* Index of the largest of x[0 .. n) (the first one on ties, as torch.argmax). */
int decode_argmax(const float *x, int n);

#endif
