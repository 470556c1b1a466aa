# io/dataset: row formats, errors, template and poison mix (test_dataset); encoding against
# the Alpaca reference (tests/ref/dataset_ref.py), batches and orders (test_dataset_batch).
tv_test(test_dataset test_dataset.c)
target_link_libraries(test_dataset PRIVATE tv_io)
add_test(NAME dataset COMMAND test_dataset ${CMAKE_CURRENT_SOURCE_DIR}/data/datasets)
tv_test(test_dataset_batch test_dataset_batch.c)
target_link_libraries(test_dataset_batch PRIVATE tv_io)
add_test(NAME dataset_batch COMMAND test_dataset_batch ${CMAKE_CURRENT_SOURCE_DIR}/data/datasets)
