# io/checkpoint: HDF5 save/load round trip, atomic replace, latest lookup; corrupt-file errors.
tv_test(test_checkpoint test_checkpoint.c)
target_link_libraries(test_checkpoint PRIVATE tv_io)
add_test(NAME checkpoint COMMAND test_checkpoint)
tv_test(test_checkpoint_corrupt test_checkpoint_corrupt.c)
target_link_libraries(test_checkpoint_corrupt PRIVATE tv_io)
add_test(NAME checkpoint_corrupt COMMAND test_checkpoint_corrupt)
