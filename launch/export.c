/* `tvaccine export`: writes a trained LoRA adapter back out as a normalised PEFT folder, or
 * merges it into its base model and writes a Hugging Face model folder. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend.h"
#include "check.h"
#include "hf_model.h"
#include "model.h"
#include "peft.h"
#include "run_config.h"
#include "run_setup.h"
#include "subcommands.h"

static void export_usage(FILE *out) {
  fprintf(out,
          "usage: tvaccine export --model DIR --adapter DIR --out DIR [--merge]\n"
          "                       [--dtype f32|f16|bf16] [--shard-size SIZE] [--threads N]\n"
          "                       [--set KEY=VALUE ...]\n"
          "\n"
          "Without --merge: checks the PEFT LoRA adapter in --adapter against the model in\n"
          "--model and writes it again as a PEFT folder at --out (standard adapter_config.json,\n"
          "every tensor in one adapter_model.safetensors of the chosen dtype).\n"
          "With --merge: loads the base model and the adapter, folds W += (lora_alpha / r) B A\n"
          "into every adapted weight and writes a Hugging Face model folder at --out\n"
          "(config.json, model.safetensors or shards with model.safetensors.index.json, and the\n"
          "tokenizer and generation files found in --model). The merge holds the whole model\n"
          "in float32 memory.\n"
          "\n"
          "  --model DIR        Hugging Face model folder (config.json + safetensors weights)\n"
          "  --adapter DIR      PEFT LoRA folder (adapter_config.json + adapter_model.safetensors)\n"
          "  --out DIR          folder to write; created if missing; must not be --model or\n"
          "                     --adapter\n"
          "  --merge            write the merged model instead of the adapter\n"
          "  --dtype T          f32, f16 or bf16 (default: f32 for an adapter; the base model's\n"
          "                     torch_dtype for a merged model, f32 when it names none)\n"
          "  --shard-size SIZE  with --merge: largest weights file, e.g. 5GB, 500MB, 2GiB or a\n"
          "                     byte count (default 5GB, 1GB = 10^9 bytes as in transformers)\n"
          "  --threads N        CPU threads for the merge (default: all cores)\n"
          "\n"
          "Each option --KEY is the run-config key export.KEY, '-' read as '_'\n"
          "(export.shard_size; export.merge is true or false): --set export.dtype=f16 and\n"
          "--dtype=f16 are --dtype f16.\n");
}

static StDtype parse_dtype_option(const char *text) {
  if (!strcmp(text, "f32") || !strcmp(text, "float32")) return ST_F32;
  if (!strcmp(text, "f16") || !strcmp(text, "float16")) return ST_F16;
  if (!strcmp(text, "bf16") || !strcmp(text, "bfloat16")) return ST_BF16;
  tv_die("--dtype expects f32, f16 or bf16, got '%s'", text);
}

/* Writing over the folders being read would destroy the inputs half-way. */
static void check_distinct(const char *out, const char *in, const char *what) {
  char a[PATH_MAX], b[PATH_MAX];
  if (realpath(out, a) && realpath(in, b) && !strcmp(a, b))
    tv_die("--out %s is the %s folder; write to a new folder", out, what);
}

static void copy_side_files(const char *model_dir, const char *out_dir) {
  static const char *const names[] = {
      "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
      "vocab.json", "merges.txt", "added_tokens.json", "generation_config.json",
      "chat_template.jinja"};
  char src[PATH_MAX + 64], dst[PATH_MAX + 64];
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    struct stat sb;
    snprintf(src, sizeof src, "%s/%s", model_dir, names[i]);
    if (stat(src, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
    snprintf(dst, sizeof dst, "%s/%s", out_dir, names[i]);
    hf_copy_file(src, dst);
  }
}

static void export_adapter(HfModel *model, const char *adapter, const char *out, StDtype dtype) {
  const LlamaConfig *cfg = &hf_model_config(model)->cfg;
  PeftConfig pc = peft_read_config(adapter, cfg->num_layers);
  size_t n = (size_t)cfg->num_layers * peft_layer_numel(&pc.lora, cfg);
  float *params = tv_malloc(n * sizeof(float));
  peft_read_host(adapter, cfg, &pc.lora, 0, cfg->num_layers, params);
  peft_write_host(out, &pc, cfg, 0, cfg->num_layers, params, dtype);
  free(params);
  printf("export: wrote the adapter (r %d, %d layers, %s) to %s\n", pc.lora.r, cfg->num_layers,
         st_dtype_name(dtype), out);
}

static void export_merged(HfModel *model, const char *adapter, const char *out, StDtype dtype,
                          uint64_t shard, int threads) {
  const HfConfig *hc = hf_model_config(model);
  PeftConfig pc = peft_read_config(adapter, hc->cfg.num_layers);
  Backend *be = run_setup_backend(BACKEND_CPU, 0, threads);
  /* One token of activation room: the stage is only a holder of weights here. A bf16 model
   * written as bf16 is held in bf16 (half the memory; the base is exact and the merged sum is
   * rounded once, as writing it would); anything else in f32, so nothing is rounded twice. */
  TvDtype held = dtype == ST_BF16 && hc->dtype == ST_BF16 ? TV_BF16 : TV_F32;
  Stage *s = run_setup_hf_stage(be, model, &pc.lora, 0, hc->cfg.num_layers, 1, 1, held);
  peft_load(adapter, &hc->cfg, be, stage_lora(s));
  stage_merge_lora(s);
  hf_model_write(out, hc, s, dtype, shard);
  copy_side_files(hf_model_dir(model), out);
  stage_destroy(s);
  backend_destroy(be);
  printf("export: wrote the merged model (%d layers, %s) to %s\n", hc->cfg.num_layers,
         st_dtype_name(dtype), out);
}

int cmd_export(int argc, char **argv) {
  RunConfig rc;
  run_config_defaults(&rc);
  char err[RUN_CONFIG_ERR_MAX];
  int help;
  if (run_config_parse_command(&rc, "export", argc, argv, &help, err, sizeof err))
    tv_die("%s", err);
  if (help) {
    export_usage(stdout);
    run_config_free(&rc);
    return 0;
  }
  const RunExport *o = &rc.export;
  const char *model_dir = o->model[0] ? o->model : NULL;
  const char *adapter = o->adapter[0] ? o->adapter : NULL;
  const char *out = o->out[0] ? o->out : NULL;
  int merge = o->merge, threads = o->threads, have_dtype = o->dtype[0] != 0;
  StDtype dtype = have_dtype ? parse_dtype_option(o->dtype) : ST_F32;
  uint64_t shard = 0;
  if (!hf_parse_size(o->shard_size, &shard))
    tv_die("--shard-size expects a size such as 5GB, 500MB or 2GiB, got '%s'", o->shard_size);
  if (!model_dir) tv_die("export: --model DIR is required (the adapter's base model)");
  if (!adapter) tv_die("export: --adapter DIR is required");
  if (!out) tv_die("export: --out DIR is required");
  check_distinct(out, model_dir, "--model");
  check_distinct(out, adapter, "--adapter");

  HfModel *model = hf_model_open(model_dir);
  if (merge) {
    if (!have_dtype) dtype = hf_model_config(model)->dtype;
    export_merged(model, adapter, out, dtype, shard, threads);
  } else {
    export_adapter(model, adapter, out, dtype);
  }
  hf_model_close(model);
  run_config_free(&rc);
  return 0;
}
