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
echo "speed-up of 2 ranks over 1 (step time ratio); mem = the largest step memory of any rank:"
awk '/^RESULT/ {
  split($0, a, "method=\""); split(a[2], b, "\""); key = b[1];
  split($0, c, "step_s="); split(c[2], d, " "); step = d[1];
  mem = 0; rest = $0;
  while (match(rest, /mem [0-9.]+ MiB/)) {
    v = substr(rest, RSTART + 4, RLENGTH - 8) + 0; if (v > mem) mem = v;
    rest = substr(rest, RSTART + RLENGTH) }
  if ($0 ~ /ranks=1 /) { one[key] = step; mem1[key] = mem }
  else { two[key] = step; mem2[key] = mem; order[++n] = key } }
  END { for (i = 1; i <= n; i++) { k = order[i];
    printf("  %-16s 1 rank %.3f s (mem %.1f MiB)  2 ranks %.3f s (mem %.1f MiB)  speed-up %.2fx\n",
           k, one[k], mem1[k], two[k], mem2[k], one[k] / two[k]) } }' \
  "$out/np1.txt" "$out/np2.txt"
