# Hugging Face interoperability: folders and a PEFT adapter written by the real transformers /
# peft (tests/ref/hf_models.py, committed under tests/data/hf) must give the logits
# transformers computed from them (io/hf_model, io/peft).
tv_test(test_hf_golden test_hf_golden.c golden.c)
target_link_libraries(test_hf_golden PRIVATE tv_io)
set(TV_HF_DATA ${CMAKE_CURRENT_SOURCE_DIR}/data/hf)
foreach(model llama_gqa llama_tied_llama3rope qwen2_bias llama_sharded_bf16)
  add_test(NAME hf_golden_${model} COMMAND test_hf_golden ${TV_HF_DATA} ${model})
endforeach()
add_test(NAME hf_golden_peft_llama_gqa COMMAND test_hf_golden ${TV_HF_DATA} llama_gqa peft_llama_gqa)
