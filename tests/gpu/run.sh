#!/usr/bin/env bash
# The GPU check, as one prepared run on a lent GPU machine (it has no MPI or HDF5 of its
# own): builds core and tests/gpu only (-DTV_GPU_ONLY=ON) for this GPU's architecture, runs
# the GPU tests (every op CUDA vs CPU; a tiny model's 10 T-Vaccine steps CUDA vs CPU; NCCL
# send / receive between two forked ranks, which needs two GPUs and skips on one), then
# the 7B-shaped benchmark on our CUDA backend and the PyTorch + transformers + PEFT reference
# side by side. Everything goes to $OUT (default /tmp/tv_gpu_out); the last lines of stdout
# summarise. Each part has its own time limit so one hang cannot eat the device budget.
# Usage: bash tests/gpu/run.sh [--quick]   (--quick: 4 layers and S 2 instead of 32 and 8)
# PYTHON names the interpreter with torch, transformers and peft (default python3).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/tv_gpu_out}
mkdir -p "$OUT"
LAYERS=32
S=8
[ "${1:-}" = "--quick" ] && LAYERS=4 && S=2
JOBS=$(nproc)

{ nvidia-smi; nvcc --version; "${PYTHON:-python3}" -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'; } > "$OUT/machine.txt" 2>&1
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')
echo "run.sh: GPU compute capability ${ARCH:-unknown}, layers $LAYERS, S $S" | tee "$OUT/summary.txt"

# core links OpenBLAS and OpenMP; say so at once when the machine lacks them.
if ! ls /usr/lib/x86_64-linux-gnu/libopenblas* /usr/lib/x86_64-linux-gnu/openblas*/libopenblas* >/dev/null 2>&1; then
  echo "run.sh: no OpenBLAS on this machine: carry it (libopenblas.so + cblas.h) or install libopenblas-dev" | tee -a "$OUT/summary.txt"
fi

t0=$(date +%s)
if ! timeout 420 bash -c "cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DTV_GPU_ONLY=ON \
      -DTV_NATIVE=OFF -DTV_CUDA_ARCHS=${ARCH:-90} && cmake --build build-gpu -j$JOBS" > "$OUT/build.log" 2>&1; then
  echo "run.sh: build FAILED (tail of $OUT/build.log):" | tee -a "$OUT/summary.txt"
  tail -40 "$OUT/build.log" | tee -a "$OUT/summary.txt"
  exit 1
fi
echo "run.sh: build took $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"

(cd build-gpu && timeout 300 ctest --output-on-failure -L gpu) > "$OUT/ctest.log" 2>&1
echo "run.sh: ctest -L gpu exit $?: $(grep -E 'tests passed|tests failed' "$OUT/ctest.log"), $(grep -c '(Skipped)' "$OUT/ctest.log") skipped" | tee -a "$OUT/summary.txt"
TV_VERBOSE=1 timeout 120 build-gpu/tests/gpu/test_cuda_ops > "$OUT/ops_errors.txt" 2>&1
timeout 120 build-gpu/tests/gpu/test_cuda_model > "$OUT/model_losses.txt" 2>&1
# NCCL between pipeline stages: built when the machine's CUDA has nccl.h and libnccl.
if [ -x build-gpu/tests/gpu/test_nccl_p2p ]; then
  timeout 180 build-gpu/tests/gpu/test_nccl_p2p > "$OUT/nccl_p2p.txt" 2>&1
  echo "run.sh: test_nccl_p2p exit $? (77 = skipped: fewer than 2 GPUs): $(tail -1 "$OUT/nccl_p2p.txt")" | tee -a "$OUT/summary.txt"
else
  echo "run.sh: test_nccl_p2p not built (no NCCL found: $(grep -m1 -i nccl "$OUT/build.log" || echo 'TV_NCCL off'))" | tee -a "$OUT/summary.txt"
fi

timeout 600 build-gpu/tests/gpu/bench_gpu --layers "$LAYERS" --S "$S" --steps 3 --warmup 1 \
  > "$OUT/bench_tvaccine.jsonl" 2> "$OUT/bench_tvaccine.err"
echo "run.sh: bench_gpu exit $?" | tee -a "$OUT/summary.txt"
timeout 600 "${PYTHON:-python3}" bench/ref_gpu_peft.py --layers "$LAYERS" --S "$S" --steps 3 --warmup 1 \
  > "$OUT/bench_torch.jsonl" 2> "$OUT/bench_torch.err"
echo "run.sh: ref_gpu_peft.py exit $?" | tee -a "$OUT/summary.txt"

python3 - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
def rows(name):
    p = out / name
    return {r["method"]: r for r in (json.loads(l) for l in p.read_text().splitlines() if l.startswith("{"))} if p.exists() else {}
ours, ref = rows("bench_tvaccine.jsonl"), rows("bench_torch.jsonl")
print(f"{'method':9} {'ours s':>8} {'ours tok/s':>11} {'ours GiB':>9} {'torch s':>8} {'torch tok/s':>12} {'torch GiB':>10} {'speed x':>8} {'mem x':>6} {'MFU':>6}")
for m in ("sft", "vaccine", "tvaccine"):
    a, b = ours.get(m), ref.get(m)
    if not a and not b:
        continue
    f = lambda r, k: r[k] if r else float("nan")
    speed = f(a, "tokens_per_s") / f(b, "tokens_per_s") if a and b else float("nan")
    mem = f(a, "device_used_gib") / f(b, "peak_gib") if a and b else float("nan")
    print(f"{m:9} {f(a,'step_s'):8.3f} {f(a,'tokens_per_s'):11.1f} {f(a,'device_used_gib'):9.2f} "
          f"{f(b,'step_s'):8.3f} {f(b,'tokens_per_s'):12.1f} {f(b,'peak_gib'):10.2f} {speed:8.2f} {mem:6.2f} "
          f"{f(a,'mfu_sft_flops'):6.3f}")
PY
