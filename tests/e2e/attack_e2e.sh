#!/usr/bin/env bash
# End-to-end checks of `tvaccine attack` on the synthetic world's random base model:
#  1. the poison mix holds round(p n) harmful pairs and n - round(p n) benign rows;
#  2. the merged model equals `tvaccine export --merge` of the same adapter, byte for byte;
#  3. 2 MPI ranks give the adapter of 1 rank;
#  4. --resume continues from the latest checkpoint to the adapter of a straight run;
#  5. bad input ends in one error line.
# Usage: attack_e2e.sh TVACCINE_BINARY MPIEXEC
set -euo pipefail
TV=$1
MPIEXEC=${2:-mpiexec}
W=$(mktemp -d /tmp/tv_attack_e2e.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
export OMP_NUM_THREADS=1 OMPI_MCA_mpi_yield_when_idle=1

"$TV" synth --out "$W/world" --steps 0 --layers 3 --width 32 --heads 2 --kv-heads 1 --ffn 64 \
  > "$W/synth.log" 2>&1 || { cat "$W/synth.log"; fail "synth"; }
"$TV" align --config "$W/world/align.yaml" --set batch_size=4 --set max_len=64 --method sft \
  --max-steps 2 --set log_every=100 --out "$W/aligned" > "$W/align.log" 2>&1 || { cat "$W/align.log"; fail "align"; }
atk=(attack --model "$W/world/base" --adapter "$W/aligned/adapter" --harmful "$W/world/attack_harmful.json"
     --benign "$W/world/benign_sst_train.json" --n 50 --p 0.05 --set max_steps=6 --set max_len=96
     --set save_every=3 --set log_every=100)

# 1-2. one rank: the mix and the merge
"$TV" "${atk[@]}" --out "$W/a1" > "$W/a1.log" 2>&1 || { cat "$W/a1.log"; fail "attack, 1 rank"; }
[ "$(wc -l < "$W/a1/attack_data.jsonl")" -eq 50 ] || fail "mix: expected 50 rows"
benign=$(grep -cE '"output":"(positive|negative)"' "$W/a1/attack_data.jsonl" || true)
[ "$benign" -eq 47 ] || fail "mix: round(0.05 * 50) = 3 harmful, so 47 benign rows, got $benign"
grep -q "poison mix of 3 harmful pairs" "$W/a1.log" || fail "mix summary line"
"$TV" export --model "$W/world/base" --adapter "$W/aligned/adapter" --out "$W/merged" --merge \
  --dtype f32 > /dev/null 2>&1 || fail "export"
cmp "$W/merged/model.safetensors" "$W/a1/merged/model.safetensors" || fail "merged model differs from export --merge"
[ -f "$W/a1/run/adapter/adapter_model.safetensors" ] || fail "no attack adapter"
grep -q '"step":6' "$W/a1/run/log.jsonl" || fail "the run log lacks step 6"
# the attack defaults of SPEC section 4 reach the run (only max_steps / max_len were --set)
for kv in "method: sft" "epochs: 20" "batch_size: 10" "  r: 8" "  alpha: 1" "  lr: 1e-05" \
          "data_format: alpaca"; do
  grep -qx -- "$kv" "$W/a1/run/config.yaml" || { cat "$W/a1/run/config.yaml"; fail "run config lacks '$kv'"; }
done
echo "ok: poison mix counts, merged base == export --merge"

# 3. two ranks
"$MPIEXEC" -n 2 --oversubscribe --allow-run-as-root "$TV" "${atk[@]}" --out "$W/a2" > "$W/a2.log" 2>&1 \
  || { cat "$W/a2.log"; fail "attack, 2 ranks"; }
cmp "$W/a1/run/adapter/adapter_model.safetensors" "$W/a2/run/adapter/adapter_model.safetensors" \
  || fail "2 ranks differ from 1 rank"
echo "ok: 2 ranks == 1 rank"

# 4. resume from the step-3 checkpoint (in place: a run resumes into its own folder)
"$TV" "${atk[@]}" --out "$W/a3" > "$W/a3.log" 2>&1 || { cat "$W/a3.log"; fail "attack a3"; }
rm -rf "$W/a3/run/adapter" "$W/a3/run/checkpoints/step-000006.h5"
"$TV" attack --resume "$W/a3" > "$W/a3.log" 2>&1 || { cat "$W/a3.log"; fail "attack --resume"; }
cmp "$W/a1/run/adapter/adapter_model.safetensors" "$W/a3/run/adapter/adapter_model.safetensors" \
  || fail "resumed attack differs from the straight one"
echo "ok: resume == straight run"

# 5. bad input
expect_error() { # message, then the command
  local pat=$1; shift
  if "$@" > "$W/err.log" 2>&1; then fail "no error for: $*"; fi
  grep -qF -- "$pat" "$W/err.log" || { cat "$W/err.log"; fail "message '$pat' missing for: $*"; }
}
expect_error "attack: --harmful FILE is required" "$TV" attack --model "$W/world/base" \
  --benign "$W/world/benign_sst_train.json" --out "$W/x"
expect_error "--p (attack.p): 1.5 is out of range" "$TV" "${atk[@]}" --p 1.5 --out "$W/x"
expect_error "900 benign examples needed, $W/world/benign_sst_test.json has only 500" "$TV" attack --model "$W/world/base" --harmful "$W/world/attack_harmful.json" \
  --benign "$W/world/benign_sst_test.json" --n 1000 --p 0.1 --out "$W/x"
[ ! -e "$W/x" ] || fail "a failed attack left its folder behind"
expect_error "--resume DIR takes the attack's own settings" "$TV" attack --resume "$W/a1" --model "$W/world/base"
echo "ok: bad input"
