#!/usr/bin/env bash
# The whole test suite built with -fsanitize=address,undefined into build-sanitize/ (the
# normal build/ is left alone). Any UndefinedBehaviorSanitizer report ends the process
# (-fno-sanitize-recover), AddressSanitizer and LeakSanitizer reports fail the test; leaks
# inside Open MPI and the other linked libraries are suppressed by tests/sanitize/lsan.supp.
# Usage: bash scripts/sanitize.sh [ctest arguments, e.g. -R align]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O0"
cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=Sanitize -DCMAKE_C_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" > /dev/null
cmake --build build-sanitize -j"$(nproc)"
cd build-sanitize
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# detect_leaks in every process (mpirun's ranks too); MPI's shared-memory transport maps
# memory ASan cannot see, so it is switched to tcp/self for the sanitized run.
export ASAN_OPTIONS="detect_leaks=1:fast_unwind_on_malloc=0:exitcode=23:detect_odr_violation=0"
export LSAN_OPTIONS="suppressions=$root/tests/sanitize/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export OMPI_MCA_btl="self,tcp"
ctest --output-on-failure -j"$(nproc)" --timeout 1800 "$@"
