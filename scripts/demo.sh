#!/usr/bin/env bash
# The main job on the built-in default: install what is missing, build, build the synthetic
# safety world and pretrain its unaligned base model (once), then align it with T-Vaccine.
# Extra arguments go to `tvaccine align` (e.g. --max-steps 50, --method vaccine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
TV=./build/launch/tvaccine
WORLD=runs/synthetic
if [ ! -f "$WORLD/base/model.safetensors" ] || [ ! -f "$WORLD/align.yaml" ]; then
  "$TV" synth --out "$WORLD"
fi
# --overwrite: the demo's run folder is the demo's own, so running it again starts afresh.
"$TV" align --config configs/synthetic-tvaccine.yaml --overwrite "$@"
