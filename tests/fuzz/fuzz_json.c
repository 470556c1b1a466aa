/* libFuzzer target for the JSON documents tvaccine reads itself: config.json
 * (hf_config_parse), adapter_config.json (peft_config_parse) and datasets in every format
 * (dataset_parse). Any input must end in a parsed result or one error message, never a
 * crash, hang, leak or undefined behaviour. (safetensors headers and tokenizer.json have
 * their own targets.)
 *
 * Not part of the CMake build. Build and run from the repository root (Debian 12):
 *   apt-get install -y clang libclang-rt-14-dev   # if missing
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *     -D_DEFAULT_SOURCE -DPCRE2_CODE_UNIT_WIDTH=8 -Icore -Iio -Iio/hf -Iio/data -Iio/tokenizer \
 *     tests/fuzz/fuzz_json.c io/hf/hf_config.c io/hf/peft.c io/data/dataset_load.c \
 *     io/data/dataset.c io/json_util.c io/hf/hf_write.c io/hf/safetensors.c core/*.c \
 *     core/cpu/*.c -I/usr/include/x86_64-linux-gnu/openblas-openmp -fopenmp -lopenblas -lcjson -lpcre2-8 -lm \
 *     -o /tmp/fuzz_json
 *   mkdir -p /tmp/fuzz_json_corpus
 *   for f in tests/data/hf/llama_gqa/config.json tests/data/hf/qwen2_bias/config.json \
 *            tests/data/hf/peft_llama_gqa/adapter_config.json tests/data/datasets/alpaca.json \
 *            tests/data/datasets/beavertails.jsonl tests/data/datasets/refusal.json; do
 *     cp "$f" /tmp/fuzz_json_corpus/$(echo "$f" | tr / _); done
 *   /tmp/fuzz_json -max_total_time=600 -max_len=8192 /tmp/fuzz_json_corpus */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dataset.h"
#include "hf_model.h"
#include "peft.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *text = (const char *)data;
  char err[512];
  HfConfig hc;
  if (hf_config_parse(text, size, "fuzz", &hc, err, sizeof err) && strncmp(err, "fuzz", 4) != 0)
    __builtin_trap(); /* a message must name its file */
  PeftConfig pc;
  if (peft_config_parse(text, size, "fuzz", 4, &pc, err, sizeof err) && strncmp(err, "fuzz", 4) != 0)
    __builtin_trap();
  for (int f = DATASET_FORMAT_AUTO; f <= DATASET_FORMAT_REFUSAL; f++) {
    ExampleSet set;
    if (dataset_parse("fuzz", text, size, (DatasetFormat)f, &set, err, sizeof err) == 0) {
      /* every parsed example holds terminated strings */
      for (size_t i = 0; i < set.n; i++)
        if (strlen(set.items[i].instruction) + strlen(set.items[i].output) + 1 == 0) __builtin_trap();
      example_set_free(&set);
    } else if (strncmp(err, "fuzz", 4) != 0) {
      __builtin_trap();
    }
  }
  return 0;
}
