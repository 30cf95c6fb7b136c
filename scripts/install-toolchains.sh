#!/usr/bin/env bash
# Installs the pinned toolchains tessera builds its GPU code with:
#   * nvcc 13.0.88 from PyPI (with nvvm/crt/runtime/cccl pinned to match), into a cache folder;
#   * Debian's clang-19, lld-19, llvm-19, libamdhip64-dev and rocm-device-libs (HIP headers and
#     AMDGPU device libraries) and fonts-dejavu-core (the specdiff plot's font), through apt.
# Prints the environment to export at the end. Idempotent: a second run only checks.
#
# Every nvidia-* wheel is pinned: an unpinned nvidia-nvvm pulls a newer cicc that emits PTX ISA
# 9.5, which an R580 driver cannot JIT, and the committed ptx/ would stop matching.
set -euo pipefail

CACHE="${TESSERA_TOOLCHAIN_DIR:-$HOME/.cache/tessera-toolchains}"
CUDA_DIR="$CACHE/cuda-13.0.88"
PIP_PINS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
)
# fonts-dejavu-core: the TrueType font of `tessera specdiff curve`'s PNG (drivers::specdiff::plot).
APT_PKGS=(clang-19 lld-19 llvm-19 libamdhip64-dev rocm-device-libs fonts-dejavu-core)

mkdir -p "$CACHE"

# --- Debian packages -------------------------------------------------------------------------
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- nvcc from PyPI --------------------------------------------------------------------------
stamp="$CUDA_DIR/.pins"
want="$(printf '%s\n' "${PIP_PINS[@]}")"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  rm -rf "$CUDA_DIR"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$CUDA_DIR/site" "${PIP_PINS[@]}"
  printf '%s\n' "$want" > "$stamp"
fi

# The wheels lay the toolkit out under site/nvidia/cu13 (bin/, nvvm/, include/). Find nvcc.
NVCC="$(find "$CUDA_DIR/site" -path '*/bin/nvcc' -type f | head -n1)"
[ -n "$NVCC" ] || { echo "install-toolchains: nvcc not found in $CUDA_DIR" >&2; exit 1; }
chmod +x "$NVCC" "$(dirname "$NVCC")"/* 2>/dev/null || true
find "$CUDA_DIR/site" -path '*/nvvm/bin/*' -type f -exec chmod +x {} + 2>/dev/null || true

"$NVCC" --version | tail -n 2 >&2
clang-19 --version | head -n 1 >&2

cat <<ENV
export NVCC="$NVCC"
export CUDA_HOME="$(dirname "$(dirname "$NVCC")")"
export TESSERA_CLANG=clang-19
ENV
