#!/usr/bin/env bash
# Pipeline speed-up: `tvaccine bench --ranks` on 1 and on 2 ranks (1 OpenMP thread per rank,
# config M, 8 micro-batches by default), then each method's 2-rank speed-up over 1 rank.
# Usage: bench/ranks.sh TVACCINE [MPIRUN] [extra bench options, e.g. --schedule gpipe or
#        --activations keep]
# On a shared machine run it under `flock /tmp/tv_bench.lock` and note `uptime`.
set -euo pipefail
tv=${1:?usage: bench/ranks.sh TVACCINE [MPIRUN] [bench options]}
mpirun=${2:-mpirun}
shift $(( $# >= 2 ? 2 : 1 ))
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for np in 1 2; do
  OMP_NUM_THREADS=1 "$mpirun" --allow-run-as-root --oversubscribe -n "$np" \
    "$tv" bench --ranks --config M "$@" | tee "$out/np$np.txt"
done
echo "speed-up of 2 ranks over 1 (step time ratio); mem = the largest step memory of any rank;"
echo "cpu = the largest CPU seconds of any rank's compute a step (its work, whatever the load):"
awk '
  function largest(line, label,    best, v, rest, n) {
    best = 0; rest = line; n = length(label) + 1
    while (match(rest, label " [0-9.]+")) {
      v = substr(rest, RSTART + n, RLENGTH - n) + 0; if (v > best) best = v
      rest = substr(rest, RSTART + RLENGTH) }
    return best }
  /^RESULT/ {
  split($0, a, "method=\""); split(a[2], b, "\""); key = b[1];
  split($0, c, "step_s="); split(c[2], d, " "); step = d[1];
  mem = largest($0, "mem"); cpu = largest($0, "cpu");
  if ($0 ~ /ranks=1 /) { one[key] = step; mem1[key] = mem; cpu1[key] = cpu }
  else { two[key] = step; mem2[key] = mem; cpu2[key] = cpu; order[++n] = key } }
  END { for (i = 1; i <= n; i++) { k = order[i];
    printf("  %-16s 1 rank %.3f s (mem %.1f MiB, cpu %.3f s)  2 ranks %.3f s (mem %.1f MiB, cpu %.3f s)  speed-up %.2fx\n",
           k, one[k], mem1[k], cpu1[k], two[k], mem2[k], cpu2[k], one[k] / two[k]) } }' \
  "$out/np1.txt" "$out/np2.txt"
