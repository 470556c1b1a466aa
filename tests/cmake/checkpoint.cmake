# io/checkpoint: HDF5 save/load round trip, atomic replace, corrupt-file errors, latest lookup.
tv_test(test_checkpoint test_checkpoint.c)
target_link_libraries(test_checkpoint PRIVATE tv_io)
add_test(NAME checkpoint COMMAND test_checkpoint)
