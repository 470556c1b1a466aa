# The NCCL path of dist/p2p (p2p_nccl.c), a library of its own because it needs no MPI: tv_dist
# links it, and so do the GPU tests of the GPU-only build (no MPI there).
add_library(tv_p2p_nccl STATIC ${CMAKE_CURRENT_LIST_DIR}/p2p_nccl.c)
target_include_directories(tv_p2p_nccl PUBLIC ${CMAKE_CURRENT_LIST_DIR} ${TV_NCCL_INCLUDE})
target_compile_definitions(tv_p2p_nccl PUBLIC TV_HAVE_NCCL)
target_link_libraries(tv_p2p_nccl PUBLIC tv_core CUDA::cudart ${TV_NCCL_LIB})
