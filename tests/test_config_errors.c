/* Impossible model and LoRA shapes are rejected with a message naming the field. */
#include <string.h>

#include "lora.h"
#include "model.h"
#include "test_util.h"

static void expect_reject(LlamaConfig c, const char *field) {
  char buf[256];
  const char *msg = llama_config_validate(&c, buf, sizeof buf);
  EXPECT(msg && strstr(msg, field), "expected a message naming %s, got %s", field,
         msg ? msg : "(accepted)");
}

int main(void) {
  LlamaConfig ok = llama_config_default(100, 64, 128, 2, 8, 4);
  char buf[256];
  EXPECT(llama_config_validate(&ok, buf, sizeof buf) == NULL, "valid config rejected: %s", buf);

  LlamaConfig c = ok;
  c.num_kv_heads = 3; /* does not divide 8 */
  expect_reject(c, "num_key_value_heads");
  c = ok, c.num_kv_heads = 16;
  expect_reject(c, "num_key_value_heads");
  c = ok, c.num_layers = 0;
  expect_reject(c, "num_hidden_layers");
  c = llama_config_default(100, 60, 128, 2, 8, 4); /* 60 / 8 is not a whole head dim */
  c.head_dim = 0;
  expect_reject(c, "head_dim");
  c = ok, c.head_dim = 7;
  expect_reject(c, "head_dim");
  c = ok, c.hidden_size = 0;
  expect_reject(c, "hidden_size");
  c = ok, c.vocab_size = -5;
  expect_reject(c, "vocab_size");
  c = ok, c.rms_norm_eps = 0;
  expect_reject(c, "rms_norm_eps");
  c = ok, c.rope_theta = 0;
  expect_reject(c, "rope_theta");
  c = ok, c.rope_scaling = ROPE_SCALING_LLAMA3, c.rope_factor = 0.5f;
  expect_reject(c, "factor");
  c = ok, c.intermediate_size = -1;
  expect_reject(c, "intermediate_size");

  LoraConfig l = lora_config_default();
  EXPECT(lora_config_validate(&l, buf, sizeof buf) == NULL, "default LoRA rejected");
  l.r = 0;
  EXPECT(lora_config_validate(&l, buf, sizeof buf) && strstr(buf, "lora.r"), "r = 0: %s", buf);
  l = lora_config_default(), l.dropout = 1.0f;
  EXPECT(lora_config_validate(&l, buf, sizeof buf) && strstr(buf, "dropout"), "dropout 1: %s", buf);
  l = lora_config_default(), l.alpha = -1;
  EXPECT(lora_config_validate(&l, buf, sizeof buf) && strstr(buf, "alpha"), "alpha: %s", buf);
  l = lora_config_default(), l.target_mask = 0;
  EXPECT(lora_config_validate(&l, buf, sizeof buf) && strstr(buf, "target"), "targets: %s", buf);
  return tv_test_report("test_config_errors");
}
