/* Counter-based generator (core/rng): Philox4x32-10 known answers, the (seed, stream,
 * index) -> (key, counter) mapping, uniformity, determinism and resumable sequences.
 *
 * Mapping under test (core/rng.h + core/rng.c):
 *   philox4x32(seed, stream, index, out) = Philox4x32-10(counter, key) with
 *     key     = { seed lo32, seed hi32 }
 *     counter = { stream lo32, stream hi32, index lo32, index hi32 }
 *   i.e. Random123's philox4x32_R(10, ctr, key) with ctr.v[0..3] and key.v[0..1] as above.
 * The known-answer vectors are Random123's tests/kat_vectors for "philox4x32 10"
 * (counter words, then key words, then the expected output words). */
#include <stdint.h>
#include <string.h>

#include "rng.h"
#include "test_util.h"

/* Expected outputs of Random123 kat_vectors, philox4x32 R=10. */
typedef struct {
  uint32_t ctr[4], key[2], out[4];
} Kat;

static const Kat kKats[] = {
    {{0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u},
     {0x00000000u, 0x00000000u},
     {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
    {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
     {0xffffffffu, 0xffffffffu},
     {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
    /* counter = first digits of pi, key = the next ones: the only vector of the three
     * whose words all differ, so it is the one that pins the word order of the mapping. */
    {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
     {0xa4093822u, 0x299f31d0u},
     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
};

static uint64_t join64(uint32_t lo, uint32_t hi) { return ((uint64_t)hi << 32) | lo; }

/* An independent Philox4x32-10 written from the paper (Salmon et al., SC 2011, and
 * Random123's philox.h): ten rounds, key bumped between rounds. Used to check the
 * mapping on many random inputs beyond the three published vectors. */
static void philox_ref(const uint32_t ctr_in[4], const uint32_t key_in[2], uint32_t out[4]) {
  uint32_t c[4] = {ctr_in[0], ctr_in[1], ctr_in[2], ctr_in[3]};
  uint32_t k[2] = {key_in[0], key_in[1]};
  for (int r = 0; r < 10; r++) {
    if (r > 0) {
      k[0] += 0x9E3779B9u; /* golden ratio */
      k[1] += 0xBB67AE85u; /* sqrt(3) - 1 */
    }
    uint64_t a = (uint64_t)0xD2511F53u * c[0];
    uint64_t b = (uint64_t)0xCD9E8D57u * c[2];
    uint32_t n0 = (uint32_t)(b >> 32) ^ c[1] ^ k[0];
    uint32_t n1 = (uint32_t)b;
    uint32_t n2 = (uint32_t)(a >> 32) ^ c[3] ^ k[1];
    uint32_t n3 = (uint32_t)a;
    c[0] = n0, c[1] = n1, c[2] = n2, c[3] = n3;
  }
  memcpy(out, c, sizeof c);
}

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static void test_known_answers(void) {
  for (size_t i = 0; i < sizeof kKats / sizeof kKats[0]; i++) {
    const Kat *t = &kKats[i];
    uint32_t out[4], ref[4];
    philox4x32(join64(t->key[0], t->key[1]), join64(t->ctr[0], t->ctr[1]),
               join64(t->ctr[2], t->ctr[3]), out);
    for (int w = 0; w < 4; w++)
      EXPECT(out[w] == t->out[w], "KAT %zu word %d: got 0x%08x want 0x%08x", i, w, out[w],
             t->out[w]);
    /* The reference implementation must reproduce the published vectors too, or the
     * random-input comparison below would prove nothing. */
    philox_ref(t->ctr, t->key, ref);
    EXPECT(memcmp(ref, t->out, sizeof ref) == 0, "reference Philox disagrees with KAT %zu", i);
  }
}

static void test_mapping_random(void) {
  uint64_t s = 42;
  int bad = 0;
  for (int i = 0; i < 2000; i++) {
    uint64_t seed = splitmix(&s), stream = splitmix(&s), index = splitmix(&s);
    if (i % 4 == 1) index &= 0xffff; /* the small indices real code uses */
    uint32_t ctr[4] = {(uint32_t)stream, (uint32_t)(stream >> 32), (uint32_t)index,
                       (uint32_t)(index >> 32)};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t got[4], want[4];
    philox4x32(seed, stream, index, got);
    philox_ref(ctr, key, want);
    if (memcmp(got, want, sizeof got) != 0) bad++;
  }
  EXPECT(bad == 0, "%d of 2000 random (seed, stream, index) disagree with the documented "
                   "key/counter mapping", bad);
}

/* Pearson chi-square over 20 equal bins. With 19 degrees of freedom the 0.999 quantile is
 * 43.82: a correct generator fails a given (fixed, hence deterministic) sample with
 * probability 0.1 %, while a biased one (e.g. dropping a bit or mapping to [0, 0.5))
 * gives values in the thousands. */
#define CHI2_BINS 20
#define CHI2_CRIT_999 43.82

static double chi_square(const int *count, int n) {
  double expect = (double)n / CHI2_BINS, chi = 0;
  for (int b = 0; b < CHI2_BINS; b++) chi += (count[b] - expect) * (count[b] - expect) / expect;
  return chi;
}

static void test_uniform_at(void) {
  const int n = 200000;
  const uint64_t seeds[3] = {0, 1234567, 0xdeadbeefcafef00dull};
  const uint64_t streams[3] = {0, 7, rng_stream_id(RNG_TAG_DROPOUT, 3, 1, 4)};
  for (int c = 0; c < 3; c++) {
    int count[CHI2_BINS] = {0};
    int out_of_range = 0, not_24bit = 0;
    double sum = 0;
    for (int i = 0; i < n; i++) {
      float u = rng_uniform_at(seeds[c], streams[c], (uint64_t)i);
      if (!(u >= 0.0f && u < 1.0f)) {
        out_of_range++;
        continue;
      }
      /* "24 random bits": u * 2^24 must be an integer. */
      double scaled = (double)u * 16777216.0;
      if (scaled != floor(scaled)) not_24bit++;
      sum += u;
      count[(int)(u * CHI2_BINS)]++;
    }
    double chi = chi_square(count, n);
    EXPECT(out_of_range == 0, "case %d: %d values outside [0,1)", c, out_of_range);
    EXPECT(not_24bit == 0, "case %d: %d values are not multiples of 2^-24", c, not_24bit);
    EXPECT(chi < CHI2_CRIT_999, "case %d: chi-square %.2f over %d bins (crit %.2f)", c, chi,
           CHI2_BINS, CHI2_CRIT_999);
    /* Mean of U[0,1): sd of the sample mean is sqrt(1/12/n) = 6.5e-4; 5 sd bound. */
    EXPECT(fabs(sum / n - 0.5) < 5 * sqrt(1.0 / 12.0 / n), "case %d: mean %.5f", c, sum / n);
  }
}

static void test_sequential_uniformity(void) {
  const int n = 200000;
  Rng r = rng_make(99, 5);
  int cu[CHI2_BINS] = {0}, cd[CHI2_BINS] = {0};
  int bad = 0;
  for (int i = 0; i < n; i++) {
    float u = rng_next_uniform(&r);
    double d = rng_next_double(&r);
    if (!(u >= 0.0f && u < 1.0f) || !(d >= 0.0 && d < 1.0)) {
      bad++;
      continue;
    }
    cu[(int)(u * CHI2_BINS)]++;
    cd[(int)(d * CHI2_BINS)]++;
  }
  EXPECT(bad == 0, "%d sequential draws outside [0,1)", bad);
  EXPECT(chi_square(cu, n) < CHI2_CRIT_999, "rng_next_uniform chi-square %.2f",
         chi_square(cu, n));
  EXPECT(chi_square(cd, n) < CHI2_CRIT_999, "rng_next_double chi-square %.2f",
         chi_square(cd, n));
  /* u64: each of the 64 bits should be set about half the time (sd 0.5/sqrt(n) = 1.1e-3
   * at n = 200000; bound 5 sd). A generator that leaves the high word zero fails this. */
  Rng q = rng_make(3, 4);
  int ones[64] = {0};
  for (int i = 0; i < n; i++) {
    uint64_t x = rng_next_u64(&q);
    for (int b = 0; b < 64; b++) ones[b] += (int)((x >> b) & 1);
  }
  int worst = 0;
  double worst_dev = 0;
  for (int b = 0; b < 64; b++) {
    double dev = fabs((double)ones[b] / n - 0.5);
    if (dev > worst_dev) worst_dev = dev, worst = b;
  }
  EXPECT(worst_dev < 5 * 0.5 / sqrt((double)n), "rng_next_u64 bit %d set with frequency %.4f",
         worst, (double)ones[worst] / n);
}

/* rng_below over n = 3 * 2^62, where 2^64 mod n = 2^62: a plain x % n would give the values
 * below 2^62 two words each and the rest one, so they would come out half the time instead
 * of a third (sd of the fraction at 30000 draws: 0.0027; bound 5 sd). */
static void test_bounded_draw(void) {
  const int n = 30000;
  const uint64_t range = 3ull << 62;
  Rng r = rng_make(11, 12);
  int low = 0, outside = 0;
  for (int i = 0; i < n; i++) {
    uint64_t x = rng_below(&r, range);
    outside += x >= range;
    low += x < (1ull << 62);
  }
  EXPECT(outside == 0, "%d draws outside [0, n)", outside);
  EXPECT(fabs((double)low / n - 1.0 / 3.0) < 5 * sqrt(2.0 / 9.0 / n),
         "rng_below: %.4f of the draws in the lowest third (want 1/3)", (double)low / n);
  Rng one = rng_make(1, 2);
  EXPECT(rng_below(&one, 1) == 0, "rng_below(1)");
}

/* Every order of 3 items equally likely (6 cells, 10000 expected each; chi-square with 5
 * degrees of freedom, 0.1 % critical value 20.52). Sattolo's variant (j < i) or a j drawn
 * over all n would fail; items of 4 and 8 bytes stay a permutation. */
static void test_shuffle(void) {
  const int n = 60000;
  int count[6] = {0}, not_perm = 0;
  Rng r = rng_make(5, 6);
  for (int i = 0; i < n; i++) {
    int a[3] = {0, 1, 2};
    rng_shuffle(&r, a, 3, sizeof a[0]);
    int seen = (1 << a[0]) | (1 << a[1]) | (1 << a[2]);
    if (seen != 7) {
      not_perm++;
      continue;
    }
    count[a[0] * 2 + (a[1] > a[2])]++;
  }
  double chi2 = 0;
  for (int c = 0; c < 6; c++) chi2 += (count[c] - n / 6.0) * (count[c] - n / 6.0) / (n / 6.0);
  EXPECT(not_perm == 0 && chi2 < 20.52, "rng_shuffle: %d non-permutations, chi-square %.2f",
         not_perm, chi2);
  size_t big[50];
  unsigned long long sum = 0;
  for (size_t i = 0; i < 50; i++) big[i] = i * 1000003u;
  rng_shuffle(&r, big, 50, sizeof big[0]);
  for (size_t i = 0; i < 50; i++) sum += big[i] / 1000003u;
  EXPECT(sum == 49 * 50 / 2, "8-byte items: not a permutation");
}

static void test_determinism(void) {
  int same = 1, differ_index = 0, differ_stream = 0, differ_seed = 0;
  for (uint64_t i = 0; i < 1000; i++) {
    float a = rng_uniform_at(11, 22, i), b = rng_uniform_at(11, 22, i);
    uint32_t w1[4], w2[4];
    philox4x32(11, 22, i, w1);
    philox4x32(11, 22, i, w2);
    if (a != b || memcmp(w1, w2, sizeof w1) != 0) same = 0;
    if (rng_uniform_at(11, 22, i) != rng_uniform_at(11, 22, i + 1)) differ_index++;
    if (rng_uniform_at(11, 22, i) != rng_uniform_at(11, 23, i)) differ_stream++;
    if (rng_uniform_at(11, 22, i) != rng_uniform_at(12, 22, i)) differ_seed++;
  }
  EXPECT(same, "same (seed, stream, index) gave different values");
  /* Two independent 24-bit values collide with probability 2^-24; over 1000 pairs more
   * than a couple of collisions means the input is being ignored. */
  EXPECT(differ_index >= 998, "index ignored? only %d/1000 neighbours differ", differ_index);
  EXPECT(differ_stream >= 998, "stream ignored? only %d/1000 differ", differ_stream);
  EXPECT(differ_seed >= 998, "seed ignored? only %d/1000 differ", differ_seed);
  /* High halves of the 64-bit inputs must matter too. */
  EXPECT(rng_uniform_at(1, 2, 3) != rng_uniform_at(1 | (1ull << 40), 2, 3), "seed hi ignored");
  EXPECT(rng_uniform_at(1, 2, 3) != rng_uniform_at(1, 2 | (1ull << 40), 3), "stream hi ignored");
  EXPECT(rng_uniform_at(1, 2, 3) != rng_uniform_at(1, 2, 3 | (1ull << 40)), "index hi ignored");
}

/* The whole state is (seed, stream, counter): a copy (or a struct rebuilt from the three
 * numbers a checkpoint stores) must continue exactly where the original would. */
static void test_state_copy(void) {
  Rng r = rng_make(2024, rng_stream_id(RNG_TAG_SAMPLING, 0, 0, 0));
  EXPECT(r.counter == 0, "rng_make counter %llu, want 0", (unsigned long long)r.counter);
  uint64_t full[40];
  for (int i = 0; i < 40; i++) full[i] = rng_next_u64(&r);
  EXPECT(r.counter == 40, "counter after 40 draws = %llu (one index per draw)",
         (unsigned long long)r.counter);

  Rng a = rng_make(2024, rng_stream_id(RNG_TAG_SAMPLING, 0, 0, 0));
  for (int i = 0; i < 17; i++) (void)rng_next_u64(&a);
  Rng copy = a;                                    /* struct copy */
  Rng rebuilt = {.seed = a.seed, .stream = a.stream, .counter = a.counter}; /* a checkpoint */
  int ok_a = 1, ok_copy = 1, ok_rebuilt = 1;
  for (int i = 17; i < 40; i++) {
    if (rng_next_u64(&a) != full[i]) ok_a = 0;
    if (rng_next_u64(&copy) != full[i]) ok_copy = 0;
    if (rng_next_u64(&rebuilt) != full[i]) ok_rebuilt = 0;
  }
  EXPECT(ok_a, "original sequence broken after 17 draws");
  EXPECT(ok_copy, "copied Rng does not continue the sequence");
  EXPECT(ok_rebuilt, "Rng rebuilt from (seed, stream, counter) does not continue the sequence");

  /* Mixed draw kinds advance one index each and stay reproducible from a copy. */
  Rng m = rng_make(5, 6);
  (void)rng_next_double(&m);
  (void)rng_next_uniform(&m);
  EXPECT(m.counter == 2, "double + uniform draws advanced counter to %llu",
         (unsigned long long)m.counter);
  Rng m2 = m;
  double d1 = rng_next_double(&m), d2 = rng_next_double(&m2);
  float f1 = rng_next_uniform(&m), f2 = rng_next_uniform(&m2);
  EXPECT(d1 == d2 && f1 == f2, "copy diverged on double/uniform draws");
}

static void test_stream_ids(void) {
  /* Every (tag, a, b, c) of a small grid must get its own stream. */
  enum { NT = 5, NA = 8, NB = 8, NC = 8 };
  static uint64_t ids[NT * NA * NB * NC];
  int n = 0;
  for (uint32_t t = 1; t <= NT; t++)
    for (uint32_t a = 0; a < NA; a++)
      for (uint32_t b = 0; b < NB; b++)
        for (uint32_t c = 0; c < NC; c++) ids[n++] = rng_stream_id(t, a, b, c);
  int dup = 0;
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++)
      if (ids[i] == ids[j]) dup++;
  EXPECT(dup == 0, "%d colliding stream ids among %d", dup, n);
  EXPECT(rng_stream_id(1, 2, 3, 4) == rng_stream_id(1, 2, 3, 4), "stream id not deterministic");
}

/* The lane-parallel Philox equals RNG_LANES scalar calls bit for bit, also where the index
 * crosses a 32-bit boundary inside the lanes (the carry into counter word 3). */
static void test_lanes_match_scalar(void) {
  const uint64_t seeds[] = {0, 1, 0x9E3779B97F4A7C15ull, 0xFFFFFFFFFFFFFFFFull};
  const uint64_t firsts[] = {0, 12345, 0xFFFFFFF8ull, 0x1FFFFFFF5ull, 0xFFFFFFFFFFFFFFF0ull};
  int bad = 0;
  for (size_t a = 0; a < sizeof seeds / sizeof seeds[0]; a++)
    for (size_t b = 0; b < sizeof firsts / sizeof firsts[0]; b++) {
      uint64_t stream = seeds[a] * 31 + b;
      uint32_t lanes[4 * RNG_LANES];
      philox4x32_lanes(seeds[a], stream, firsts[b], lanes);
      for (int i = 0; i < RNG_LANES; i++) {
        uint32_t w[4];
        philox4x32(seeds[a], stream, firsts[b] + (uint64_t)i, w);
        for (int j = 0; j < 4; j++) bad += lanes[4 * i + j] != w[j];
      }
    }
  EXPECT(bad == 0, "%d words of philox4x32_lanes differ from philox4x32", bad);
}

int main(void) {
  test_lanes_match_scalar();
  test_known_answers();
  test_mapping_random();
  test_uniform_at();
  test_sequential_uniformity();
  test_bounded_draw();
  test_shuffle();
  test_determinism();
  test_state_copy();
  test_stream_ids();
  return tv_test_report("test_rng");
}
