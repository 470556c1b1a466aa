#!/usr/bin/env bash
# The data x pipeline grid (dist.data_parallel, dist.stages) end to end, on a 3-layer world:
#  1. 2 replicas x 2 stages (4 ranks) and 2 replicas x 1 stage give the adapter of 1 rank,
#     bit for bit (T-Vaccine, 4 micro-batches; sft on 2 x 1 with 3 micro-batches, split 2 + 1);
#  2. a 2 x 2 checkpoint resumed on 1 x 2, whose checkpoint is resumed on 1 x 1, ends at the
#     straight run's adapter; an explicit dist.stages split gives it too;
#  3. bad grids end in one error line: W % D != 0, dist.stages of the wrong count or sum,
#     more pipeline stages than layers.
# Usage: grid_e2e.sh TVACCINE_BINARY MPIEXEC
set -euo pipefail
TV=$(readlink -f "$1")
MPIEXEC=${2:-mpiexec}
W=$(mktemp -d /tmp/tv_grid.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
export OMP_NUM_THREADS=1 OMPI_MCA_mpi_yield_when_idle=1
MPI=("$MPIEXEC" --allow-run-as-root --oversubscribe)

"$TV" synth --out "$W/world" --steps 0 --layers 3 --width 32 --heads 2 --kv-heads 1 --ffn 64 \
  > "$W/synth.log" 2>&1 || { cat "$W/synth.log"; fail "synth"; }
common=(--config "$W/world/align.yaml" --set batch_size=4 --set max_len=64 --set log_every=100
        --set method=tvaccine --set tvaccine.S=1 --set tvaccine.J=2 --set tvaccine.K=3
        --set tvaccine.probe_samples=8 --set tvaccine.probe_batch=2 --set dist.micro_batches=4
        --max-steps 6)
adapter() { echo "$W/$1/adapter/adapter_model.safetensors"; }
run() { # run NAME RANKS ARGS...: align on RANKS ranks into $W/NAME
  local name=$1 np=$2; shift 2
  "${MPI[@]}" -n "$np" "$TV" align "$@" --out "$W/$name" > "$W/$name.log" 2>&1 \
    || { cat "$W/$name.log"; fail "$name ($np ranks)"; }
}

# 1. grids == one rank
run one 1 "${common[@]}"
run g22 4 "${common[@]}" --set dist.data_parallel=2 --save-every 2
grep -q "rank 3 (replica 1, stage 1): layers \[" "$W/g22.log" || { cat "$W/g22.log"; fail "start-up lines lack replica and stage"; }
cmp "$(adapter one)" "$(adapter g22)" || fail "2 x 2 grid gives a different adapter than 1 rank"
run g21 2 "${common[@]}" --set dist.data_parallel=2
cmp "$(adapter one)" "$(adapter g21)" || fail "2 x 1 grid gives a different adapter than 1 rank"
# 3 rows in 3 micro-batches: replica 0 runs two, replica 1 one
sft=(--set method=sft --set batch_size=3 --set dist.micro_batches=3)
run sft1 1 "${common[@]}" "${sft[@]}"
run sft21 2 "${common[@]}" "${sft[@]}" --set dist.data_parallel=2
cmp "$(adapter sft1)" "$(adapter sft21)" || fail "sft: 2 x 1 grid (3 micro-batches) differs from 1 rank"
echo "ok: 2 x 2 and 2 x 1 grids give the 1-rank adapter bit for bit (tvaccine, sft)"

# 2. resume across shapes: 2 x 2 -> 1 x 2 -> 1 x 1, and an explicit split
run r12 2 --resume "$W/g22/checkpoints/step-000002.h5" --set dist.data_parallel=1
cmp "$(adapter one)" "$(adapter r12)" || fail "2 x 2 resumed on 1 x 2 differs from the straight run"
run r11 1 --resume "$W/r12/checkpoints/step-000004.h5" --set dist.data_parallel=1
cmp "$(adapter one)" "$(adapter r11)" || fail "1 x 2 resumed on 1 x 1 differs from the straight run"
run st 2 "${common[@]}" --set "dist.stages=[1,2]"
grep -q "rank 1 (replica 0, stage 1): layers \[1, 3)" "$W/st.log" || { cat "$W/st.log"; fail "dist.stages [1,2] not applied"; }
cmp "$(adapter one)" "$(adapter st)" || fail "dist.stages [1, 2] gives a different adapter"
echo "ok: 2 x 2 -> 1 x 2 -> 1 x 1 resumes continue the same run; dist.stages [1, 2] too"

# 3. bad grids: one error line, non-zero exit
expect_error() { # expect_error WANT RANKS ARGS...
  local want=$1 np=$2 rc=0 out; shift 2
  bad=$((${bad:-0} + 1))
  out=$("${MPI[@]}" -n "$np" "$TV" align "${common[@]}" --out "$W/bad$bad" "$@" 2>&1) || rc=$?
  [ "$rc" -ne 0 ] || fail "expected failure for: $*"
  [ "$(echo "$out" | grep -c "tvaccine: error: .*$want")" -eq 1 ] \
    || { echo "$out"; fail "expected one error line naming '$want'"; }
}
expect_error "dist.data_parallel: 2 replicas do not divide the 3 rank" 3 --set dist.data_parallel=2
expect_error "dist.stages: 3 stage sizes for 2 pipeline stages" 2 --set "dist.stages=[1,1,1]"
expect_error "dist.stages: the stage sizes add up to 4 layers" 2 --set "dist.stages=[2,2]"
expect_error "4 pipeline stages (4 rank(s) / dist.data_parallel 1) for the 3 decoder layers" 4
echo "ok: bad grids end in one error line naming the key"
echo "grid_e2e: 3 passed, 0 failed"
