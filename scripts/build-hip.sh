#!/usr/bin/env bash
# Builds tessera with the `hip` feature (AMDGPU code objects for gfx942 and gfx90a from every
# module's HIP entry file: hip/<module>.hip if it exists, else a generated one that includes
# cuda/<module>.cu; see build/hip.rs) and validates what was produced: every module has a code
# object per architecture, each is an AMDGPU ELF whose HSA metadata names the right target and
# lists its kernels. For CI; extra cargo arguments are passed through (e.g. --release).
#
# Usage: scripts/build-hip.sh [cargo build args...]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ARCHS=(gfx942 gfx90a)

if ! command -v clang-19 >/dev/null && [ -z "${HIPCC:-}" ] && [ -z "${ROCM_PATH:-}" ]; then
  # shellcheck disable=SC1090
  source <(bash "$ROOT/scripts/install-toolchains.sh" 2>/dev/null)
fi
READELF="$(command -v llvm-readelf-19 || command -v llvm-readelf || true)"
[ -n "$READELF" ] || { echo "build-hip: llvm-readelf not found" >&2; exit 1; }

start=$(date +%s)
json="$(mktemp)"
trap 'rm -f "$json"' EXIT
cargo build --features hip --message-format=json "$@" > "$json"
OUT="$(python3 - "$json" "$ROOT" <<'PY'
import json, sys
root = sys.argv[2]
out = ""
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    pid = m.get("package_id", "")
    if m.get("reason") == "build-script-executed" and pid.startswith("path+file://" + root + "#"):
        out = m["out_dir"]
print(out)
PY
)"
[ -n "$OUT" ] && [ -f "$OUT/hip_table.rs" ] || { echo "build-hip: cannot find tessera's OUT_DIR" >&2; exit 1; }
grep -q 'HIP_BUILT: bool = true' "$OUT/hip_table.rs" || { echo "build-hip: hip_table.rs says HIP was not built" >&2; exit 1; }

# Every module: each cuda/<module>.cu (but the SIMT runtime's folder) and each HIP-only hip/<module>.hip.
mapfile -t MODULES < <({
  find cuda -name '*.cu' -not -path 'cuda/simt/*' | sed 's|^cuda/||; s|\.cu$||'
  find hip -name '*.hip' | sed 's|^hip/||; s|\.hip$||'
} | LC_ALL=C sort -u)
fail=0
count=0
for module in "${MODULES[@]}"; do
  for arch in "${ARCHS[@]}"; do
    co="$OUT/hsaco/$module.$arch.co"
    if [ ! -s "$co" ]; then
      echo "  MISSING $module ($arch): $co" >&2
      fail=1
      continue
    fi
    notes="$("$READELF" --notes "$co" 2>&1 || true)"
    target="$(printf '%s\n' "$notes" | sed -n 's/.*amdhsa.target:[[:space:]]*\(.*\)$/\1/p' | head -n1)"
    kernels="$(printf '%s\n' "$notes" | grep -c '\.symbol:' || true)"
    machine="$("$READELF" -h "$co" | sed -n 's/.*Machine:[[:space:]]*//p')"
    if [[ "$target" != *"--$arch"* ]] || [ "$kernels" -eq 0 ]; then
      echo "  BAD     $module ($arch): machine '$machine', target '$target', $kernels kernels" >&2
      fail=1
    else
      printf '  ok      %-28s %-7s %8d bytes  %-28s %3d kernels\n' "$module" "$arch" "$(stat -c %s "$co")" "$target" "$kernels"
    fi
    count=$((count + 1))
  done
done
echo "build-hip: ${#MODULES[@]} modules, $count code objects checked in $(( $(date +%s) - start ))s ($OUT/hsaco)"
exit "$fail"
