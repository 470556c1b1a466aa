# tests/gpu/core_step.c (the MPI-free step the GPU tests and benchmark drive) equals
# dist/trainer's step on one rank, bit for bit on the CPU.
tv_test(test_core_step gpu/test_core_step.c)
target_link_libraries(test_core_step PRIVATE tv_gpu_step tv_test_fixture tv_dist)
target_include_directories(test_core_step PRIVATE ${PROJECT_SOURCE_DIR}/dist)
add_test(NAME core_step_equals_trainer COMMAND test_core_step)
