#!/usr/bin/env bash
# Regenerates the committed PTX (ptx/<module>.<arch>.ptx for sm_80 and sm_90a) from every
# cuda/**/*.cu except cuda/simt, with the pinned nvcc and exactly the command build/ptx.rs runs:
#   cd <crate root> && nvcc -ptx -arch=<arch> $(build/nvcc-flags.txt) -I cuda -o <out> cuda/<module>.cu
# Stale files (kernels that no longer exist) are deleted. ptx/sources.sha256 records the SHA-256
# of every input (each .cu/.cuh under cuda/ but cuda/simt/, and build/nvcc-flags.txt, in
# `sha256sum` format, sorted by path); a build that embeds the committed ptx/ (no nvcc) warns
# when an input no longer matches it. So any change to those inputs needs a regen (CI's
# scripts/check-ptx-fresh.sh fails otherwise), even one that leaves the PTX itself unchanged.
#
# Usage: scripts/regen-ptx.sh [OUT_DIR]     (default: ptx/)
# nvcc: $NVCC when it is the pinned version, else scripts/install-toolchains.sh provides it.
# TESSERA_ALLOW_ANY_NVCC=1 accepts another nvcc version (the output will not match CI).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PINNED="13.0.88"
ARCHS=(sm_80 sm_90a)
cd "$ROOT"
DEST="${1:-ptx}"

nvcc_version() { "$1" --version 2>/dev/null | sed -n 's/.*, V\([0-9.]*\).*/\1/p' | head -n1; }

if [ -z "${NVCC:-}" ] || [ "$(nvcc_version "$NVCC")" != "$PINNED" ]; then
  # shellcheck disable=SC1090
  source <(bash "$ROOT/scripts/install-toolchains.sh" 2>/dev/null)
fi
have="$(nvcc_version "$NVCC")"
if [ "$have" != "$PINNED" ] && [ "${TESSERA_ALLOW_ANY_NVCC:-0}" != 1 ]; then
  echo "regen-ptx: $NVCC is nvcc $have, the committed PTX needs $PINNED (scripts/install-toolchains.sh)" >&2
  exit 1
fi

mapfile -t FLAGS < <(sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' build/nvcc-flags.txt | grep -v -e '^#' -e '^$')
mapfile -t SOURCES < <(find cuda -name '*.cu' -not -path 'cuda/simt/*' | LC_ALL=C sort)

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
for src in "${SOURCES[@]}"; do
  module="${src#cuda/}"
  module="${module%.cu}"
  mkdir -p "$TMP/$(dirname "$module")"
  for arch in "${ARCHS[@]}"; do
    out="$TMP/$module.$arch.ptx"
    "$NVCC" -ptx "-arch=$arch" "${FLAGS[@]}" -I cuda -o "$out" "$src"
    if grep -qF "$ROOT" "$out"; then
      echo "regen-ptx: $out contains the checkout path $ROOT; PTX would not be reproducible" >&2
      exit 1
    fi
  done
done

# What this PTX was generated from (build/ptx.rs compares it with the sources it builds).
mapfile -t INPUTS < <({ find cuda -type f \( -name '*.cu' -o -name '*.cuh' \) -not -path 'cuda/simt/*'; echo build/nvcc-flags.txt; } | LC_ALL=C sort)
sha256sum "${INPUTS[@]}" > "$TMP/sources.sha256"

# Replace DEST wholesale so stale PTX disappears.
rm -rf "$DEST"
mkdir -p "$DEST"
cp -R "$TMP/." "$DEST/"
n="$(find "$DEST" -name '*.ptx' | wc -l)"
echo "regen-ptx: wrote $n PTX files for ${#SOURCES[@]} kernel sources into $DEST/ (nvcc $have)"
