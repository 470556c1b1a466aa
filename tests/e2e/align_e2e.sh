#!/usr/bin/env bash
# End-to-end checks of `tvaccine synth` + `tvaccine align` on a tiny random base model:
#  1. train 2n steps == train n, checkpoint, resume, train n (bit-identical adapters);
#  2. SIGTERM mid-run saves a checkpoint and exits 0; resuming finishes bit-identically;
#  3. 2 MPI ranks give the adapter of 1 rank, bit for bit;
#  4. --init-adapter starts from the given PEFT adapter;
#  5. config mistakes end in one error line naming the key.
# Usage: align_e2e.sh TVACCINE_BINARY MPIEXEC
set -euo pipefail
TV=$1
MPIEXEC=${2:-mpiexec}
W=$(mktemp -d /tmp/tv_e2e.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
export OMP_NUM_THREADS=1 OMPI_MCA_mpi_yield_when_idle=1

"$TV" synth --out "$W/world" --steps 0 --layers 3 --width 32 --heads 2 --kv-heads 1 --ffn 64 \
  > "$W/synth.log" 2>&1 || { cat "$W/synth.log"; fail "synth"; }
common=(--config "$W/world/align.yaml" --set batch_size=4 --set max_len=64 --set tvaccine.S=1
        --set tvaccine.J=2 --set tvaccine.K=3 --set tvaccine.probe_samples=8 --set log_every=100)

# 1. resume from a checkpoint == straight run
"$TV" align "${common[@]}" --max-steps 6 --out "$W/r1" > "$W/r1.log" 2>&1 || { cat "$W/r1.log"; fail "run r1"; }
"$TV" align "${common[@]}" --max-steps 6 --save-every 3 --out "$W/r2" > "$W/r2.log" 2>&1 || { cat "$W/r2.log"; fail "run r2"; }
[ -f "$W/r2/checkpoints/step-000003.h5" ] || fail "no checkpoint at step 3"
"$TV" align --resume "$W/r2/checkpoints/step-000003.h5" --out "$W/r3" > "$W/r3.log" 2>&1 || { cat "$W/r3.log"; fail "resume r3"; }
cmp "$W/r1/adapter/adapter_model.safetensors" "$W/r3/adapter/adapter_model.safetensors" \
  || fail "6 straight steps and 3 + resume + 3 give different adapters"
echo "ok: train 6 == train 3, checkpoint, resume, train 3 (adapters identical)"

# 2. SIGTERM: checkpoint at the next step boundary, exit 0, resume to the same end
"$TV" align "${common[@]}" --max-steps 300 --out "$W/s1" > "$W/s1.log" 2>&1 || fail "run s1"
"$TV" align "${common[@]}" --max-steps 300 --out "$W/s2" > "$W/s2.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  [ -f "$W/s2/log.jsonl" ] && [ "$(wc -l < "$W/s2/log.jsonl")" -ge 3 ] && break
  sleep 0.05
done
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
[ "$rc" -eq 0 ] || { cat "$W/s2.log"; fail "SIGTERM: exit status $rc, expected 0"; }
grep -q "stop requested: checkpoint saved" "$W/s2.log" || { cat "$W/s2.log"; fail "SIGTERM: no checkpoint message"; }
"$TV" align --resume "$W/s2" > "$W/s3.log" 2>&1 || { cat "$W/s3.log"; fail "resume after SIGTERM"; }
cmp "$W/s1/adapter/adapter_model.safetensors" "$W/s2/adapter/adapter_model.safetensors" \
  || fail "preempted + resumed run differs from the straight run"
echo "ok: SIGTERM saved $(grep -o 'saved at step [0-9]*' "$W/s2.log"), resumed to an identical adapter"

# 3. two ranks == one rank
"$MPIEXEC" -n 2 --oversubscribe --allow-run-as-root "$TV" align "${common[@]}" --max-steps 6 \
  --out "$W/m2" > "$W/m2.log" 2>&1 || { cat "$W/m2.log"; fail "mpirun -n 2"; }
cmp "$W/r1/adapter/adapter_model.safetensors" "$W/m2/adapter/adapter_model.safetensors" \
  || fail "2 ranks give a different adapter than 1 rank"
echo "ok: 2 MPI ranks == 1 rank (adapters identical)"

# 4. --init-adapter starts from the given adapter: with lr 0 the run ends where it started
"$TV" align "${common[@]}" --max-steps 2 --init-adapter "$W/r1/adapter" --set optim.lr=0 \
  --out "$W/i1" > "$W/i1.log" 2>&1 || { cat "$W/i1.log"; fail "run with --init-adapter"; }
cmp "$W/r1/adapter/adapter_model.safetensors" "$W/i1/adapter/adapter_model.safetensors" \
  || fail "--init-adapter with lr 0 did not keep the adapter it started from"
echo "ok: --init-adapter loads the adapter the run starts from"

# 5. mistakes: one line naming the key, non-zero exit
expect_error() {
  local want=$1; shift
  local out rc=0
  out=$("$TV" align "$@" 2>&1) || rc=$?
  [ "$rc" -ne 0 ] || fail "expected failure for: $*"
  echo "$out" | grep -q -- "$want" || { echo "$out"; fail "message should name '$want'"; }
  [ "$(echo "$out" | grep -c 'error')" -eq 1 ] || { echo "$out"; fail "expected one error line"; }
}
expect_error "tvaccine.rhoo" --config "$W/world/align.yaml" --set tvaccine.rhoo=1
expect_error "lora.r" --config "$W/world/align.yaml" --set lora.r=eight
expect_error "optim.lr" --config "$W/world/align.yaml" --set optim.lr=-1
expect_error "tvaccine.S" --config "$W/world/align.yaml" --set tvaccine.S=9 --out "$W/bad"
expect_error "/nonexistent" --config /nonexistent/run.yaml
echo "ok: config mistakes are one error line naming the key"
echo "align_e2e: 5 passed, 0 failed"
