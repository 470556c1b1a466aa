#!/usr/bin/env bash
# Pipeline speed-up: `tvaccine bench --ranks` on 1 and on 2 ranks (1 OpenMP thread per rank,
# config M, 8 micro-batches by default), then each method's 2-rank speed-up over 1 rank.
# Usage: bench/ranks.sh TVACCINE [MPIRUN] [extra bench options, e.g. --schedule gpipe]
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
echo "speed-up of 2 ranks over 1 (step time ratio):"
awk -F'step_s=' '/^RESULT/ {
  split($1, a, "method=\""); split(a[2], b, "\""); split($2, c, " ");
  key = b[1]; if ($1 ~ /ranks=1 /) one[key] = c[1]; else { two[key] = c[1]; order[++n] = key } }
  END { for (i = 1; i <= n; i++) { k = order[i];
    printf("  %-16s 1 rank %.3f s  2 ranks %.3f s  speed-up %.2fx\n", k, one[k], two[k], one[k] / two[k]) } }' \
  "$out/np1.txt" "$out/np2.txt"
