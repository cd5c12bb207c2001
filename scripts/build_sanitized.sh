#!/usr/bin/env bash
# Builds the library with AddressSanitizer + UndefinedBehaviorSanitizer into
# build/sanitize/ (CPU kernels only; every report is fatal) and writes
# build/sanitize/sanitize.env: the environment a Python process needs to load
# it (LLMPACK_LIBRARY, LD_PRELOAD of the ASan runtime, sanitizer options).
# scripts/test_sanitized.sh and tests/fuzz/ use it.
#
# torch comes from $PYTHON, else $LLMPACK_VENV/bin/python, else ./.venv/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-${LLMPACK_VENV:-.venv}/bin/python}
"$PY" -c "import torch" 2>/dev/null || { echo "build_sanitized: torch is not importable by $PY" >&2; exit 1; }
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
DIR=build/sanitize
start=$SECONDS
GEN=()
command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
cmake -S . -B "$DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPython_EXECUTABLE="$PY" \
  -DLLMPACK_CUDA=OFF -DLLMPACK_SANITIZE=ON -DSKBUILD_PROJECT_VERSION=0.0.0+sanitize >/dev/null
cmake --build "$DIR" -j "$(nproc 2>/dev/null || echo 2)"
lib=$(ls "$PWD/$DIR"/libllmpack_ops*.so | head -n 1)
# libasan must be the first library loaded; libstdc++ with it, or ASan cannot
# find the real __cxa_throw (python does not link libstdc++) and aborts on the
# first C++ exception. UBSan's runtime comes in as a dependency of the library.
CXX=$(grep -E '^CMAKE_CXX_COMPILER:' "$DIR/CMakeCache.txt" | cut -d= -f2)
asan=$("$CXX" -print-file-name=libasan.so)
stdcxx=$("$CXX" -print-file-name=libstdc++.so)
cat > "$DIR/sanitize.env" <<ENV
LLMPACK_LIBRARY=$lib
LD_PRELOAD=$(readlink -f "$asan") $(readlink -f "$stdcxx")
ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0:print_summary=1:handle_abort=1
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:print_summary=1
ENV
echo "build_sanitized: $lib ($((SECONDS - start)) s); environment in $DIR/sanitize.env"
