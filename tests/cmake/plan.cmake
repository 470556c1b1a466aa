# tvaccine plan: the memory arithmetic against hand-computed sizes and a real Stage, the
# command on config.json-only model folders, and its bad input.
tv_test(test_memory_plan test_memory_plan.c)
add_test(NAME memory_plan COMMAND test_memory_plan)

set(TV_PLAN_DATA ${CMAKE_CURRENT_SOURCE_DIR}/data/plan)
add_test(NAME plan_70b_8x24 COMMAND tvaccine plan --model ${TV_PLAN_DATA}/llama-2-70b --ranks 8
         --gpu-mem 24GB)
# The answer may be "does not fit" (exit 1); the test asks for the table and the batch line.
set_tests_properties(plan_70b_8x24 PROPERTIES
  PASS_REGULAR_EXPRESSION "largest batch that fits: [0-9]+ x 200")
add_test(NAME plan_7b_1x24 COMMAND tvaccine plan --model ${TV_PLAN_DATA}/llama-2-7b --ranks 1
         --gpu-mem 24GB)
set_tests_properties(plan_7b_1x24 PROPERTIES PASS_REGULAR_EXPRESSION "rank.*\n0 +\\[0,32\\)")
add_test(NAME plan_bad_size COMMAND tvaccine plan --model ${TV_PLAN_DATA}/llama-2-7b --ranks 1
         --gpu-mem 24XB)
set_tests_properties(plan_bad_size PROPERTIES
  PASS_REGULAR_EXPRESSION "tvaccine: error: --gpu-mem \\(plan.gpu_mem\\) expects a size such as 24GB")
add_test(NAME plan_missing_model COMMAND tvaccine plan --model /nonexistent --ranks 1
         --gpu-mem 24GB)
set_tests_properties(plan_missing_model PROPERTIES
  PASS_REGULAR_EXPRESSION "tvaccine: error: plan: cannot open /nonexistent/config.json")
# plan splits the layers as align will (run_setup_stage_sizes): an explicit dist.stages from
# --config, one size per rank.
add_test(NAME plan_stages COMMAND tvaccine plan --model ${TV_PLAN_DATA}/llama-2-7b --ranks 2
         --gpu-mem 24GB --config ${TV_PLAN_DATA}/stages-20-12.yaml)
set_tests_properties(plan_stages PROPERTIES
  PASS_REGULAR_EXPRESSION "\n0 +\\[0,20\\)[^\n]*\n1 +\\[20,32\\)")
add_test(NAME plan_stages_count COMMAND tvaccine plan --model ${TV_PLAN_DATA}/llama-2-7b
         --ranks 3 --gpu-mem 24GB --config ${TV_PLAN_DATA}/stages-20-12.yaml)
set_tests_properties(plan_stages_count PROPERTIES PASS_REGULAR_EXPRESSION
  "tvaccine: error: dist.stages of [^\n]* lists 2 stage sizes for --ranks 3")
