#!/usr/bin/env bash
# Builds the SIMT-emulator test binaries: the CUDA kernels compiled as host
# C++ (tests only; see docs/emulator.md).
#
#   scripts/build_simt.sh [all|plain|asan]     (default: all)
#
#   build/simt/       libllmpack_simt.so (torch.ops.llmpack_simt.*), simt_unit_tests,
#                     simt_broken_kernels, simt_build.json
#   build/simt-asan/  the same with AddressSanitizer
#
# torch comes from the Python that runs the tests: $PYTHON if set, else
# $LLMPACK_VENV/bin/python, else the active virtualenv, else ./.venv, else python3.
# LLMPACK_SIMT_JOBS sets the build parallelism (default: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
case "$what" in all|plain|asan) ;; *) echo "usage: $0 [all|plain|asan]" >&2; exit 2 ;; esac

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -n "${LLMPACK_VENV:-}" ] && [ -x "$LLMPACK_VENV/bin/python" ]; then PY=$LLMPACK_VENV/bin/python
elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then PY=$VIRTUAL_ENV/bin/python
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi
case "$PY" in
  */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;;  # absolute, symlink kept (venv)
  *) PY=$(command -v "$PY") ;;
esac
"$PY" -c "import torch" 2>/dev/null || { echo "build_simt: torch is not importable by $PY (set PYTHON=...)" >&2; exit 1; }
GEN=()
command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
JOBS=${LLMPACK_SIMT_JOBS:-$(nproc 2>/dev/null || echo 2)}

build() {  # dir asan
  local dir=$1 asan=$2 start=$SECONDS
  if [ -f "$dir/CMakeCache.txt" ] && ! grep -q "Ninja" "$dir/CMakeCache.txt" && [ ${#GEN[@]} -gt 0 ]; then
    rm -rf "$dir"  # generator changed
  fi
  cmake -S tests/simt -B "$dir" "${GEN[@]}" -DPython_EXECUTABLE="$PY" -DLLMPACK_SIMT_ASAN="$asan" >/dev/null
  cmake --build "$dir" -j "$JOBS"
  echo "build_simt: $dir ready ($((SECONDS - start)) s)"
}

[ "$what" = asan ] || build build/simt OFF
[ "$what" = plain ] || build build/simt-asan ON
