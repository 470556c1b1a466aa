#!/usr/bin/env bash
# The main job on the built-in default: install what is missing, build, run `tvaccine demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
./build/launch/tvaccine demo "$@"
