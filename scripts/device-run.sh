#!/usr/bin/env bash
# Runs on the lent GPU machine (see scripts/device-check.sh): verify, the tests and the benches
# from the staged binaries, each bounded in time, results under $OUT. Never changes GPU settings.
set -uo pipefail
stage=.device-stage
OUT="${OUT:-/tmp/tessera-out}"
mkdir -p "$OUT"
{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1
} > "$OUT/device.txt"

timeout 60 "$stage/tessera" info --json > "$OUT/info.json" 2> "$OUT/info.err"
timeout 120 "$stage/tessera" verify --backend cuda --json > "$OUT/verify-cuda.json" 2> "$OUT/verify-cuda.err"
echo "verify-cuda rc=$?" >> "$OUT/summary.txt"
for t in "$stage"/tests/*; do
  name=$(basename "$t")
  timeout 90 "$t" --test-threads 8 > "$OUT/test-$name.txt" 2>&1
  echo "test $name rc=$?" >> "$OUT/summary.txt"
  # The GPU-only tests: #[ignore = "needs a CUDA or HIP GPU"], named gpu_* (other ignored tests,
  # e.g. topology's ten-minute sweep, are not run here).
  if "$t" --list --ignored 2>/dev/null | grep -q '^gpu_\|::gpu_'; then
    timeout 120 "$t" --ignored gpu_ --test-threads 8 > "$OUT/test-$name-gpu.txt" 2>&1
    echo "test $name gpu-only (--ignored gpu_) rc=$?" >> "$OUT/summary.txt"
  fi
done
# SpecDiff's quality/speed curve on the GPU (the driver's glue is host code: see docs/specdiff.md).
timeout 120 "$stage/tessera" specdiff curve --backend cuda --json --png "$OUT/specdiff-curve.png" \
  > "$OUT/specdiff-curve.json" 2> "$OUT/specdiff-curve.err"
echo "specdiff curve rc=$?" >> "$OUT/summary.txt"
timeout 120 "$stage/tessera" bench --backend cuda --json > "$OUT/bench-cuda.json" 2> "$OUT/bench-cuda.err"
echo "bench rc=$?" >> "$OUT/summary.txt"
# Only the GPU groups (the cpu-path groups and the CPU-only ckpt bench are CPU figures, measured
# on the development machine); each bench bounded so the whole run fits in about 8 minutes.
for b in "$stage"/benches/*; do
  name=$(basename "$b")
  [ "$name" = ckpt ] && continue
  timeout 60 "$b" --bench gpu/ > "$OUT/criterion-$name.txt" 2>&1
  echo "criterion $name rc=$?" >> "$OUT/summary.txt"
done
timeout 300 python3 scripts/compare_torch.py --out "$OUT/compare_torch.json" > "$OUT/compare_torch.txt" 2>&1
echo "compare_torch rc=$?" >> "$OUT/summary.txt"
# The Python package against torch on the GPU (SDPA comparison, timings, call cost).
if ls "$stage"/wheels/*.whl >/dev/null 2>&1; then
  timeout 120 python3 -m pip install --no-deps --no-index --target /tmp/tessera-py "$stage"/wheels/*.whl \
    > "$OUT/python-install.txt" 2>&1
  PYTHONPATH=/tmp/tessera-py timeout 240 python3 -m pytest tests/python/test_torch.py -q -s -rs \
    > "$OUT/python-torch.txt" 2>&1
  echo "python test_torch rc=$?" >> "$OUT/summary.txt"
fi
cat "$OUT/summary.txt"
