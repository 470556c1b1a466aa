# Hugging Face interoperability: safetensors, model folders, PEFT adapters, export.
tv_test(test_safetensors test_safetensors.c)
target_link_libraries(test_safetensors PRIVATE tv_io)
add_test(NAME safetensors COMMAND test_safetensors)
tv_test(test_hf_model test_hf_model.c)
target_link_libraries(test_hf_model PRIVATE tv_io)
add_test(NAME hf_model COMMAND test_hf_model)
tv_test(test_peft test_peft.c)
target_link_libraries(test_peft PRIVATE tv_io)
add_test(NAME peft COMMAND test_peft)
# The export subcommand, linked straight in (launch/ is an executable, not a library).
tv_test(test_export test_export.c ${PROJECT_SOURCE_DIR}/launch/export.c
        ${PROJECT_SOURCE_DIR}/launch/run_setup.c)
target_include_directories(test_export PRIVATE ${PROJECT_SOURCE_DIR}/launch)
target_link_libraries(test_export PRIVATE tv_dist tv_io)
add_test(NAME export COMMAND test_export)
