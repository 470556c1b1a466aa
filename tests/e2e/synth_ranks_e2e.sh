#!/usr/bin/env bash
# `tvaccine synth` pretrains through dist/trainer's full-parameter mode: the base model of
# 2 and 3 MPI ranks (pipeline stages of its decoder layers) equals 1 rank's bit for bit, and
# the pretraining loss falls. Usage: synth_ranks_e2e.sh TVACCINE_BINARY MPIEXEC
set -euo pipefail
TV=$1
MPIEXEC=${2:-mpiexec}
W=$(mktemp -d /tmp/tv_synth_ranks.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
export OMP_NUM_THREADS=1 OMPI_MCA_mpi_yield_when_idle=1
MPI=("$MPIEXEC" --oversubscribe)
[ "$(id -u)" = 0 ] && MPI+=(--allow-run-as-root)
small=(--steps 8 --layers 3 --width 32 --heads 2 --kv-heads 1 --ffn 64 --batch 8 --lr 1e-2)

"$TV" synth --out "$W/r1" "${small[@]}" > "$W/r1.log" 2>&1 || { cat "$W/r1.log"; fail "synth on 1 rank"; }
first=$(grep -o 'step 1/8  loss [0-9.]*' "$W/r1.log" | awk '{print $4}')
last=$(grep -o 'step 8/8  loss [0-9.]*' "$W/r1.log" | awk '{print $4}')
[ -n "$first" ] && [ -n "$last" ] || { cat "$W/r1.log"; fail "no loss lines"; }
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || fail "pretraining loss did not fall ($first -> $last)"
for n in 2 3; do
  "${MPI[@]}" -n "$n" "$TV" synth --out "$W/r$n" "${small[@]}" > "$W/r$n.log" 2>&1 \
    || { cat "$W/r$n.log"; fail "synth on $n ranks"; }
  grep -q "for 8 steps on $n ranks" "$W/r$n.log" || { cat "$W/r$n.log"; fail "did not run on $n ranks"; }
  cmp "$W/r1/base/model.safetensors" "$W/r$n/base/model.safetensors" \
    || fail "the base pretrained on $n ranks differs from 1 rank's"
  cmp "$W/r1/base/config.json" "$W/r$n/base/config.json" || fail "config.json differs on $n ranks"
done
echo "ok: synth pretraining on 2 and 3 ranks gives 1 rank's base bit for bit (loss $first -> $last)"
