/* libFuzzer target for the safetensors header parser (io/hf/safetensors.c): any input must end
 * in a parsed file or an error message, never a crash, hang, leak or undefined behaviour.
 *
 * Not part of the CMake build. Build and run from the repository root (Debian 12):
 *   apt-get install -y clang libclang-rt-14-dev libcjson-dev   # if missing
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *     -D_DEFAULT_SOURCE -Icore -Iio -Iio/hf tests/fuzz/fuzz_safetensors.c io/hf/safetensors.c \
 *     core/check.c \
 *     -lcjson -o /tmp/fuzz_safetensors
 *   mkdir -p /tmp/fuzz_st_corpus   # seed it with small valid files, e.g. this one:
 *   printf '\x55\0\0\0\0\0\0\0{"__metadata__":{"format":"pt"},"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}ABCD' \
 *     > /tmp/fuzz_st_corpus/seed1
 *   /tmp/fuzz_safetensors -max_total_time=600 -max_len=4096 \
 *     -dict=tests/fuzz/safetensors.dict /tmp/fuzz_st_corpus */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[512];
  SafeTensors *st = safetensors_parse(data, size, "fuzz", err, sizeof err);
  if (!st) {
    /* The message must be a terminated string naming the label. */
    if (strncmp(err, "fuzz: ", 6) != 0) __builtin_trap();
    return 0;
  }
  /* A parsed file promises that every tensor lies inside the data: read them all. */
  float buf[1024];
  for (int i = 0; i < safetensors_count(st); i++) {
    const StTensor *t = safetensors_tensor(st, i);
    if (safetensors_find(st, t->name) != t) __builtin_trap();
    if (t->numel <= 1024) safetensors_read_f32(st, t, buf);
  }
  (void)safetensors_metadata(st, "format");
  safetensors_close(st);
  return 0;
}
