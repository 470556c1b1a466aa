/* `tvaccine export`: the merged model folder computes the same logits as base + adapter,
 * side files are copied, the adapter re-export round-trips, bad options end in one line. */
#include "hf_test_util.h"

#include <math.h>
#include <stdarg.h>

#include "backend.h"
#include "check.h"
#include "hf_model.h"
#include "memory_plan.h"
#include "model.h"
#include "peft.h"
#include "rng.h"
#include "safetensors.h"

int cmd_export(int argc, char **argv);

static Backend *be;
static LlamaConfig cfg;
static LoraConfig lc;
enum { B = 2, T = 5 };

static int run_export(int argc, const char **argv) {
  return cmd_export(argc, (char **)argv);
}

/* Logits of a full-model stage on fixed tokens (forward only). */
static float *logits_of(Stage *s) {
  int32_t tokens[B * T], targets[B * T];
  for (int i = 0; i < B * T; i++) tokens[i] = (int32_t)((i * 7 + 3) % cfg.vocab_size), targets[i] = -1;
  LayerPlan lp[8];
  memset(lp, 0, sizeof lp);
  PassPlan plan;
  memset(&plan, 0, sizeof plan);
  plan.layers = lp;
  plan.backward_stop = 1 << 30;
  plan.pass_seed = 1;
  targets[1] = 4; /* at least one target so the loss is defined */
  MicroBatch mb = {.tokens = tokens, .targets = targets, .B = B, .T = T, .loss_scale = 1.0f};
  stage_forward(s, &plan, &mb, NULL);
  size_t n = (size_t)B * T * cfg.vocab_size;
  float *h = malloc(n * sizeof(float));
  be->to_host(be, h, stage_logits(s), n * sizeof(float));
  return h;
}

static double max_diff(const float *a, const float *b, double *scale) {
  double d = 0, m = 0;
  for (size_t i = 0; i < (size_t)B * T * cfg.vocab_size; i++) {
    d = fmax(d, fabs((double)a[i] - b[i]));
    m = fmax(m, fabs((double)b[i]));
  }
  *scale = m;
  return d;
}

static float *model_logits(const char *dir, const char *adapter) {
  HfModel *m = hf_model_open(dir);
  LoraConfig l = lc;
  Stage *s = stage_create(be, &hf_model_config(m)->cfg, &l, 0, cfg.num_layers, B, T);
  stage_keep_logits(s, 1);
  hf_model_load_stage(m, s);
  if (adapter) peft_load(adapter, &cfg, be, stage_lora(s));
  float *out = logits_of(s);
  stage_destroy(s);
  hf_model_close(m);
  return out;
}

static const char **g_argv;
static int g_argc;
static void export_child(void *arg) {
  (void)arg;
  exit(run_export(g_argc, g_argv));
}

/* Sets the command line the next export_child runs (argv[0] = "export"). */
static const char *g_args[32];
static void set_args(const char *first, ...) {
  va_list ap;
  va_start(ap, first);
  g_args[0] = "export";
  g_argc = 1;
  for (const char *a = first; a && g_argc < 31; a = va_arg(ap, const char *)) g_args[g_argc++] = a;
  va_end(ap);
  g_args[g_argc] = NULL;
  g_argv = g_args;
}
#define DIES(...) set_args(__VA_ARGS__, (const char *)NULL)


/* ---- bf16 base weights held in bf16 ---- */

static void enable_full_training(void *stage) { stage_enable_full_training(stage); }

/* Every tensor of the one-file model in dir a has the same bytes in dir b. */
static int same_tensor_bytes(const char *a, const char *b) {
  char *pa = path_in(a, "model.safetensors"), *pb = path_in(b, "model.safetensors");
  SafeTensors *x = safetensors_open(pa), *y = safetensors_open(pb);
  int same = safetensors_count(x) == safetensors_count(y);
  for (int i = 0; same && i < safetensors_count(x); i++) {
    const StTensor *t = safetensors_tensor(x, i), *u = safetensors_find(y, t->name);
    same = u && t->dtype == u->dtype && t->end - t->begin == u->end - u->begin &&
           !memcmp(safetensors_data(x, t), safetensors_data(y, u), (size_t)(t->end - t->begin));
  }
  safetensors_close(x), safetensors_close(y);
  free(pa), free(pb);
  return same;
}

/* A BF16 folder loads into a bf16 stage bit for bit and writes back byte for byte; a merged
 * bf16 export of it (held in bf16) is the f32-held merge rounded once; full training refuses
 * the bf16 stage. */
static void test_bf16_held(const char *root, const char *ad) {
  char *b16 = path_in(root, "base16"), *back = path_in(root, "base16_back");
  char *m16 = path_in(root, "merged16_held"), *m32 = path_in(root, "merged32_of16");
  Stage *s = stage_create(be, &cfg, &lc, 0, cfg.num_layers, B, T);
  stage_init_random_weights(s, 4, 0.4f);
  HfConfig hc = hf_config_from_llama(&cfg);
  hf_model_write(b16, &hc, s, ST_BF16, 0);
  stage_destroy(s);

  HfModel *m = hf_model_open(b16);
  s = stage_create_typed(be, &cfg, &lc, 0, cfg.num_layers, B, T, TV_BF16);
  hf_model_load_stage(m, s);
  int ndim;
  int64_t shape[2];
  float *file = hf_model_read_tensor(m, "model.layers.1.mlp.down_proj.weight", &ndim, shape);
  size_t n = (size_t)shape[0] * (size_t)shape[1];
  float *held = malloc(n * sizeof(float));
  stage_matrix_to_host(s, held, stage_weights(s)->layers[1].w_down, n);
  EXPECT(memcmp(file, held, n * sizeof(float)) == 0, "bf16 stage holds the file's bf16 values");
  EXPECT(stage_memory(s).weights < 0.6 * (double)memory_plan_weight_elems(&cfg, 0, cfg.num_layers) *
                                       sizeof(float), "bf16 stage: %zu weight bytes",
         stage_memory(s).weights);
  hf_model_write(back, &hc, s, ST_BF16, 0);
  EXPECT(same_tensor_bytes(b16, back), "a bf16 model written back from a bf16 stage keeps bytes");
  EXPECT_DIES(enable_full_training, s, "full-parameter training needs f32", "bf16");
  free(file), free(held);
  stage_destroy(s);
  hf_model_close(m);

  const char *argv1[] = {"export", "--model", b16, "--adapter", ad, "--out", m16, "--merge"};
  EXPECT(run_export(8, argv1) == 0, "bf16 merge of a bf16 model");
  const char *argv2[] = {"export", "--model", b16, "--adapter", ad, "--out", m32, "--merge",
                         "--dtype", "f32"};
  EXPECT(run_export(10, argv2) == 0, "f32 merge of a bf16 model");
  HfModel *h16 = hf_model_open(m16), *h32 = hf_model_open(m32);
  EXPECT(hf_model_config(h16)->dtype == ST_BF16, "merge keeps the model's bfloat16");
  size_t total = 0, exact = 0, far = 0;
  for (int l = 0; l < cfg.num_layers; l++) {
    char name[96];
    snprintf(name, sizeof name, "model.layers.%d.self_attn.q_proj.weight", l);
    float *x = hf_model_read_tensor(h16, name, &ndim, shape);
    float *y = hf_model_read_tensor(h32, name, &ndim, shape);
    for (size_t k = 0; k < (size_t)shape[0] * (size_t)shape[1]; k++) {
      float want = st_bf16_to_f32(st_f32_to_bf16(y[k]));
      total++;
      exact += x[k] == want;
      far += !(fabsf(x[k] - y[k]) <= ldexpf(fabsf(y[k]), -8));
    }
    free(x), free(y);
  }
  EXPECT(far == 0 && exact * 1000 >= total * 999,
         "bf16-held merge: %zu of %zu equal the rounded f32 merge, %zu beyond half an ulp", exact,
         total, far);
  hf_model_close(h16), hf_model_close(h32);
  free(b16), free(back), free(m16), free(m32);
}

int main(void) {
  be = backend_cpu_create(1);
  cfg = llama_config_default(32, 16, 24, 3, 4, 2);
  cfg.head_dim = 6;
  cfg.attention_bias = 1;
  lc = lora_config_default();
  lc.alpha = 16; /* a large adapter, so forgetting to merge would show */
  lc.dropout = 0;
  char *root = scratch_dir("export");
  char *base = path_in(root, "base"), *ad = path_in(root, "adapter"), *merged = path_in(root, "merged");
  char *ad2 = path_in(root, "adapter2"), *m16 = path_in(root, "merged16");

  /* A base model folder with a tokenizer file, and a random adapter. */
  Stage *s = stage_create(be, &cfg, &lc, 0, cfg.num_layers, B, T);
  stage_init_random_weights(s, 3, 0.4f);
  HfConfig hc = hf_config_from_llama(&cfg);
  hf_model_write(base, &hc, s, ST_F32, 0);
  char *tok = path_in(base, "tokenizer.json");
  write_bytes(tok, "{\"model\": {}}", 13);
  LoraSet *ls = stage_lora(s);
  size_t n = (size_t)cfg.num_layers * ls->layer_numel;
  float *p = malloc(n * sizeof(float));
  Rng r = rng_make(8, 1);
  for (size_t i = 0; i < n; i++) p[i] = (float)(rng_next_double(&r) - 0.5) * 0.5f;
  be->from_host(be, ls->params, p, n * sizeof(float));
  peft_save(ad, &cfg, be, ls, base, ST_F32);
  stage_destroy(s);

  /* Merge, sharded. */
  const char *argv1[] = {"export", "--model", base, "--adapter", ad, "--out", merged, "--merge",
                         "--dtype", "f32", "--shard-size", "3KB", "--threads", "1"};
  EXPECT(run_export(14, argv1) == 0, "merge export");
  char *idx = path_in(merged, "model.safetensors.index.json"), *tok2 = path_in(merged, "tokenizer.json");
  EXPECT(file_exists(idx), "merged model is sharded at 3KB");
  size_t tl;
  char *tcopy = read_all(tok2, &tl);
  EXPECT(tcopy && tl == 13 && !memcmp(tcopy, "{\"model\": {}}", 13), "tokenizer.json copied");
  free(tcopy);

  float *ref = model_logits(base, ad), *got = model_logits(merged, NULL), *plain = model_logits(base, NULL);
  double scale, d = max_diff(got, ref, &scale), dscale, dplain = max_diff(plain, ref, &dscale);
  EXPECT(d <= 2e-5 * scale + 1e-6, "merged logits differ from base + adapter by %g (scale %g)", d, scale);
  EXPECT(dplain > 100 * (d + 1e-6), "the adapter matters (%g vs %g), so the test can fail", dplain, d);
  printf("export: merged vs base+adapter max |diff| %.3g (logit scale %.3g); base alone differs by %.3g\n",
         d, scale, dplain);

  /* bf16 merge: torch_dtype and tensor dtype follow --dtype. */
  const char *argv2[] = {"export", "--model", base, "--adapter", ad, "--out", m16, "--merge", "--dtype", "bf16"};
  EXPECT(run_export(10, argv2) == 0, "bf16 merge");
  HfModel *hm = hf_model_open(m16);
  EXPECT(hf_model_config(hm)->dtype == ST_BF16, "config.json says bfloat16");
  hf_model_close(hm);
  char *m16w = path_in(m16, "model.safetensors");
  SafeTensors *st = safetensors_open(m16w);
  EXPECT(safetensors_tensor(st, 0)->dtype == ST_BF16, "tensors stored as BF16");
  safetensors_close(st);
  float *got16 = model_logits(m16, NULL);
  double s16, d16 = max_diff(got16, ref, &s16);
  EXPECT(d16 < 0.05 * s16, "bf16 merged logits near the reference (%g of %g)", d16, s16);

  /* Adapter re-export in f16 reads back as the f16 rounding of the original. */
  const char *argv3[] = {"export", "--model", base, "--adapter", ad, "--out", ad2, "--dtype", "f16"};
  EXPECT(run_export(9, argv3) == 0, "adapter export");
  float *back = malloc(n * sizeof(float));
  peft_read_host(ad2, &cfg, &lc, 0, cfg.num_layers, back);
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) bad += back[i] != st_f16_to_f32(st_f32_to_f16(p[i]));
  EXPECT(bad == 0, "%zu adapter values differ after the f16 export", bad);
  PeftConfig pc = peft_read_config(ad2, cfg.num_layers);
  EXPECT(!strcmp(pc.base_model, base) && pc.lora.alpha == 16, "adapter config carried over");

  test_bf16_held(root, ad);

  /* Bad command lines: one clear line each. */
  DIES("--model", base, "--adapter", ad, "--out", base, "--merge");
  EXPECT_DIES(export_child, NULL, "is the --model folder");
  DIES("--model", base, "--out", merged);
  EXPECT_DIES(export_child, NULL, "--adapter DIR is required");
  DIES("--adapter", ad, "--out", merged);
  EXPECT_DIES(export_child, NULL, "--model DIR is required");
  DIES("--model", base, "--adapter", ad, "--out", merged, "--dtype", "f8");
  EXPECT_DIES(export_child, NULL, "--dtype expects f32, f16 or bf16, got 'f8'");
  DIES("--model", base, "--adapter", ad, "--out", merged, "--shard-size", "lots");
  EXPECT_DIES(export_child, NULL, "--shard-size", "'lots'");
  DIES("--model", base, "--adapter", ad, "--out", merged, "extra");
  EXPECT_DIES(export_child, NULL, "unexpected argument 'extra'");
  DIES("--model", root, "--adapter", ad, "--out", merged);
  EXPECT_DIES(export_child, NULL, "config.json");
  DIES("--help");
  int code;
  fflush(stdout);
  char *msg = run_captured(export_child, NULL, &code);
  EXPECT(code == 0, "--help exits 0");
  free(msg);

  free(back), free(p), free(ref), free(got), free(plain), free(got16);
  free(idx), free(tok), free(tok2), free(m16w);
  free(base), free(ad), free(merged), free(ad2), free(m16);
  scratch_free(root);
  backend_destroy(be);
  return tv_test_report("export");
}
