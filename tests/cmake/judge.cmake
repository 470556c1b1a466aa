# Judges and evaluation (core/classifier, io/judge_model): the QA-moderation classifier
# against transformers (tests/ref/judge_golden.py wrote the committed golden).
tv_test(test_judge_golden test_judge_golden.c golden.c)
target_link_libraries(test_judge_golden PRIVATE tv_io)
add_test(NAME judge_golden COMMAND test_judge_golden ${CMAKE_CURRENT_SOURCE_DIR}/data/hf)
set_tests_properties(judge_golden PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=1")

# Evaluation rules on hand-made cases (io/evaluation, io/answers) and the eval command.
tv_test(test_eval test_eval.c)
target_link_libraries(test_eval PRIVATE tv_io)
add_test(NAME eval_rules COMMAND test_eval ${CMAKE_CURRENT_SOURCE_DIR}/data/eval/world.json)
add_test(NAME eval_e2e COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e/eval_e2e.sh
         $<TARGET_FILE:tvaccine> ${CMAKE_CURRENT_SOURCE_DIR}/data)
