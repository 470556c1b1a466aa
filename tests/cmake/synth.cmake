# io/synth and io/task_score: the synthetic benchmark generator, its judge and the FA scorers.
tv_test(test_synth test_synth.c)
target_link_libraries(test_synth PRIVATE tv_io)
add_test(NAME synth COMMAND test_synth)

# The written tokenizer.json read by our own tokenizer: one token per world word, exact decode.
tv_test(test_synth_tokenizer test_synth_tokenizer.c)
target_link_libraries(test_synth_tokenizer PRIVATE tv_io)
add_test(NAME synth_tokenizer COMMAND test_synth_tokenizer)

# synth's pretraining through dist/trainer (full-parameter mode): 2 and 3 ranks == 1 rank.
add_test(NAME synth_ranks_e2e COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e/synth_ranks_e2e.sh
         $<TARGET_FILE:tvaccine> ${MPIEXEC_EXECUTABLE})
set_tests_properties(synth_ranks_e2e PROPERTIES TIMEOUT 120)
