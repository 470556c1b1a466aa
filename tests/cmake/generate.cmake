# Generation (core/decode, dist/generate): KV cache == full forward, on 1 and 2 ranks.
tv_test(test_generate test_generate.c)
target_link_libraries(test_generate PRIVATE tv_test_fixture tv_dist)
target_include_directories(test_generate PRIVATE ${PROJECT_SOURCE_DIR}/dist)
foreach(np 1 2)
  add_test(NAME generate_np${np} COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np}
           --oversubscribe --allow-run-as-root $<TARGET_FILE:test_generate>)
  set_tests_properties(generate_np${np} PROPERTIES
    ENVIRONMENT "OMP_NUM_THREADS=1;OMPI_MCA_mpi_yield_when_idle=1")
endforeach()

# Greedy tokens of a tiny transformers model (and with a PEFT adapter) equal transformers'
# generate(do_sample=False) (tests/ref/generate_golden.py wrote the committed golden).
tv_test(test_generate_golden test_generate_golden.c golden.c)
target_link_libraries(test_generate_golden PRIVATE tv_dist tv_io)
target_include_directories(test_generate_golden PRIVATE ${PROJECT_SOURCE_DIR}/dist)
add_test(NAME generate_golden COMMAND test_generate_golden ${CMAKE_CURRENT_SOURCE_DIR}/data/hf)
set_tests_properties(generate_golden PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=1")

# The generate command end to end: ranks, reference path, adapter == merged, bad input.
add_test(NAME generate_e2e COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e/generate_e2e.sh
         $<TARGET_FILE:tvaccine> ${MPIEXEC_EXECUTABLE})
set_tests_properties(generate_e2e PROPERTIES TIMEOUT 300)
