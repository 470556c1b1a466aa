/* One optimizer step of sft, vaccine and tvaccine (fixed layer set, both freeze scopes; and
 * a probe + sampled set) through dist/trainer must reproduce an independent float64 PyTorch
 * program (tests/ref/golden_methods.py): the probe's n_l and p_l, the sampled set, losses of
 * both passes, N, dLoss/da_l of every recorded layer, the pre-clip gradient norm, and every
 * LoRA tensor after the step; frozen tensors must come out bit-identical.
 * Usage: test_golden_methods FILE.tvg [FILE.tvg ...] (one MPI rank). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "comm.h"
#include "golden.h"
#include "golden_model.h"
#include "test_util.h"
#include "trainer.h"

/* Relative error of scalars; the LoRA tensors use max|c - ref| / max|ref| per tensor (the
 * norm of test_golden_core), because AdamW's first step moves every element by about
 * lr * sign(g): a per-element relative error would be dominated by elements near zero.
 * 1e-5 is the bar; float32 arithmetic lands around 1e-7 here. */
#define TOL 1e-5

static double worst_after = 0, worst_scalar = 0;

/* The probe's n_l and p_l: 1e-6 relative (float32 gradients summed in double). */
#define TOL_PROBE 1e-6

static double worst_grad_a = 0, worst_probe = 0;

static void compare_scalar(const char *file, const char *what, double got, double want) {
  double err = fabs(got - want) / fmax(fabs(want), 1e-30);
  if (err > worst_scalar) worst_scalar = err;
  EXPECT(err <= TOL, "%s: %s = %.9g, reference %.9g (rel err %.2g)", file, what, got, want, err);
}

/* Next-token targets of a golden (ids, labels) pair: position t predicts labels[t + 1]. */
static int32_t *golden_targets(const Golden *g, const char *ids_name, const char *labels_name,
                               Batch *out) {
  const GoldenTensor *ids = golden_get(g, ids_name);
  TV_CHECK(ids->ndim == 2 && ids->dtype == GOLDEN_I32, "%s must be int32 [B, T]", ids_name);
  const GoldenTensor *labels = golden_get_shaped(g, labels_name, GOLDEN_I32, 2, ids->dims);
  int B = (int)ids->dims[0], T = (int)ids->dims[1];
  int32_t *targets = tv_malloc((size_t)B * T * sizeof(int32_t));
  size_t counted = 0;
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      int32_t lab = t + 1 < T ? labels->i32[(size_t)b * T + t + 1] : -100;
      targets[(size_t)b * T + t] = lab == -100 ? -1 : lab;
      counted += lab != -100;
    }
  *out = (Batch){.tokens = ids->i32, .targets = targets, .B = B, .T = T, .n_targets = counted};
  return targets;
}

/* n_l, p_l and the sampled set against the reference; the trainer's own uniforms against the
 * reference's re-implementation of the stream (a diagnostic for a mismatched set). */
static void check_probe_and_draw(const Golden *g, const char *file, Trainer *tr,
                                 const TrainerConfig *tc, int S) {
  const GoldenTensor *norms = golden_get(g, "probe.norms"), *probs = golden_get(g, "probe.probs");
  const double *n = trainer_probe_norms(tr), *p = trainer_layer_probs(tr);
  for (size_t l = 0; l < norms->numel; l++) {
    double en = fabs(n[l] - norms->f32[l]) / norms->f32[l];
    double ep = fabs(p[l] - probs->f32[l]) / probs->f32[l];
    worst_probe = fmax(worst_probe, fmax(en, ep));
    EXPECT(en <= TOL_PROBE && ep <= TOL_PROBE,
           "%s: layer %zu: n %.9g (ref %.9g), p %.9g (ref %.9g): rel err %.2g, %.2g", file, l,
           n[l], norms->f32[l], p[l], probs->f32[l], en, ep);
  }
  const GoldenTensor *u = golden_get(g, "sample.uniforms");
  Rng rng = rng_make(tc->seed, rng_stream_id(RNG_TAG_SAMPLING, 0, 0, 0));
  for (size_t k = 0; k < u->numel; k++) {
    double mine = rng_next_double(&rng);
    EXPECT(fabs(mine - u->f32[k]) <= 1e-7, "%s: uniform %zu: %.9g, reference %.9g", file, k,
           mine, u->f32[k]);
  }
  const GoldenTensor *want = golden_get(g, "method.layers");
  int count;
  const int *act = trainer_active_layers(tr, &count);
  int same = count == S;
  for (int k = 0; k < count && same; k++) same = act[k] == want->i32[k];
  EXPECT(same, "%s: sampled %d layers {%d, %d, ...}, reference {%d, %d, ...}", file, count,
         act[0], count > 1 ? act[1] : -1, want->i32[0], S > 1 ? want->i32[1] : -1);
}

/* g_l = dLoss/da_l of pass 1 for every recorded layer: the trainer holds e_l = rho g_l /
 * (N + 1e-7), so g_l = e_l (N + 1e-7) / rho with its own N; max|c - ref| / max|ref|. */
static void check_grad_a(const Golden *g, const char *file, Trainer *tr, const TrainerConfig *tc,
                         double N, int L) {
  char name[64];
  int compared = 0;
  for (int l = 0; l < L; l++) {
    snprintf(name, sizeof name, "grad_a.%d", l);
    const GoldenTensor *ref = golden_find(g, name);
    const float *e = trainer_perturbation(tr, l);
    EXPECT(!ref == !e, "%s: layer %d: reference records g_l: %d, trainer holds e_l: %d", file, l,
           ref != NULL, e != NULL);
    if (!ref || !e) continue;
    double back = (N + 1e-7) / tc->rho, num = 0, den = 0;
    for (size_t i = 0; i < ref->numel; i++) {
      num = fmax(num, fabs(e[i] * back - ref->f32[i]));
      den = fmax(den, fabs((double)ref->f32[i]));
    }
    double err = num / den;
    worst_grad_a = fmax(worst_grad_a, err);
    EXPECT(err <= TOL, "%s: grad_a.%d: max|c-ref|/max|ref| = %.3g", file, l, err);
    compared++;
  }
  EXPECT(compared > 0, "%s: no grad_a record compared", file);
}

static void run_file(Comm *comm, const char *path) {
  const char *file = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
  Golden *g = golden_load(path);
  Backend *be = backend_cpu_create(0);
  GoldenModel gm;
  Stage *s = golden_model_build(be, g, file, &gm);
  int kind = golden_i32(g, "method.kind");
  const GoldenTensor *layers = golden_get(g, "method.layers");

  TrainerConfig tc = {0};
  tc.method = kind == 0 ? METHOD_SFT : kind == 1 ? METHOD_VACCINE : METHOD_TVACCINE;
  tc.freeze_scope = golden_i32(g, "method.freeze_scope") ? FREEZE_ATTENTION : FREEZE_LAYER;
  tc.rho = golden_f32(g, "method.rho");
  tc.S = (int)layers->numel, tc.J = 20, tc.K = 200;
  int *fixed = tv_calloc(layers->numel + 1, sizeof(int));
  for (size_t i = 0; i < layers->numel; i++) fixed[i] = layers->i32[i];
  if (tc.method == METHOD_TVACCINE) tc.fixed_layers = fixed, tc.num_fixed = (int)layers->numel;
  tc.optim = optim_config_default(golden_i32(g, "optim.total_steps"));
  tc.optim.lr = golden_f32(g, "optim.lr");
  tc.optim.weight_decay = golden_f32(g, "optim.weight_decay");
  tc.optim.max_grad_norm = golden_f32(g, "optim.max_grad_norm");
  tc.optim.beta1 = golden_f32(g, "optim.beta1");
  tc.optim.beta2 = golden_f32(g, "optim.beta2");
  tc.optim.eps = golden_f32(g, "optim.eps");
  tc.optim.warmup_ratio = golden_f32(g, "optim.warmup_ratio");
  tc.seed = 1;
  int64_t t = golden_i32(g, "optim.t");
  compare_scalar(file, "lr_t", lr_at_step(&tc.optim, t), golden_f32(g, "optim.lr_t"));

  /* before: every LoRA tensor, to check the frozen ones come out bit-identical */
  LoraSet *ls = stage_lora(s);
  size_t total = (size_t)gm.cfg.num_layers * ls->layer_numel;
  float *before = tv_malloc(total * sizeof(float));
  memcpy(before, ls->params, total * sizeof(float));

  /* The sampled file: the trainer probes and draws A itself at step t. */
  int sampled = golden_find(g, "sample.S") != NULL;
  Batch probe = {0};
  int32_t *probe_targets = NULL;
  if (sampled) {
    tc.fixed_layers = NULL, tc.num_fixed = 0;
    tc.S = golden_i32(g, "sample.S");
    tc.K = golden_i32(g, "sample.K"), tc.J = golden_i32(g, "sample.J");
    tc.seed = (uint64_t)golden_i32(g, "sample.seed");
    probe_targets = golden_targets(g, "probe_ids", "probe_labels", &probe);
  }

  /* The sampled file runs one row per micro-batch, so the probe's norms are summed over
   * micro-batches (the others run the batch whole). */
  Trainer *tr = trainer_create(comm, s, &tc, sampled ? 1 : gm.B);
  Batch batch = batch_alloc(gm.B, gm.T); /* the golden tokens are read-only file memory */
  size_t cells = (size_t)gm.B * gm.T;
  memcpy(batch.tokens, gm.tokens, cells * sizeof(int32_t));
  memcpy(batch.targets, gm.targets, cells * sizeof(int32_t));
  batch.B = gm.B, batch.T = gm.T, batch.n_targets = (size_t)gm.n_targets;
  StepReport rep;
  TV_CHECK(!sampled || trainer_needs_probe(tr, t), "%s: step %lld must probe", file, (long long)t);
  trainer_step(tr, t, &batch, sampled ? &probe : NULL, &rep);
  if (sampled) check_probe_and_draw(g, file, tr, &tc, (int)layers->numel);
  if (tc.method != METHOD_SFT) check_grad_a(g, file, tr, &tc, rep.perturb_norm, gm.cfg.num_layers);

  if (tc.method == METHOD_SFT) {
    compare_scalar(file, "loss", rep.loss, golden_f32(g, "loss"));
  } else {
    compare_scalar(file, "loss_pass1", rep.loss_pass1, golden_f32(g, "loss_pass1"));
    compare_scalar(file, "loss_pass2", rep.loss, golden_f32(g, "loss_pass2"));
    compare_scalar(file, "vaccine.N", rep.perturb_norm, golden_f32(g, "vaccine.N"));
  }
  compare_scalar(file, "grad_norm", rep.grad_norm, golden_f32(g, "grad_norm"));

  char name[192];
  int frozen = 0, trained = 0;
  for (int l = 0; l < gm.cfg.num_layers; l++)
    for (int tg = 0; tg < LORA_NUM_TARGETS; tg++) {
      LoraAdapter *a = &ls->layers[l][tg];
      for (int which = 0; which < 2; which++) {
        const float *c = which ? a->B : a->A;
        size_t n = which ? (size_t)a->out * gm.lora.r : (size_t)gm.lora.r * a->in;
        snprintf(name, sizeof name, "model.layers.%d.%s.lora_%s.weight", l,
                 golden_target_path[tg], which ? "B" : "A");
        char after_name[224];
        snprintf(after_name, sizeof after_name, "after.%s", name);
        const GoldenTensor *ref = golden_get(g, after_name);
        TV_CHECK(ref->numel == n, "%s: %s has %zu elements, expected %zu", file, after_name, ref->numel, n);
        snprintf(after_name, sizeof after_name, "grad.%s", name);
        int is_trained = golden_find(g, after_name) != NULL;
        const float *was = before + (c - ls->params);
        if (!is_trained) {
          frozen++;
          EXPECT(!memcmp(c, was, n * sizeof(float)), "%s: frozen %s changed", file, name);
          EXPECT(!memcmp(ref->f32, was, n * sizeof(float)), "%s: reference says %s is frozen but moved it", file, name);
          continue;
        }
        trained++;
        double num = 0, den = 0;
        for (size_t i = 0; i < n; i++) {
          num = fmax(num, fabs((double)c[i] - ref->f32[i]));
          den = fmax(den, fabs((double)ref->f32[i]));
        }
        double err = num / den;
        if (err > worst_after) worst_after = err;
        EXPECT(err <= TOL, "%s: %s after the step: max|c-ref|/max|ref| = %.3g", file, name, err);
      }
    }
  printf("%s: %d LoRA tensors trained, %d frozen; loss %.6f\n", file, trained, frozen, rep.loss);
  trainer_destroy(tr);
  free(probe_targets);
  free(before);
  free(fixed);
  batch_free(&batch);
  free(gm.targets);
  stage_destroy(s);
  backend_destroy(be);
  golden_free(g);
}

int main(int argc, char **argv) {
  Comm *comm = comm_init(&argc, &argv);
  if (argc < 2) tv_die("usage: %s FILE.tvg [FILE.tvg ...]", argv[0]);
  for (int i = 1; i < argc; i++) run_file(comm, argv[i]);
  printf("worst relative error: LoRA after the step %.3e, scalars %.3e, grad_a %.3e "
         "(tolerance %.0e); probe n_l, p_l %.3e (tolerance %.0e)\n",
         worst_after, worst_scalar, worst_grad_a, TOL, worst_probe, TOL_PROBE);
  int rc = tv_test_report("test_golden_methods");
  comm_finalize(comm);
  return rc;
}
