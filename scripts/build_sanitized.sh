#!/usr/bin/env bash
# Builds the library with AddressSanitizer + UndefinedBehaviorSanitizer into
# build/sanitize/ (CPU kernels only; every report is fatal) and writes
# build/sanitize/sanitize.env: the environment a Python process needs to load
# it (LLMPACK_LIBRARY, LD_PRELOAD of the sanitizer runtime, options).
# scripts/test_sanitized.sh and tests/fuzz/run.py use it.
#
# With clang (Debian's clang-14 + libclang-rt-14-dev, installed here when
# missing and we are root) the library also carries libFuzzer's coverage
# counters, and the preloaded runtime is ASan + libFuzzer in one shared object
# (build/sanitize/asan_fuzzer.so): atheris then drives the fuzz targets with
# native and Python coverage. A runtime that is only libasan would answer
# atheris' coverage registration itself, leaving the fuzzer blind. Without
# clang, GCC builds it (sanitized, no fuzzing coverage).
#
# torch comes from $PYTHON, else $LLMPACK_VENV/bin/python, else ./.venv/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-${LLMPACK_VENV:-.venv}/bin/python}
"$PY" -c "import torch" 2>/dev/null || { echo "build_sanitized: torch is not importable by $PY" >&2; exit 1; }
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
DIR=build/sanitize
start=$SECONDS

if ! command -v clang++-14 >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    clang-14 libclang-rt-14-dev) >/dev/null 2>&1 || echo "build_sanitized: clang-14 not installed; using GCC"
fi
CXX=g++
RTDIR=""
if command -v clang++-14 >/dev/null 2>&1; then
  RTDIR=$(dirname "$(clang-14 -print-file-name=libclang_rt.fuzzer_no_main-x86_64.a)")
  [ -f "$RTDIR/libclang_rt.fuzzer_no_main-x86_64.a" ] && CXX=clang++-14 || RTDIR=""
fi
if [ -f "$DIR/CMakeCache.txt" ] && ! grep -q "CMAKE_CXX_COMPILER:.*$CXX" "$DIR/CMakeCache.txt"; then
  rm -rf "$DIR"  # compiler changed
fi
GEN=()
command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
cmake -S . -B "$DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$CXX" \
  -DPython_EXECUTABLE="$PY" -DLLMPACK_CUDA=OFF -DLLMPACK_SANITIZE=ON -DSKBUILD_PROJECT_VERSION=0.0.0+sanitize >/dev/null
cmake --build "$DIR" -j "$(nproc 2>/dev/null || echo 2)" 2>&1 | grep -v -E "warning: .__Y. is used uninitialized|note: .__Y. was declared|__m512i __Y = __Y|^\s+\||^\s+[0-9]+ \|" || true
lib=$(ls "$PWD/$DIR"/libllmpack_ops*.so | head -n 1)

if [ -n "$RTDIR" ]; then
  # ASan (its preinit object dropped: not allowed in a shared object) + its
  # C++ interceptors + libFuzzer without main, whole, in one preloadable .so.
  tmp=$(mktemp -d)
  cp "$RTDIR/libclang_rt.asan-x86_64.a" "$tmp/asan.a"
  ar d "$tmp/asan.a" asan_preinit.cpp.o
  clang-14 -shared -o "$DIR/asan_fuzzer.so" -Wl,--whole-archive "$tmp/asan.a" \
    "$RTDIR/libclang_rt.asan_cxx-x86_64.a" "$RTDIR/libclang_rt.fuzzer_no_main-x86_64.a" \
    -Wl,--no-whole-archive -lpthread -ldl -lrt -lm -lstdc++
  rm -rf "$tmp"
  preload="$PWD/$DIR/asan_fuzzer.so"
else
  # libasan must be the first library loaded; libstdc++ with it, or ASan cannot
  # find the real __cxa_throw (python does not link libstdc++) and aborts on
  # the first C++ exception. UBSan's runtime comes in as a dependency.
  preload="$(readlink -f "$(g++ -print-file-name=libasan.so)") $(readlink -f "$(g++ -print-file-name=libstdc++.so)")"
fi
# Reports also go to files (pytest captures the test process's stderr, and a
# fatal report ends the process before pytest could show it).
mkdir -p "$PWD/$DIR/reports"
cat > "$DIR/sanitize.env" <<ENV
LLMPACK_LIBRARY=$lib
LLMPACK_SANITIZE_COMPILER=$CXX
LD_PRELOAD=$preload
ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0:print_summary=1:handle_abort=1:log_path=$PWD/$DIR/reports/asan
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:print_summary=1:log_path=$PWD/$DIR/reports/ubsan
ENV
echo "build_sanitized: $lib with $CXX ($((SECONDS - start)) s); environment in $DIR/sanitize.env"
