/* Greedy generation (dist/generate over core/decode): the KV-cache path gives the same
 * tokens as the reference path (a stage_forward over the whole sequence for every new token),
 * on one process and across pipeline ranks, and stops at EOS exactly where the tokens say;
 * the cached-attention kernel equals the training attention kernel row by row.
 * Run under mpirun with any rank count up to the layer count (1 and 2 in ctest). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "comm.h"
#include "generate.h"
#include "model.h"
#include "model_fixture.h"
#include "test_util.h"

enum { L = 4, V = 64, N_PROMPTS = 5, MAX_NEW = 10, BATCH = 3 };

/* Random base weights and random non-zero LoRA B, merged into the base (as generate does
 * with an adapter), on the layers [l0, l1) of a stage sized for the whole generation. */
static Stage *random_stage(Backend *be, int l0, int l1, int max_B, int max_T) {
  LlamaConfig cfg = llama_config_default(V, 32, 48, L, 4, 2);
  LoraConfig lc = lora_config_default();
  lc.r = 4, lc.alpha = 8, lc.dropout = 0.0f;
  Stage *s = stage_create(be, &cfg, &lc, l0, l1, max_B, max_T);
  /* std 0.3: logits far enough apart that float noise cannot reorder the top two */
  stage_init_random_weights(s, 77, 0.3f);
  LoraSet *set = stage_lora(s);
  lora_set_init(be, set, 78);
  for (int l = l0; l < l1; l++)
    for (int t = 0; t < LORA_NUM_TARGETS; t++) {
      LoraAdapter *a = &set->layers[l - l0][t];
      size_t n = (size_t)a->out * lc.r;
      float *host = malloc(n * sizeof(float));
      fill_random_normal(host, n, 1000 + (uint64_t)l * 7 + (uint64_t)t, 0.2f);
      be->from_host(be, a->B, host, n * sizeof(float));
      free(host);
    }
  stage_merge_lora(s);
  return s;
}

/* Prompts of lengths 1, 3, 9, 2, 6 with fixed tokens. */
static PromptSet make_prompts(int32_t *ids, size_t *offset) {
  static const int lens[N_PROMPTS] = {1, 3, 9, 2, 6};
  size_t at = 0;
  for (int i = 0; i < N_PROMPTS; i++) {
    offset[i] = at;
    for (int t = 0; t < lens[i]; t++) ids[at++] = (int32_t)((i * 13 + t * 7 + 3) % V);
  }
  offset[N_PROMPTS] = at;
  return (PromptSet){.n = N_PROMPTS, .ids = ids, .offset = offset};
}

/* 1 when x occurs in a[0 .. n). */
static int memchr_i32(const int32_t *a, int n, int32_t x) {
  for (int i = 0; i < n; i++)
    if (a[i] == x) return 1;
  return 0;
}

static void run(Comm *comm, Stage *s, const PromptSet *p, int use_cache, const int32_t *eos,
                int n_eos, int32_t *out, int *len) {
  GenerateOptions o = {.max_new_tokens = MAX_NEW, .eos_ids = eos, .n_eos = n_eos,
                       .batch_size = BATCH, .use_cache = use_cache};
  generate_greedy(comm, s, &o, p, out, len);
}

static void expect_same(const int32_t *a, const int *alen, const int32_t *b, const int *blen,
                        const char *what) {
  for (int i = 0; i < N_PROMPTS; i++) {
    EXPECT(alen[i] == blen[i], "%s: sequence %d has %d vs %d tokens", what, i, alen[i], blen[i]);
    int same = alen[i] == blen[i] && !memcmp(a + i * MAX_NEW, b + i * MAX_NEW,
                                             (size_t)alen[i] * sizeof(int32_t));
    EXPECT(same, "%s: sequence %d differs", what, i);
  }
}

/* The cached-attention kernel against the training kernel: every row (b, t) of a causal
 * attention over q, k, v [B, T, ...], with k and v laid out as a cache of Tcap > T positions
 * and the rows given in a scrambled order. */
static void test_attention_cached_kernel(Backend *be) {
  enum { B = 3, T = 7, H = 4, Hkv = 2, Dh = 8, Tcap = 11 };
  size_t qn = (size_t)B * T * H * Dh, kn = (size_t)B * T * Hkv * Dh;
  float *q = malloc(qn * sizeof(float)), *k = malloc(kn * sizeof(float));
  float *v = malloc(kn * sizeof(float)), *ref = malloc(qn * sizeof(float));
  float *got = malloc(qn * sizeof(float)), *qs = malloc(qn * sizeof(float));
  float lse[B * H * T];
  size_t cn = (size_t)B * Tcap * Hkv * Dh;
  float *kc = calloc(cn, sizeof(float)), *vc = calloc(cn, sizeof(float));
  fill_random_normal(q, qn, 1, 1.0f);
  fill_random_normal(k, kn, 2, 1.0f);
  fill_random_normal(v, kn, 3, 1.0f);
  AttnShape shape = {.B = B, .T = T, .H = H, .Hkv = Hkv, .Dh = Dh};
  be->attention_forward(be, &shape, q, k, v, ref, lse);
  int32_t seq[B * T], pos[B * T];
  size_t KD = (size_t)Hkv * Dh, HD = (size_t)H * Dh;
  for (int i = 0; i < B * T; i++) {
    int r = (i * 5) % (B * T); /* 5 is coprime to 21: a permutation of the rows */
    seq[i] = r / T, pos[i] = r % T;
    memcpy(qs + i * HD, q + (size_t)r * HD, HD * sizeof(float));
    memcpy(kc + ((size_t)seq[i] * Tcap + pos[i]) * KD, k + (size_t)r * KD, KD * sizeof(float));
    memcpy(vc + ((size_t)seq[i] * Tcap + pos[i]) * KD, v + (size_t)r * KD, KD * sizeof(float));
  }
  AttnShape cached = {.B = B * T, .T = Tcap, .H = H, .Hkv = Hkv, .Dh = Dh};
  be->attention_cached(be, &cached, qs, kc, vc, seq, pos, got);
  double worst = 0;
  for (int i = 0; i < B * T; i++) {
    size_t r = (size_t)seq[i] * T + (size_t)pos[i];
    for (size_t e = 0; e < HD; e++) {
      double d = fabs((double)got[i * HD + e] - ref[r * HD + e]);
      worst = d > worst || d != d ? d : worst;
    }
  }
  EXPECT(worst <= 1e-5, "attention_cached differs from attention_forward by %.3g", worst);
  free(q), free(k), free(v), free(ref), free(got), free(qs), free(kc), free(vc);
}

int main(int argc, char **argv) {
  Comm *comm = comm_init(&argc, &argv);
  int rank = comm_rank(comm), size = comm_size(comm), l0, l1;
  comm_split_layers(L, size, rank, &l0, &l1);
  Backend *be = backend_cpu_create(1);
  test_attention_cached_kernel(be);
  int32_t ids[64];
  size_t offset[N_PROMPTS + 1];
  PromptSet p = make_prompts(ids, offset);
  int ctx = 9 + MAX_NEW;

  /* One process with every layer, KV cache: the reference of all other runs. */
  int32_t ref[N_PROMPTS * MAX_NEW];
  int ref_len[N_PROMPTS];
  Stage *whole = random_stage(be, 0, L, BATCH, ctx);
  run(NULL, whole, &p, 1, NULL, 0, ref, ref_len);
  int32_t full[N_PROMPTS * MAX_NEW];
  int full_len[N_PROMPTS];
  run(NULL, whole, &p, 0, NULL, 0, full, full_len);
  stage_destroy(whole);
  expect_same(ref, ref_len, full, full_len, "one process: cache vs full forward");
  /* A run that repeats one token would make the comparison weak: want variety. */
  int distinct = 0, seen[V] = {0};
  for (int i = 0; i < N_PROMPTS * MAX_NEW; i++) distinct += !seen[ref[i]]++;
  EXPECT(distinct >= 8, "only %d distinct generated tokens", distinct);

  /* The pipeline of this run's ranks, both paths. */
  Stage *s = random_stage(be, l0, l1, BATCH, ctx);
  int32_t got[N_PROMPTS * MAX_NEW];
  int got_len[N_PROMPTS];
  run(comm, s, &p, 1, NULL, 0, got, got_len);
  expect_same(got, got_len, ref, ref_len, "ranks, cache");
  run(comm, s, &p, 0, NULL, 0, got, got_len);
  expect_same(got, got_len, ref, ref_len, "ranks, full forward");

  /* EOS: take a token sequence 0 first produces at step >= 2 as EOS; each sequence must end
   * right after its first occurrence in the no-EOS tokens, and be unchanged elsewhere. */
  int first_new = 2;
  while (first_new < MAX_NEW - 1 && memchr_i32(ref, first_new, ref[first_new])) first_new++;
  int32_t eos[2] = {ref[first_new], V + 5 /* an id never produced */};
  int32_t want[N_PROMPTS * MAX_NEW];
  int want_len[N_PROMPTS];
  memcpy(want, ref, sizeof want);
  for (int i = 0; i < N_PROMPTS; i++) {
    want_len[i] = ref_len[i];
    for (int t = 0; t < ref_len[i]; t++)
      if (ref[i * MAX_NEW + t] == eos[0]) {
        want_len[i] = t + 1;
        break;
      }
  }
  EXPECT(want_len[0] == first_new + 1 && want_len[0] < MAX_NEW,
         "EOS chosen from sequence 0 should end it at %d, not %d", first_new + 1, want_len[0]);
  for (int use_cache = 0; use_cache <= 1; use_cache++) {
    run(comm, s, &p, use_cache, eos, 2, got, got_len);
    expect_same(got, got_len, want, want_len, use_cache ? "EOS, cache" : "EOS, full forward");
  }
  stage_destroy(s);
  backend_destroy(be);
  int failed = tv_test_report(rank == 0 ? "generate" : "generate (other rank)");
  comm_finalize(comm);
  return failed;
}
