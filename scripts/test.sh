#!/usr/bin/env bash
# The whole test suite: install what is missing, build, run every test with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
cd build
# Tests run in parallel, so each gets one OpenMP thread unless the caller says otherwise:
# spinning OpenMP teams on an oversubscribed machine cost far more than they gain. Tests
# that must cover several threads create their backends with explicit thread counts.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
ctest --output-on-failure -j"$(nproc)" "$@"
