#!/usr/bin/env bash
# README command 2: install everything, then run the test suite against the
# installed wheel. pytest's exit 5 ("no tests ran") is a failure here.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
VENV=${LLMPACK_VENV:-.venv}
# SIMT-emulator builds (build/simt, build/simt-asan) for tests/test_emulator_*.py:
# the CUDA kernels compiled by the host compiler and run on the CPU.
PYTHON="$VENV/bin/python" bash scripts/build_simt.sh || exit 1
# Run from tests/ so `import llmpack` finds the installed wheel, not python/.
(cd tests && "../$VENV/bin/python" -m pytest -q "$@")
rc=$?
if [ $rc -eq 5 ]; then
  echo "test.sh: no tests ran: that is a failure" >&2
  exit 1
fi
exit $rc
