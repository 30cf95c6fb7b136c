#!/usr/bin/env bash
# Prepares one GPU check for the `device` tool (a lent machine with an NVIDIA GPU and no Rust
# toolchain). Builds here in release with the pinned nvcc, stages the `tessera` binary, the test
# binaries and the bench binary under .device-stage/ (stripped, well under the 64 MiB carry
# limit), and prints the one `run` command to use. On the device, scripts/device-run.sh runs
# verify, the tests (and then the GPU-only ones, `#[ignore = "needs a CUDA or HIP GPU"]`, named
# gpu_*, with `--ignored gpu_`) and the benches, writing JSON and logs under $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${NVCC:-}" ]; then
  eval "$(bash scripts/install-toolchains.sh 2>/dev/null)"
fi

stage=.device-stage
rm -rf "$stage"
mkdir -p "$stage/tests" "$stage/benches"

cargo build --release --bin tessera
cp target/release/tessera "$stage/"

# Test and bench executables: cargo prints their paths as JSON messages.
msgs=$(cargo test --release --no-run --message-format=json 2>/dev/null)
echo "$msgs" | python3 -c '
import json, sys, shutil
for line in sys.stdin:
    try: m = json.loads(line)
    except Exception: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        t = m["target"]
        if t["kind"] == ["test"] or t["kind"] == ["lib"]:
            shutil.copy(m["executable"], sys.argv[1] + "/tests/" + t["name"])
' "$stage"
msgs=$(cargo bench --no-run --message-format=json 2>/dev/null)
echo "$msgs" | python3 -c '
import json, sys, shutil
for line in sys.stdin:
    try: m = json.loads(line)
    except Exception: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["bench"]:
        shutil.copy(m["executable"], sys.argv[1] + "/benches/" + m["target"]["name"])
' "$stage"
strip "$stage"/tessera "$stage"/tests/* "$stage"/benches/* 2>/dev/null || true

# The Python wheel (abi3, stripped) for tests/python/test_torch.py on the device, when it fits
# under the carry limit beside the binaries.
if bash scripts/python-test.sh -q -k every_op >/dev/null 2>&1; then
  mkdir -p "$stage/wheels"
  target/py-venv/bin/maturin build --release --strip -m python/Cargo.toml -o "$stage/wheels" \
    >/dev/null 2>&1 || rm -rf "$stage/wheels"
  if [ "$(du -sm "$stage" | cut -f1)" -ge 62 ]; then
    echo "device-check: no room for the Python wheel under the carry limit; skipping it" >&2
    rm -rf "$stage/wheels"
  fi
fi

size=$(du -sm "$stage" | cut -f1)
echo "staged $(find "$stage" -type f | wc -l) files, ${size} MiB in $stage" >&2
if [ "$size" -ge 64 ]; then
  echo "device-check: staged files exceed the 64 MiB carry limit" >&2
  exit 1
fi
cat <<EOF2
Run on the device machine (one call, about 8 minutes):
  run(command="bash scripts/device-run.sh", carry=[".device-stage"], timeout_s=540)
EOF2
