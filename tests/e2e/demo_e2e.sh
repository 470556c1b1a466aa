#!/usr/bin/env bash
# `tvaccine demo --quick` end to end: 32 phases with progress lines, a table with every cell
# (Markdown) and results.json with every cell (checked by demo_results_check, not by the
# demo's own code), the plots as PNG and SVG when gnuplot is installed (their data files
# always), a second run that reuses every phase and prints the same table, a third with other
# attack settings that redoes the attacks and what read them, and a folder that is not a
# demo's refused. No value is asserted: the quick settings' numbers mean nothing.
# Usage: demo_e2e.sh TVACCINE_BINARY DEMO_RESULTS_CHECK
set -euo pipefail
TV=$1
CHECK=$2
W=$(mktemp -d /tmp/tv_demo.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
export OMP_NUM_THREADS=1
D="$W/demo"

"$TV" demo --quick --out "$D" --threads 1 > "$W/run1.log" 2>&1 || { cat "$W/run1.log"; fail "demo --quick"; }
[ "$(grep -c '^demo \[[0-9]*/32\] .* [0-9]* s$' "$W/run1.log")" = 32 ] || { cat "$W/run1.log"; fail "not 32 timed phase lines"; }

# The Markdown table: the method rows of both tables hold a number in every cell (1 + 2 x 5
# cells each, + 3 cost cells in the first); the base row numbers in its "no attack" cells.
num='[0-9]+(\.[0-9]+)?'
for m in sft vaccine tvaccine; do
  rows=$(grep "^| $m |" "$D/results.md") || fail "no row $m in results.md"
  [ "$(echo "$rows" | wc -l)" = 2 ] || fail "$m: expected 2 rows"
  first=$(echo "$rows" | head -1) second=$(echo "$rows" | tail -1)
  echo "$first" | grep -Eq "^\| $m \|( $num \|){13}$" || fail "$m: a cell of the main table is missing: $first"
  echo "$second" | grep -Eq "^\| $m \|( $num \|){10}$" || fail "$m: a cell of the second table is missing: $second"
done
grep -Eq "^\| base \(unaligned\) \| $num \|( - \|){4} $num \|( - \|){4}( - \|){3}$" "$D/results.md" \
  || fail "base row of the main table: $(grep '^| base' "$D/results.md" | head -1)"
grep -q "^| sft |" "$W/run1.log" || fail "the table is not printed"

"$CHECK" "$D/results.json" 0,0.05,0.1,0.2 || fail "results.json"

[ -s "$D/hs_vs_p.dat" ] && [ -s "$D/layer_probs.dat" ] && [ -s "$D/plots.gp" ] || fail "plot data or script missing"
if command -v gnuplot > /dev/null; then
  for plot in hs_vs_p layer_probs; do
    [ "$(head -c 8 "$D/$plot.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "$plot.png is not a PNG"
    head -c 400 "$D/$plot.svg" | grep -q '<svg' || fail "$plot.svg is not an SVG"
  done
  echo "ok: plots are PNG and SVG"
else
  grep -q "gnuplot not found" "$W/run1.log" || fail "no gnuplot and no line saying so"
  echo "skipped the plot files: gnuplot is not installed"
fi

# Again: every phase reused, the same table.
"$TV" demo --quick --out "$D" --threads 1 > "$W/run2.log" 2>&1 || { cat "$W/run2.log"; fail "second run"; }
[ "$(grep -c '^demo \[[0-9]*/32\] .* reused' "$W/run2.log")" = 32 ] || { cat "$W/run2.log"; fail "the second run did not reuse every phase"; }
diff <(grep '^|' "$W/run1.log") <(grep '^|' "$W/run2.log") > /dev/null || fail "the reused run's table differs"

# Other attack settings: the 12 attacks run again, and so do their 12 evaluations (their own
# commands are the same, but the attack they read ran again); the world, the alignments and
# their evaluations (8 phases) are reused.
"$TV" demo --quick --out "$D" --threads 1 --attack-lr 7e-4 > "$W/run3.log" 2>&1 || { cat "$W/run3.log"; fail "third run"; }
[ "$(grep -c '^demo \[[0-9]*/32\] .* reused' "$W/run3.log")" = 8 ] || { cat "$W/run3.log"; fail "not 8 phases reused after the attack changed"; }
[ "$(grep -c '^demo \[[0-9]*/32\] evaluate .*attacked.* [0-9]* s$' "$W/run3.log")" = 12 ] \
  || { cat "$W/run3.log"; fail "the evaluations of the attacks that ran again were reused"; }

# A folder that is not a demo's is refused in one line; nothing in it is touched.
mkdir "$W/other" && echo keep > "$W/other/file"
if "$TV" demo --quick --out "$W/other" > "$W/other.log" 2>&1; then fail "a foreign folder was accepted"; fi
grep -q "not a demo's" "$W/other.log" || { cat "$W/other.log"; fail "no clear error for a foreign folder"; }
[ "$(cat "$W/other/file")" = keep ] || fail "the foreign folder was changed"
echo "ok: demo --quick: 32 phases, every cell of the table and results.json, reuse, refusal of a foreign folder"
