# The device key: an unknown name is a config error naming the key; cuda where this build has
# no CUDA backend, or no GPU is visible, ends in one error line before the model is read.
add_test(NAME device_bad_name COMMAND tvaccine align
         --config ${PROJECT_SOURCE_DIR}/configs/sft-baseline.yaml --device gpu)
set_tests_properties(device_bad_name PROPERTIES
  PASS_REGULAR_EXPRESSION "tvaccine: error: device: 'gpu' is not one of cpu, cuda")
add_test(NAME device_cuda_unavailable COMMAND tvaccine align
         --config ${PROJECT_SOURCE_DIR}/configs/sft-baseline.yaml --device cuda
         --out ${CMAKE_CURRENT_BINARY_DIR}/device_cuda_unavailable)
# CUDA_VISIBLE_DEVICES empty hides every GPU, so the answer is the same on a GPU machine.
set_tests_properties(device_cuda_unavailable PROPERTIES ENVIRONMENT "CUDA_VISIBLE_DEVICES="
  PASS_REGULAR_EXPRESSION
  "tvaccine: error: device: cuda asked for, but (no CUDA GPU is visible|this tvaccine was built without)")
