#!/usr/bin/env bash
# End-to-end checks of `tvaccine eval` on hand-made answer files (tests/data/eval), whose
# verdicts were worked out by hand from the rules of SPEC sections 8 and 10:
#  harmful_answers.jsonl, synthetic world judge: row 0 flagged (crowbar, own category), row 1
#   refused, row 2 flagged (ambush, own category), row 3 clean, row 4 not flagged (knuckles is
#   violence vocabulary, the row is theft) -> HS 2/5 = 40.00, refusal rate 1/5 = 20.00;
#  sst_answers.jsonl, task sst (sst2 scorer): rows 0 and 1 correct, 2 wrong, 3 refused and
#   wrong -> FA 2/4 = 50.00, refusal rate 1/4 = 25.00;
#  the QA-moderation judge folder runs and writes one verdict per answer; bad input fails with
#  one line. Usage: eval_e2e.sh TVACCINE_BINARY TESTS_DATA_DIR
set -euo pipefail
TV=$1
D=$2
W=$(mktemp -d /tmp/tv_eval_e2e.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
export OMP_NUM_THREADS=1

"$TV" eval --answers "$D/eval/harmful_answers.jsonl" --judge synth --world "$D/eval/world.json" \
  --out "$W/v.jsonl" --summary "$W/s.json" > "$W/hs.log" 2>&1 || { cat "$W/hs.log"; fail "eval hs"; }
grep -q '"harmful_score":40,"flagged":2,"refusal_rate":20,"refusals":1' "$W/s.json" \
  || { cat "$W/s.json"; fail "harmful score summary"; }
grep -q "harmful score 40.00 (2 of 5 flagged" "$W/hs.log" || fail "stdout summary"
[ "$(grep -c '"flagged":1' "$W/v.jsonl")" -eq 2 ] || fail "per-sample verdicts"
echo "ok: synthetic judge HS 40, refusal rate 20"

"$TV" eval --answers "$D/eval/sst_answers.jsonl" --task sst --world "$D/eval/world.json" \
  --summary "$W/f.json" > "$W/fa.log" 2>&1 || { cat "$W/fa.log"; fail "eval fa"; }
grep -q '"fine_tune_accuracy":50,"correct":2,"refusal_rate":25,"refusals":1' "$W/f.json" \
  || { cat "$W/f.json"; fail "fine-tune accuracy summary"; }
"$TV" eval --answers "$D/eval/sst_answers.jsonl" --task sst2 --summary "$W/f2.json" > /dev/null 2>&1 \
  || fail "eval fa without a world"
grep -q '"fine_tune_accuracy":50,"correct":2,"refusal_rate":25' "$W/f2.json" || fail "phrase refusals"
echo "ok: FA 50, refusal rate 25 (world markers and phrase list)"

"$TV" eval --answers "$D/eval/harmful_answers.jsonl" --judge "$D/hf/judge_llama" --judge-batch 2 \
  --out "$W/m.jsonl" > "$W/m.log" 2>&1 || { cat "$W/m.log"; fail "model judge"; }
[ "$(wc -l < "$W/m.jsonl")" -eq 5 ] && grep -q '"top_category":' "$W/m.jsonl" || fail "model verdicts"
echo "ok: QA-moderation judge"

expect_error() { # message, then the command
  local pat=$1; shift
  if "$@" > "$W/err.log" 2>&1; then fail "no error for: $*"; fi
  grep -qF -- "$pat" "$W/err.log" || { cat "$W/err.log"; fail "message '$pat' missing for: $*"; }
  [ "$(wc -l < "$W/err.log")" -eq 1 ] || { cat "$W/err.log"; fail "more than one line for: $*"; }
}
printf '{"instruction":"a","answer":"b"}\n{"instruction":"a"}\n' > "$W/bad.jsonl"
expect_error "$W/bad.jsonl: line 2: field 'answer' is missing" \
  "$TV" eval --answers "$W/bad.jsonl" --task sst2
expect_error "give either --judge (harmful score) or --task" \
  "$TV" eval --answers "$W/bad.jsonl" --task sst2 --judge synth
expect_error "--judge synth needs --world" "$TV" eval --answers "$W/bad.jsonl" --judge synth
expect_error "unknown --task 'sst' (sst2, agnews, gsm8k; synthetic task names need --world)" \
  "$TV" eval --answers "$D/eval/sst_answers.jsonl" --task sst
expect_error "cannot read answer file $W/none.jsonl" "$TV" eval --answers "$W/none.jsonl" --task sst2
: > "$W/empty.jsonl"
expect_error "answer file $W/empty.jsonl holds no answer" "$TV" eval --answers "$W/empty.jsonl" --task sst2
expect_error "missing tensor score.weight" \
  "$TV" eval --answers "$D/eval/sst_answers.jsonl" --judge "$D/hf/gen_llama"
echo "ok: bad input"
