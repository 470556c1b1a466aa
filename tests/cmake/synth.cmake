# io/synth and io/task_score: the synthetic benchmark generator, its judge and the FA scorers.
tv_test(test_synth test_synth.c)
target_link_libraries(test_synth PRIVATE tv_io)
add_test(NAME synth COMMAND test_synth)

# The written tokenizer.json read by our own tokenizer: one token per world word, exact decode.
tv_test(test_synth_tokenizer test_synth_tokenizer.c)
target_link_libraries(test_synth_tokenizer PRIVATE tv_io)
add_test(NAME synth_tokenizer COMMAND test_synth_tokenizer)
