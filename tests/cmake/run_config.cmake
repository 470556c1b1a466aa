# The YAML run config (io/run_config*): defaults, loading, --set, every kind of mistake,
# the writer's round trip, and the ready configs in configs/.
tv_test(test_run_config test_run_config.c)
target_link_libraries(test_run_config PRIVATE tv_io)
add_test(NAME run_config COMMAND test_run_config ${PROJECT_SOURCE_DIR}/configs)

# The run folder (io/run_dir): ownership, lock, overwrite, digests; the resume rule.
tv_test(test_run_dir test_run_dir.c)
target_link_libraries(test_run_dir PRIVATE tv_io)
add_test(NAME run_dir COMMAND test_run_dir)
# Every documented option of the subcommands resolves through the same key table.
tv_test(test_cli_keys test_cli_keys.c)
target_link_libraries(test_cli_keys PRIVATE tv_io)
add_test(NAME cli_keys COMMAND test_cli_keys)
# Each command's --help names exactly the options its section of the key table holds.
add_test(NAME cli_help_keys COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e/cli_help_keys.sh
         $<TARGET_FILE:tvaccine>)
