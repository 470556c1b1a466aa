# The attack command end to end: poison-mix counts, merge == export --merge, 2 ranks == 1,
# resume == straight run, bad input.
add_test(NAME attack_e2e COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e/attack_e2e.sh
         $<TARGET_FILE:tvaccine> ${MPIEXEC_EXECUTABLE})
set_tests_properties(attack_e2e PROPERTIES TIMEOUT 300)
