# io/tokenizer: golden comparisons with Hugging Face tokenizers (tests/ref/tokenizer_golden.py
# wrote tests/data/tokenizers/) and the reject / edge-case unit tests.
set(TV_TOKENIZER_DATA ${CMAKE_CURRENT_SOURCE_DIR}/data/tokenizers)

tv_test(test_tokenizer_golden test_tokenizer_golden.c)
target_include_directories(test_tokenizer_golden PRIVATE ${PROJECT_SOURCE_DIR}/io)
target_link_libraries(test_tokenizer_golden PRIVATE tv_io)
foreach(variant sp sp_meta_first sp_meta_always sp_norm_added bytelevel bl_gpt2 bl_qwen2 bl_splits)
  add_test(NAME tokenizer_golden_${variant}
           COMMAND test_tokenizer_golden ${TV_TOKENIZER_DATA}/${variant} ${TV_TOKENIZER_DATA}/corpus.txt)
endforeach()

tv_test(test_tokenizer_unit test_tokenizer_unit.c)
target_include_directories(test_tokenizer_unit PRIVATE ${PROJECT_SOURCE_DIR}/io)
target_link_libraries(test_tokenizer_unit PRIVATE tv_io)
add_test(NAME tokenizer_unit COMMAND test_tokenizer_unit ${TV_TOKENIZER_DATA})
