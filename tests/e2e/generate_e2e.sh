#!/usr/bin/env bash
# End-to-end checks of `tvaccine generate` on the synthetic world's random base model:
#  1. 2 MPI ranks and the no-cache reference path write the answers of 1 rank, byte for byte;
#  2. --adapter DIR gives the answers of the model merged by `tvaccine export --merge`;
#  3. plain prompt files (one instruction per line) and --max-prompts;
#  4. bad input ends in one error line naming the file or option.
# Usage: generate_e2e.sh TVACCINE_BINARY MPIEXEC
set -euo pipefail
TV=$1
MPIEXEC=${2:-mpiexec}
W=$(mktemp -d /tmp/tv_gen_e2e.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
export OMP_NUM_THREADS=1 OMPI_MCA_mpi_yield_when_idle=1

"$TV" synth --out "$W/world" --steps 0 --layers 3 --width 32 --heads 2 --kv-heads 1 --ffn 64 \
  > "$W/synth.log" 2>&1 || { cat "$W/synth.log"; fail "synth"; }
gen=(generate --model "$W/world/base" --prompts "$W/world/harmful_test.json" --max-prompts 12
     --max-new-tokens 10 --batch 5)

# 1. ranks and the reference path
"$TV" "${gen[@]}" --out "$W/one.jsonl" > "$W/one.log" 2>&1 || { cat "$W/one.log"; fail "1 rank"; }
[ "$(wc -l < "$W/one.jsonl")" -eq 12 ] || fail "expected 12 answers"
grep -q '"answer":' "$W/one.jsonl" || fail "no answer field"
"$MPIEXEC" -n 2 --oversubscribe --allow-run-as-root "$TV" "${gen[@]}" --out "$W/two.jsonl" \
  > "$W/two.log" 2>&1 || { cat "$W/two.log"; fail "2 ranks"; }
cmp "$W/one.jsonl" "$W/two.jsonl" || fail "2 ranks differ from 1 rank"
"$TV" "${gen[@]}" --no-cache --out "$W/ref.jsonl" > "$W/ref.log" 2>&1 || { cat "$W/ref.log"; fail "no-cache"; }
cmp "$W/one.jsonl" "$W/ref.jsonl" || fail "KV cache and full forward differ"
echo "ok: 1 rank == 2 ranks == no-cache reference"

# 2. an adapter (3 alignment steps) applied == the merged export
"$TV" align --config "$W/world/align.yaml" --set batch_size=4 --set max_len=64 --method sft \
  --max-steps 3 --set log_every=100 --out "$W/run" > "$W/align.log" 2>&1 || { cat "$W/align.log"; fail "align"; }
"$TV" export --model "$W/world/base" --adapter "$W/run/adapter" --out "$W/merged" --merge \
  > "$W/export.log" 2>&1 || { cat "$W/export.log"; fail "export"; }
"$TV" "${gen[@]}" --adapter "$W/run/adapter" --out "$W/ad.jsonl" > "$W/ad.log" 2>&1 || { cat "$W/ad.log"; fail "adapter"; }
"$TV" "${gen[@]}" --model "$W/merged" --out "$W/mg.jsonl" > "$W/mg.log" 2>&1 || { cat "$W/mg.log"; fail "merged"; }
cmp "$W/ad.jsonl" "$W/mg.jsonl" || fail "--adapter differs from the merged model"
cmp -s "$W/ad.jsonl" "$W/one.jsonl" && fail "the adapter changed no answer (test too weak)"
echo "ok: --adapter == export --merge, and differs from the base"

# 3. plain prompts
printf 'Name a colour.\n\n  \nSay hello.\r\nCount to three.' > "$W/plain.txt"
"$TV" generate --model "$W/world/base" --prompts "$W/plain.txt" --format plain --max-prompts 2 \
  --max-new-tokens 4 --out "$W/plain.jsonl" > "$W/plain.log" 2>&1 || { cat "$W/plain.log"; fail "plain"; }
[ "$(wc -l < "$W/plain.jsonl")" -eq 2 ] || fail "plain: expected 2 answers"
grep -q '"instruction":"Say hello."' "$W/plain.jsonl" || fail "plain: CR or blank lines mishandled"
echo "ok: plain prompts"

# 4. bad input: one error line each, non-zero exit
expect_error() { # pattern, then the command
  local pat=$1; shift
  if "$@" > "$W/err.log" 2>&1; then fail "no error for: $*"; fi
  grep -qF -- "$pat" "$W/err.log" || { cat "$W/err.log"; fail "message '$pat' missing for: $*"; }
}
expect_error "error: generate: --prompts FILE is required" "$TV" generate --model "$W/world/base" --out "$W/x"
expect_error "cannot open prompt file $W/none.txt" "$TV" generate --model "$W/world/base" \
  --prompts "$W/none.txt" --format plain --out "$W/x"
: > "$W/empty.txt"
expect_error "prompt file $W/empty.txt holds no prompt" "$TV" generate --model "$W/world/base" \
  --prompts "$W/empty.txt" --format plain --out "$W/x"
expect_error "--format expects auto, alpaca, beavertails, refusal or plain, got 'csv'" \
  "$TV" generate --model "$W/world/base" --prompts "$W/plain.txt" --format csv --out "$W/x"
expect_error "--max-new-tokens (generate.max_new_tokens): 0 is out of range" "$TV" "${gen[@]}" --max-new-tokens 0 --out "$W/x"
expect_error "$W/nomodel/config.json" "$TV" generate --model "$W/nomodel" --prompts "$W/plain.txt" --out "$W/x"
expect_error "cannot open run log /nonexistent/a.jsonl" "$TV" "${gen[@]}" --out /nonexistent/a.jsonl
echo "ok: bad input"
