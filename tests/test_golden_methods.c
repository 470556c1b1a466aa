/* One optimizer step of sft, vaccine and tvaccine (fixed layer set, both freeze scopes)
 * through dist/trainer must reproduce an independent float64 PyTorch program
 * (tests/ref/golden_methods.py): losses of both passes, N, the pre-clip gradient norm, and
 * every LoRA tensor after the step; frozen tensors must come out bit-identical.
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

static void compare_scalar(const char *file, const char *what, double got, double want) {
  double err = fabs(got - want) / fmax(fabs(want), 1e-30);
  if (err > worst_scalar) worst_scalar = err;
  EXPECT(err <= TOL, "%s: %s = %.9g, reference %.9g (rel err %.2g)", file, what, got, want, err);
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

  Trainer *tr = trainer_create(comm, s, &tc, gm.B);
  Batch batch = batch_alloc(gm.B, gm.T); /* the golden tokens are read-only file memory */
  size_t cells = (size_t)gm.B * gm.T;
  memcpy(batch.tokens, gm.tokens, cells * sizeof(int32_t));
  memcpy(batch.targets, gm.targets, cells * sizeof(int32_t));
  batch.B = gm.B, batch.T = gm.T, batch.n_targets = (size_t)gm.n_targets;
  StepReport rep;
  trainer_step(tr, t, &batch, NULL, &rep);

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
  printf("worst relative error: LoRA after the step %.3e, scalars %.3e (tolerance %.0e)\n",
         worst_after, worst_scalar, TOL);
  int rc = tv_test_report("test_golden_methods");
  comm_finalize(comm);
  return rc;
}
