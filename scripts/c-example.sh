#!/usr/bin/env bash
# Build libtessera (cdylib), compile examples/c/main.c with `cc` against include/tessera.h, and
# run it on each host executor: the native CPU path, SIMT wave32 (CUDA sources) and SIMT wave64
# (HIP sources). The example checks its own numbers and exits non-zero on any failure. It also
# links the static library once, to check that libtessera.a is complete.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release --lib
CC="${CC:-cc}"
"$CC" -std=c11 -Wall -Wextra -Werror -Iinclude examples/c/main.c -L"$TARGET/release" -ltessera \
  -Wl,-rpath,"$TARGET/release" -lm -o "$TARGET/example_c"
# The header is valid C++ too.
"${CXX:-c++}" -x c++ -std=c++17 -fsyntax-only -Wall -Werror -Iinclude include/tessera.h
for executor in cpu simt simt64; do
  "$TARGET/example_c" "$executor"
done
# Static link: libtessera.a plus the system libraries Rust's std needs.
"$CC" -std=c11 -Iinclude examples/c/main.c "$TARGET/release/libtessera.a" -lstdc++ -lpthread -ldl \
  -lm -lgcc_s -o "$TARGET/example_c_static"
"$TARGET/example_c_static" cpu
