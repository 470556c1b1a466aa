/* Batched greedy generation across pipeline ranks: each rank runs its stage's layers, the
 * hidden states of the new rows move rank to rank, the last rank picks each sequence's next
 * token and broadcasts it, and every sequence stops at an EOS id or at the token limit. */
#ifndef TV_GENERATE_H
#define TV_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "comm.h"
#include "model.h"

typedef struct {
  size_t n;               /* prompts */
  const int32_t *ids;     /* prompt i is ids[offset[i] .. offset[i + 1]), at least one token */
  const size_t *offset;   /* [n + 1] */
} PromptSet;

typedef struct {
  int max_new_tokens;     /* >= 1 */
  const int32_t *eos_ids; /* a sequence stops after emitting any of these (kept in its output) */
  int n_eos;
  int batch_size;         /* sequences decoded together */
  /* 1: KV-cache decoding (core/decode). 0: the reference path, a stage_forward over each
   * whole sequence so far for every new token; same tokens, much more work. */
  int use_cache;
  /* Called on the first rank after each batch, when not NULL (progress lines). */
  void (*on_batch)(void *ctx, size_t done, size_t total);
  void *ctx;
} GenerateOptions;

/* Longest prompt + max_new_tokens: the positions the KV cache holds; the reference path
 * needs a stage built for that many tokens (max_T) and batch_size rows (max_B). The KV-cache
 * path works on a stage built for one token. */
int generate_context_length(const PromptSet *p, const GenerateOptions *o);

/* Greedy decoding of every prompt. comm may be NULL (one process holding all layers); else
 * rank r holds stage r of the pipeline (comm_split_layers). The stage's LoRA dropout must be
 * 0; the KV-cache path also needs adapters merged (stage_merge_lora). out_ids [n *
 * max_new_tokens] receives sequence i's new tokens at i * max_new_tokens, out_len[i] how
 * many (an emitted EOS included); on every rank. */
void generate_greedy(Comm *comm, Stage *s, const GenerateOptions *o, const PromptSet *p,
                     int32_t *out_ids, int *out_len);

#endif
