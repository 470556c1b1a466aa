/* The trainer's method logic: sampling frequencies against exact probabilities
 * (chi-square), T-Vaccine with S = L equal to Vaccine step for step, frozen layers untouched,
 * and T-Vaccine keeping less activation memory than Vaccine. Runs as one MPI rank. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "comm.h"
#include "lora.h"
#include "model_fixture.h"
#include "test_util.h"
#include "trainer.h"

/* Chi-square critical value at p = 0.001 for the given degrees of freedom (from tables). */
static double chi2_crit_001(int dof) {
  static const double table[] = {0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12,
                                 27.88, 29.59, 31.26, 32.91, 34.53, 36.12, 37.70, 39.25};
  return dof < (int)(sizeof table / sizeof table[0]) ? table[dof] : 1e9;
}

/* S = 1: each layer's frequency ~ p_l. S = 2 over 5 layers: the frequency of each unordered
 * pair {a, b} ~ p_a p_b / (1 - p_a) + p_b p_a / (1 - p_b), worked out independently of the
 * sampler's sequential loop. */
static void test_sampling_frequencies(void) {
  const int L = 5, draws = 200000;
  double p[5] = {0.05, 0.30, 0.15, 0.40, 0.10};
  Rng rng = rng_make(99, 1);
  long count1[5] = {0}, count2[5][5] = {{0}};
  int out[2];
  for (int d = 0; d < draws; d++) {
    tvaccine_sample_layers(p, L, 1, &rng, out);
    count1[out[0]]++;
    tvaccine_sample_layers(p, L, 2, &rng, out);
    EXPECT(out[0] < out[1], "pair not distinct/sorted: %d %d", out[0], out[1]);
    count2[out[0]][out[1]]++;
  }
  double chi1 = 0, chi2 = 0;
  for (int l = 0; l < L; l++) {
    double e = p[l] * draws;
    chi1 += (count1[l] - e) * (count1[l] - e) / e;
  }
  int cells = 0;
  for (int a = 0; a < L; a++)
    for (int b = a + 1; b < L; b++) {
      double e = draws * (p[a] * p[b] / (1 - p[a]) + p[b] * p[a] / (1 - p[b]));
      chi2 += (count2[a][b] - e) * (count2[a][b] - e) / e;
      cells++;
    }
  printf("sampling: chi2 %.2f (S=1, 4 dof), %.2f (S=2, %d dof)\n", chi1, chi2, cells - 1);
  EXPECT(chi1 < chi2_crit_001(4), "S=1 frequencies: chi2 %.2f", chi1);
  EXPECT(chi2 < chi2_crit_001(cells - 1), "S=2 pair frequencies: chi2 %.2f", chi2);
  /* zero-probability layers only after every positive one */
  double q[4] = {0.5, 0, 0.5, 0};
  tvaccine_sample_layers(q, 4, 2, &rng, out);
  EXPECT(out[0] == 0 && out[1] == 2, "zero-probability layer drawn early: %d %d", out[0], out[1]);
  double probs[3];
  tvaccine_probabilities((double[]){1, 3, 0}, 3, probs);
  EXPECT(probs[0] == 0.25 && probs[1] == 0.75 && probs[2] == 0, "p_l = n_l / sum n");
}

typedef struct {
  Fixture f;
  Trainer *tr;
  Batch batch;
} Run;

static void run_init(Run *r, Comm *comm, Method m, int S, int K, int J, const int *fixed,
                     int nfixed, float dropout) {
  LlamaConfig cfg = llama_config_default(41, 32, 48, 4, 4, 2);
  LoraConfig lc = lora_config_default();
  lc.r = 4, lc.alpha = 8, lc.dropout = dropout;
  fixture_init(&r->f, &cfg, &lc, 0, 4, 4, 8, 12);
  TrainerConfig tc = {0};
  tc.method = m;
  tc.rho = 2.0;
  tc.S = S, tc.K = K, tc.J = J;
  tc.fixed_layers = fixed, tc.num_fixed = nfixed;
  tc.optim = optim_config_default(10);
  tc.seed = 5;
  r->tr = trainer_create(comm, r->f.stage, &tc, 2);
  r->batch = (Batch){.tokens = r->f.tokens, .targets = r->f.targets, .B = r->f.B, .T = r->f.T};
  for (int i = 0; i < r->f.B * r->f.T; i++) r->batch.n_targets += r->f.targets[i] >= 0;
}

static void run_free(Run *r) {
  trainer_destroy(r->tr);
  fixture_free(&r->f);
}

static void test_tvaccine_all_layers_is_vaccine(Comm *comm) {
  Run v, t;
  run_init(&v, comm, METHOD_VACCINE, 0, 1, 1, NULL, 0, 0.1f);
  run_init(&t, comm, METHOD_TVACCINE, 4, 1, 1, NULL, 0, 0.1f);
  size_t n = fixture_lora_numel(&v.f);
  float *pv = tv_malloc(n * sizeof(float)), *pt = tv_malloc(n * sizeof(float));
  for (int step = 0; step < 3; step++) {
    StepReport rv, rt;
    trainer_step(v.tr, step, &v.batch, NULL, &rv);
    trainer_step(t.tr, step, &t.batch, &t.batch, &rt);
    EXPECT(rv.loss == rt.loss && rv.loss_pass1 == rt.loss_pass1,
           "step %d: vaccine loss %.9g/%.9g, tvaccine S=L %.9g/%.9g", step, rv.loss_pass1,
           rv.loss, rt.loss_pass1, rt.loss);
    EXPECT(rt.probed && rt.resampled, "tvaccine with K = J = 1 probes and samples every step");
  }
  fixture_get_lora_params(&v.f, pv);
  fixture_get_lora_params(&t.f, pt);
  EXPECT(!memcmp(pv, pt, n * sizeof(float)), "LoRA after 3 steps differs: tvaccine S = L vs vaccine");
  free(pv);
  free(pt);
  run_free(&v);
  run_free(&t);
}

/* Fixed set {1, 3}: layers 0 and 2 bit-identical after steps; less activation memory. */
static void test_fixed_set_freezes_and_saves_memory(Comm *comm) {
  Run v, t;
  int A[2] = {1, 3};
  run_init(&v, comm, METHOD_VACCINE, 0, 1, 1, NULL, 0, 0.0f);
  run_init(&t, comm, METHOD_TVACCINE, 2, 200, 20, A, 2, 0.0f);
  size_t n = fixture_lora_numel(&t.f), per = stage_lora(t.f.stage)->layer_numel;
  float *before = tv_malloc(n * sizeof(float)), *after = tv_malloc(n * sizeof(float));
  fixture_get_lora_params(&t.f, before);
  StepReport r;
  trainer_take_activation_peak(v.tr);
  trainer_step(v.tr, 0, &v.batch, NULL, &r);
  size_t mem_v = trainer_take_activation_peak(v.tr);
  trainer_step(t.tr, 0, &t.batch, NULL, &r);
  size_t mem_t = trainer_take_activation_peak(t.tr);
  trainer_step(t.tr, 1, &t.batch, NULL, &r);
  fixture_get_lora_params(&t.f, after);
  EXPECT(!memcmp(before, after, per * sizeof(float)), "layer 0 changed although frozen");
  EXPECT(!memcmp(before + 2 * per, after + 2 * per, per * sizeof(float)), "layer 2 changed although frozen");
  EXPECT(memcmp(before + per, after + per, per * sizeof(float)), "layer 1 did not train");
  EXPECT(memcmp(before + 3 * per, after + 3 * per, per * sizeof(float)), "layer 3 did not train");
  int count;
  const int *act = trainer_active_layers(t.tr, &count);
  EXPECT(count == 2 && act[0] == 1 && act[1] == 3, "fixed set reported");
  printf("activation memory per step: vaccine %zu bytes, tvaccine {1,3} %zu bytes (%.2fx)\n", mem_v,
         mem_t, (double)mem_t / mem_v);
  EXPECT(mem_t < mem_v, "tvaccine kept %zu bytes, vaccine %zu", mem_t, mem_v);
  free(before);
  free(after);
  run_free(&v);
  run_free(&t);
}

/* T-Vaccine S = 1 with K = J = 1 on 4 layers: the probe keeps no gradient buffer, and the
 * one perturbation buffer follows A from step to step (released when A changes), so the
 * peak over many steps is one [rows, D] buffer, not one per layer. */
static void test_perturbation_buffers_follow_A(Comm *comm) {
  Run t;
  run_init(&t, comm, METHOD_TVACCINE, 1, 1, 1, NULL, 0, 0.0f);
  size_t one = (size_t)t.batch.B * t.batch.T * t.f.cfg.hidden_size * sizeof(float);
  StepReport r;
  int changed = 0, prev = -1;
  trainer_take_memory_peak(t.tr);
  for (int step = 0; step < 6; step++) {
    trainer_step(t.tr, step, &t.batch, &t.batch, &r);
    int count;
    const int *act = trainer_active_layers(t.tr, &count);
    changed += prev >= 0 && act[0] != prev;
    prev = act[0];
  }
  TrainerMemory m = trainer_take_memory_peak(t.tr);
  printf("perturbation buffers: peak %zu bytes over 6 steps, one buffer %zu, A changed %d times\n",
         m.perturbations, one, changed);
  EXPECT(changed > 0, "A never changed in 6 resamples; the test proves nothing");
  EXPECT(m.perturbations == one, "perturbation buffers peaked at %zu bytes, one layer's is %zu",
         m.perturbations, one);
  EXPECT(m.receive == 0, "one rank holds no receive buffers (%zu bytes)", m.receive);
  run_free(&t);
}

/* Activation policies of frozen layers: the same numbers under recompute, keep and auto
 * (with dropout, a probe and a resample in the steps); keep holds more than recompute; auto
 * with a 1-byte budget holds what recompute holds, with an ample one what keep holds, and with
 * a budget between the two stays within it. */
static void test_activation_policies(Comm *comm) {
  const struct {
    ActivationPolicy policy;
    size_t budget;
  } runs[] = {
      {.policy = ACTIVATIONS_RECOMPUTE},
      {.policy = ACTIVATIONS_KEEP},
      {.policy = ACTIVATIONS_AUTO, .budget = 1},
      {.policy = ACTIVATIONS_AUTO, .budget = (size_t)1 << 40},
      {.policy = ACTIVATIONS_AUTO}, /* budget set below */
  };
  enum { NRUNS = 5 };
  size_t act[NRUNS], n = 0;
  float *params[NRUNS];
  double loss[NRUNS];
  for (int k = 0; k < NRUNS; k++) {
    Run t;
    run_init(&t, comm, METHOD_TVACCINE, 1, 2, 2, NULL, 0, 0.1f);
    trainer_destroy(t.tr);
    TrainerConfig tc = {
        .method = METHOD_TVACCINE, .rho = 2.0, .S = 1, .K = 2, .J = 2,
        .optim = optim_config_default(10), .seed = 5, .activations = runs[k].policy,
        .activation_budget = runs[k].budget,
    };
    if (k == 4) /* halfway between recompute's and keep's activations */
      tc.activation_budget = (act[0] + act[1]) / 2;
    t.tr = trainer_create(comm, t.f.stage, &tc, 2);
    trainer_take_memory_peak(t.tr);
    StepReport r;
    for (int step = 0; step < 3; step++) trainer_step(t.tr, step, &t.batch, &t.batch, &r);
    loss[k] = r.loss;
    act[k] = trainer_take_memory_peak(t.tr).activations;
    n = fixture_lora_numel(&t.f);
    params[k] = tv_malloc(n * sizeof(float));
    fixture_get_lora_params(&t.f, params[k]);
    run_free(&t);
  }
  printf("activation policies: recompute %zu, keep %zu, auto(1 byte) %zu, auto(ample) %zu, "
         "auto(%zu) %zu bytes\n", act[0], act[1], act[2], act[3], (act[0] + act[1]) / 2, act[4]);
  for (int k = 1; k < NRUNS; k++) {
    EXPECT(loss[k] == loss[0] && !memcmp(params[k], params[0], n * sizeof(float)),
           "policy run %d: loss %.9g vs %.9g, or LoRA differs from recompute", k, loss[k], loss[0]);
  }
  EXPECT(act[1] > act[0], "keep %zu bytes, recompute %zu", act[1], act[0]);
  EXPECT(act[2] == act[0] && act[3] == act[1], "auto: 1-byte budget %zu (recompute %zu), ample %zu "
         "(keep %zu)", act[2], act[0], act[3], act[1]);
  EXPECT(act[4] > act[0] && act[4] < act[1], "auto with a budget between: %zu bytes", act[4]);
  for (int k = 0; k < NRUNS; k++) free(params[k]);
}

/* auto without a budget recomputes, highest first, as many frozen layers as there are layers
 * above layer 0 whose backward the pass skips (below A), and keeps the rest. Hand-counted on 6
 * layers, one rank: A {2} skips 1 (layer 1) of frozen {3, 4, 5}; A {3} skips 2 ({1, 2}) of
 * frozen {4, 5}: all; A {0} skips none of {1..5}. A frozen layer's record is the same size
 * in every run, so keep - auto = k / f (keep - recompute) with f frozen, k recomputed. */
static void test_auto_recomputes_what_the_skipped_backward_pays(Comm *comm) {
  const struct {
    int layer, frozen, recomputed;
  } cases[] = {{2, 3, 1}, {3, 2, 2}, {0, 5, 0}};
  const ActivationPolicy policies[3] = {ACTIVATIONS_RECOMPUTE, ACTIVATIONS_KEEP, ACTIVATIONS_AUTO};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    size_t act[3], n = 0;
    float *params[3];
    for (int k = 0; k < 3; k++) {
      LlamaConfig cfg = llama_config_default(41, 32, 48, 6, 4, 2);
      LoraConfig lc = lora_config_default();
      lc.r = 4, lc.alpha = 8, lc.dropout = 0.1f;
      Fixture f;
      fixture_init(&f, &cfg, &lc, 0, 6, 4, 8, 12);
      TrainerConfig tc = {.method = METHOD_TVACCINE, .rho = 2.0, .S = 1, .K = 1, .J = 1,
                          .fixed_layers = &cases[c].layer, .num_fixed = 1,
                          .optim = optim_config_default(10), .seed = 5,
                          .activations = policies[k]};
      Trainer *tr = trainer_create(comm, f.stage, &tc, 2);
      Batch batch = {.tokens = f.tokens, .targets = f.targets, .B = f.B, .T = f.T};
      for (int i = 0; i < f.B * f.T; i++) batch.n_targets += f.targets[i] >= 0;
      trainer_take_memory_peak(tr);
      StepReport r;
      for (int step = 0; step < 2; step++) trainer_step(tr, step, &batch, NULL, &r);
      act[k] = trainer_take_memory_peak(tr).activations;
      n = fixture_lora_numel(&f);
      params[k] = tv_malloc(n * sizeof(float));
      fixture_get_lora_params(&f, params[k]);
      trainer_destroy(tr);
      fixture_free(&f);
    }
    printf("auto, A {%d}: recompute %zu, keep %zu, auto %zu bytes (%d of %d frozen recomputed)\n",
           cases[c].layer, act[0], act[1], act[2], cases[c].recomputed, cases[c].frozen);
    EXPECT(act[1] > act[0], "A {%d}: keep %zu bytes, recompute %zu", cases[c].layer, act[1], act[0]);
    EXPECT((act[1] - act[2]) * (size_t)cases[c].frozen ==
               (act[1] - act[0]) * (size_t)cases[c].recomputed,
           "A {%d}: auto holds %zu bytes; %d of %d frozen recomputed would hold keep %zu - %d/%d "
           "x (keep - recompute %zu)", cases[c].layer, act[2], cases[c].recomputed,
           cases[c].frozen, act[1], cases[c].recomputed, cases[c].frozen, act[0]);
    for (int k = 1; k < 3; k++)
      EXPECT(!memcmp(params[k], params[0], n * sizeof(float)), "A {%d}: LoRA under %s differs",
             cases[c].layer, activation_policy_names[policies[k]]);
    for (int k = 0; k < 3; k++) free(params[k]);
  }
}

/* A probe step without a probe batch ends in one clear line (run by ctest, which matches the
 * message): `test_trainer no-probe` passes NULL, `test_trainer empty-probe` an empty batch. */
static void probe_missing(Comm *comm, int empty) {
  Run t;
  run_init(&t, comm, METHOD_TVACCINE, 2, 1, 1, NULL, 0, 0.0f);
  Batch none = {0};
  StepReport r;
  trainer_step(t.tr, 0, &t.batch, empty ? &none : NULL, &r);
  printf("no error for a missing probe batch\n");
  run_free(&t);
}

int main(int argc, char **argv) {
  Comm *comm = comm_init(&argc, &argv);
  if (argc > 1) {
    probe_missing(comm, !strcmp(argv[1], "empty-probe"));
    comm_finalize(comm);
    return 1;
  }
  test_perturbation_buffers_follow_A(comm);
  test_activation_policies(comm);
  test_auto_recomputes_what_the_skipped_backward_pays(comm);
  test_sampling_frequencies();
  test_tvaccine_all_layers_is_vaccine(comm);
  test_fixed_set_freezes_and_saves_memory(comm);
  int rc = tv_test_report("test_trainer");
  comm_finalize(comm);
  return rc;
}
