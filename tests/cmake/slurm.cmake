# A real one-node Slurm cluster on loopback (scripts/slurm_cluster_test.sh): the shipped
# templates with 2 tasks give the 1-rank adapter; SIGKILL of a rank, and a fatal error on one
# rank, end the srun job within 10 s, non-zero, naming the rank; SIGUSR1 preempts and the
# template resumes. Root only: it skips (77) when not root or when slurmctld, slurmd and munge
# are absent and cannot be installed. Its daemons use their own ports, key and state folder,
# and its own 200 s limit stops them before ctest's timeout could leave them running.
add_test(NAME slurm_cluster
         COMMAND bash ${PROJECT_SOURCE_DIR}/scripts/slurm_cluster_test.sh $<TARGET_FILE:tvaccine>)
set_tests_properties(slurm_cluster PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77
                     RESOURCE_LOCK slurm_cluster)
