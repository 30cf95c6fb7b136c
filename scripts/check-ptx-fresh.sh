#!/usr/bin/env bash
# Fails when the committed ptx/ differs from what the pinned nvcc produces from cuda/ now:
# regenerates into a temp dir with scripts/regen-ptx.sh and compares byte for byte.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

bash scripts/regen-ptx.sh "$TMP/ptx" >/dev/null
mkdir -p ptx

stale=()
while IFS= read -r f; do
  if [ ! -f "ptx/$f" ]; then
    stale+=("ptx/$f (missing: not committed)")
  elif ! cmp -s "$TMP/ptx/$f" "ptx/$f"; then
    stale+=("ptx/$f (differs from the nvcc output)")
  fi
done < <(cd "$TMP/ptx" && find . -name '*.ptx' | sed 's|^\./||' | LC_ALL=C sort)
while IFS= read -r f; do
  [ -f "$TMP/ptx/$f" ] || stale+=("ptx/$f (stale: no kernel source produces it)")
done < <(cd ptx && find . -name '*.ptx' | sed 's|^\./||' | LC_ALL=C sort)

if ! cmp -s "$TMP/ptx/sources.sha256" ptx/sources.sha256; then
  stale+=("ptx/sources.sha256 (the kernel sources changed since ptx/ was generated)")
fi

if ((${#stale[@]})); then
  echo "check-ptx-fresh: the committed PTX is not what cuda/ compiles to:" >&2
  printf '  %s\n' "${stale[@]}" >&2
  echo "Run scripts/regen-ptx.sh and commit ptx/." >&2
  exit 1
fi
echo "check-ptx-fresh: ptx/ is fresh ($(find ptx -name '*.ptx' | wc -l) files)"
