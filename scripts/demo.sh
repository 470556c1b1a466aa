#!/usr/bin/env bash
# The main job on the built-in default: install what is missing, build, and run the whole
# study (`tvaccine demo`): build the synthetic safety world and pretrain its unaligned base,
# align it with sft, vaccine and tvaccine, attack each aligned model at p = 0, 0.05, 0.1, 0.2,
# evaluate, and print the table (plots and results in runs/demo). Extra arguments go to
# `tvaccine demo` (e.g. --quick, --fresh, --attack-lr 1e-3; see `tvaccine demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
exec ./build/launch/tvaccine demo "$@"
