# The alignment trainer (dist/trainer, dist/pipeline) on one rank and across ranks.
tv_test(test_trainer test_trainer.c)
target_link_libraries(test_trainer PRIVATE tv_test_fixture tv_dist)
target_include_directories(test_trainer PRIVATE ${PROJECT_SOURCE_DIR}/dist)
add_test(NAME trainer COMMAND test_trainer)
# A probe step given no probe batch (NULL, or empty) ends in one error line, not a crash.
foreach(kind no-probe empty-probe)
  add_test(NAME trainer_${kind} COMMAND test_trainer ${kind})
  set_tests_properties(trainer_${kind} PROPERTIES
    PASS_REGULAR_EXPRESSION "step 0 starts with a T-Vaccine probe but was given no probe batch")
endforeach()

# Each rank's schedule (1F1B, GPipe, forward-only) against hand-written tables.
tv_test(test_pipeline_schedule test_pipeline_schedule.c)
target_link_libraries(test_pipeline_schedule PRIVATE tv_dist)
add_test(NAME pipeline_schedule COMMAND test_pipeline_schedule)

# 1, 2, 3 and 4 ranks, 1 to 8 micro-batches, 1F1B and GPipe: bit for bit the one-rank run.
tv_test(test_trainer_mpi test_trainer_mpi.c)
target_link_libraries(test_trainer_mpi PRIVATE tv_test_fixture tv_dist)
target_include_directories(test_trainer_mpi PRIVATE ${PROJECT_SOURCE_DIR}/dist)
set(TV_TRAINER_REF ${CMAKE_CURRENT_BINARY_DIR}/trainer_mpi_reference.bin)
add_test(NAME trainer_mpi_reference COMMAND test_trainer_mpi write ${TV_TRAINER_REF})
set_tests_properties(trainer_mpi_reference PROPERTIES FIXTURES_SETUP trainer_mpi_ref)
foreach(np 1 2 3 4)
  add_test(NAME trainer_mpi_np${np} COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np}
           --oversubscribe --allow-run-as-root $<TARGET_FILE:test_trainer_mpi> compare ${TV_TRAINER_REF})
  # one thread per rank and yielding MPI waits: 4 ranks share 2 cores without spinning
  set_tests_properties(trainer_mpi_np${np} PROPERTIES FIXTURES_REQUIRED trainer_mpi_ref
    ENVIRONMENT "OMP_NUM_THREADS=1;OMPI_MCA_mpi_yield_when_idle=1")
endforeach()
# Data x pipeline grids (dist.data_parallel): 2 replicas of 1 stage and 2 replicas of 2
# stages, each replica taking a block of the micro-batches, still the one-rank run bit for bit.
foreach(grid "2;1" "2;2")
  list(GET grid 0 D)
  list(GET grid 1 P)
  math(EXPR np "${D} * ${P}")
  add_test(NAME trainer_mpi_grid${D}x${P} COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np}
           --oversubscribe --allow-run-as-root $<TARGET_FILE:test_trainer_mpi> compare ${TV_TRAINER_REF} ${D})
  set_tests_properties(trainer_mpi_grid${D}x${P} PROPERTIES FIXTURES_REQUIRED trainer_mpi_ref
    ENVIRONMENT "OMP_NUM_THREADS=1;OMPI_MCA_mpi_yield_when_idle=1")
endforeach()

# One step of each method against the float64 PyTorch reference (tests/ref/golden_methods.py).
tv_test(test_golden_methods test_golden_methods.c golden.c golden_model.c)
target_link_libraries(test_golden_methods PRIVATE tv_dist)
target_include_directories(test_golden_methods PRIVATE ${PROJECT_SOURCE_DIR}/dist)
add_test(NAME golden_methods COMMAND test_golden_methods
  ${CMAKE_CURRENT_SOURCE_DIR}/data/golden_method_sft.tvg
  ${CMAKE_CURRENT_SOURCE_DIR}/data/golden_method_vaccine.tvg
  ${CMAKE_CURRENT_SOURCE_DIR}/data/golden_method_tvaccine.tvg
  ${CMAKE_CURRENT_SOURCE_DIR}/data/golden_method_tvaccine_attention.tvg
  ${CMAKE_CURRENT_SOURCE_DIR}/data/golden_method_tvaccine_sampled.tvg)

# synth + align end to end: resume == straight run, SIGTERM preemption, 2 ranks == 1 rank,
# config mistakes.
add_test(NAME align_e2e COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e/align_e2e.sh
         $<TARGET_FILE:tvaccine> ${MPIEXEC_EXECUTABLE})
set_tests_properties(align_e2e PROPERTIES TIMEOUT 600)

# Run safety end to end: run-folder ownership, honest resume, non-finite guards, preemption of
# long steps (one process and mpirun -n 2), errors before loading.
tv_test(checkpoint_compare checkpoint_compare.c)
target_link_libraries(checkpoint_compare PRIVATE tv_io)
add_test(NAME run_safety_e2e COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e/run_safety_e2e.sh
         $<TARGET_FILE:tvaccine> ${MPIEXEC_EXECUTABLE} $<TARGET_FILE:checkpoint_compare>)
set_tests_properties(run_safety_e2e PROPERTIES TIMEOUT 600)
# Ranks that disagree (other overrides; other bytes under one data path) end in one line
# naming the rank and the file; SIGKILL of a rank ends the 2-rank job within 10 s.
add_test(NAME ranks_e2e COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e/ranks_e2e.sh
         $<TARGET_FILE:tvaccine> ${MPIEXEC_EXECUTABLE})
set_tests_properties(ranks_e2e PROPERTIES TIMEOUT 300)

# The p2p dispatch without a GPU: the staged path (host copies over MPI, a CUDA build's path
# without NCCL) through a fake device backend, against the host path and the CPU pipeline.
tv_test(test_p2p_paths test_p2p_paths.c counted_backend.c)
target_link_libraries(test_p2p_paths PRIVATE tv_dist)
target_include_directories(test_p2p_paths PRIVATE ${PROJECT_SOURCE_DIR}/dist)
add_test(NAME p2p_paths_np3 COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 3
         --oversubscribe --allow-run-as-root $<TARGET_FILE:test_p2p_paths>)
add_test(NAME p2p_staged_size_mismatch COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 2
         --oversubscribe --allow-run-as-root $<TARGET_FILE:test_p2p_paths> mismatch)
add_test(NAME p2p_paths_disagree COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 2
         --oversubscribe --allow-run-as-root $<TARGET_FILE:test_p2p_paths> disagree)
set_tests_properties(p2p_paths_disagree PROPERTIES PASS_REGULAR_EXPRESSION
  "pipeline ranks disagree on how to move buffers: rank 1 differs from rank 0")
set_tests_properties(p2p_paths_np3 p2p_staged_size_mismatch p2p_paths_disagree PROPERTIES
  ENVIRONMENT "OMP_NUM_THREADS=1;OMPI_MCA_mpi_yield_when_idle=1")
set_tests_properties(p2p_staged_size_mismatch PROPERTIES PASS_REGULAR_EXPRESSION
  "rank 1: received 3 floats from rank 0 \\(tag 7\\), expected 4")

# A step's host syncs do not grow with layers or micro-batches (counted, not timed).
tv_test(test_host_syncs test_host_syncs.c counted_backend.c)
target_link_libraries(test_host_syncs PRIVATE tv_dist)
target_include_directories(test_host_syncs PRIVATE ${PROJECT_SOURCE_DIR}/dist)
add_test(NAME host_syncs COMMAND test_host_syncs)
set_tests_properties(host_syncs PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=1")

# The data x pipeline grid end to end: 2 x 2 and 2 x 1 == 1 rank, resume 2 x 2 -> 1 x 2 -> 1 x 1,
# dist.stages, and bad grids in one error line.
add_test(NAME grid_e2e COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e/grid_e2e.sh
         $<TARGET_FILE:tvaccine> ${MPIEXEC_EXECUTABLE})
set_tests_properties(grid_e2e PROPERTIES TIMEOUT 300)
