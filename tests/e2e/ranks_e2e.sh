#!/usr/bin/env bash
# Ranks that disagree or die, under mpirun with 2 ranks:
#  0. a config mistake every rank finds is printed once;
#  1. a rank whose --set overrides differ: one error line naming that rank and the config;
#  2. a rank reading different bytes under the same data path: one line naming the rank and
#     the file (the ranks run in different folders, so "data.json" is two files);
#  3. SIGKILL of rank 1 mid-run ends the whole job within 10 s with a non-zero status;
#  4. a checkpoint of 2 ranks resumed on 1, and of 1 resumed on 2, continues the same run.
# Usage: ranks_e2e.sh TVACCINE_BINARY MPIEXEC
set -euo pipefail
TV=$(readlink -f "$1")
MPIEXEC=${2:-mpiexec}
W=$(mktemp -d /tmp/tv_ranks.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
export OMP_NUM_THREADS=1 OMPI_MCA_mpi_yield_when_idle=1
MPI=("$MPIEXEC" --allow-run-as-root --oversubscribe)

"$TV" synth --out "$W/world" --steps 0 --layers 2 --width 32 --heads 2 --kv-heads 1 --ffn 64 \
  > "$W/synth.log" 2>&1 || { cat "$W/synth.log"; fail "synth"; }
common=(--config "$W/world/align.yaml" --set batch_size=4 --set max_len=64 --set log_every=100
        --set method=sft)

# 0. a mistake every rank finds is printed once (rank 0's line; MPI_Abort ends the others)
rc=0
"${MPI[@]}" -n 2 "$TV" align "${common[@]}" --set lora.r=0 --out "$W/e0" > "$W/e0.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "a bad lora.r ran"
[ "$(grep -c 'tvaccine: error: .*lora.r' "$W/e0.log")" -eq 1 ] \
  || { cat "$W/e0.log"; fail "the lora.r mistake is not printed exactly once on 2 ranks"; }
echo "ok: a mistake both ranks find is printed once"

# 1. different overrides on rank 1
rc=0
"${MPI[@]}" -n 1 "$TV" align "${common[@]}" --max-steps 2 --out "$W/c1" : \
  -n 1 "$TV" align "${common[@]}" --max-steps 2 --out "$W/c1" --set lora.dropout=0.2 \
  > "$W/c1.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || { cat "$W/c1.log"; fail "ranks with different configs ran"; }
[ "$(grep -c 'rank 1 resolved a different config from rank 0' "$W/c1.log")" -eq 1 ] \
  || { cat "$W/c1.log"; fail "no single line naming rank 1's config"; }
echo "ok: a rank with other overrides: one line naming rank 1"

# 2. the same relative data path holding different bytes on rank 1
data=$(sed -n 's/^data: *//p' "$W/world/align.yaml" | tr -d '"')
case "$data" in /*) ;; *) data="$W/world/$data" ;; esac
[ -f "$data" ] || fail "cannot find the world's alignment data ($data)"
mkdir -p "$W/a" "$W/b"
cp "$data" "$W/a/data.json"
cp "$data" "$W/b/data.json"
printf ' ' >> "$W/b/data.json" # same rows, one more byte
rc=0
"${MPI[@]}" -n 1 --wdir "$W/a" "$TV" align "${common[@]}" --set data=data.json --max-steps 2 \
  --out "$W/d1" : -n 1 --wdir "$W/b" "$TV" align "${common[@]}" --set data=data.json \
  --max-steps 2 --out "$W/d1" > "$W/d1.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || { cat "$W/d1.log"; fail "ranks with different data ran"; }
[ "$(grep -c 'data.json: rank 1 reads different bytes from rank 0' "$W/d1.log")" -eq 1 ] \
  || { cat "$W/d1.log"; fail "no single line naming rank 1 and the data file"; }
echo "ok: a rank reading other bytes: one line naming rank 1 and data.json"

# 4. (before the kill) checkpoints are one file whatever the ranks: a 2-rank run's checkpoint
# resumed on 1 rank, and a 1-rank checkpoint resumed on 2, end at the straight run's adapter.
tv=(--config "$W/world/align.yaml" --set batch_size=4 --set max_len=64 --set log_every=100
    --set tvaccine.S=1 --set tvaccine.J=2 --set tvaccine.K=3 --set tvaccine.probe_samples=8
    --set dist.micro_batches=2)
"${MPI[@]}" -n 2 "$TV" align "${tv[@]}" --max-steps 6 --out "$W/straight" > "$W/straight.log" 2>&1 \
  || { cat "$W/straight.log"; fail "straight 2-rank run"; }
for from in 2 1; do
  to=$((3 - from))
  "${MPI[@]}" -n "$from" "$TV" align "${tv[@]}" --max-steps 6 --save-every 3 --out "$W/p$from" \
    > "$W/p$from.log" 2>&1 || { cat "$W/p$from.log"; fail "run on $from rank(s)"; }
  "${MPI[@]}" -n "$to" "$TV" align --resume "$W/p$from/checkpoints/step-000003.h5" --out "$W/q$from" \
    > "$W/q$from.log" 2>&1 || { cat "$W/q$from.log"; fail "resume on $to rank(s)"; }
  cmp "$W/straight/adapter/adapter_model.safetensors" "$W/q$from/adapter/adapter_model.safetensors" \
    || fail "3 steps on $from rank(s) + resume on $to differ from 6 straight steps"
  echo "ok: 3 steps on $from rank(s), resumed on $to: the straight run's adapter"
done

# 3. SIGKILL of rank 1 while the ranks train
"${MPI[@]}" -n 2 "$TV" align "${common[@]}" --max-steps 100000 --out "$W/k1" \
  > "$W/k1.log" 2>&1 &
job=$!
for _ in $(seq 1 600); do
  [ -f "$W/k1/log.jsonl" ] && [ "$(wc -l < "$W/k1/log.jsonl")" -ge 2 ] && break
  sleep 0.05
done
[ -f "$W/k1/log.jsonl" ] || { kill "$job"; cat "$W/k1.log"; fail "the 2-rank run never logged a step"; }
victim=$(pgrep -f "align .*--out $W/k1" | sort -n | tail -1)
t0=$(date +%s.%N)
kill -KILL "$victim"
rc=0
timeout 30 tail --pid="$job" -f /dev/null || true
wait "$job" || rc=$?
t1=$(date +%s.%N)
elapsed=$(echo "$t1 - $t0" | bc)
[ "$rc" -ne 0 ] || fail "the job exited 0 after a rank was killed"
echo "$elapsed < 10" | bc | grep -q 1 || fail "the job took ${elapsed}s to end after SIGKILL of a rank"
echo "ok: SIGKILL of one rank ended the job in ${elapsed}s with status $rc"
grep -m1 -iE "signal|killed" "$W/k1.log" || echo "(mpirun named no rank)"
