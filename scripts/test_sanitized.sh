#!/usr/bin/env bash
# Every CPU op test, at every ISA level this machine supports (the tests' `isa`
# fixture), against the AddressSanitizer + UBSan build of the library
# (scripts/build_sanitized.sh). Any sanitizer report fails the run. The SIMT
# emulator tests are not repeated here: they have their own ASan build.
#
#   scripts/test_sanitized.sh [pytest args]
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${LLMPACK_VENV:-.venv}
ENVFILE=build/sanitize/sanitize.env
[ -f "$ENVFILE" ] || PYTHON="$VENV/bin/python" bash scripts/build_sanitized.sh || exit 1
log=$(mktemp)
REPORTS=build/sanitize/reports
rm -f "$REPORTS"/*
start=$SECONDS
# The sanitizer environment applies to the Python process only (not to tee/grep).
mapfile -t SAN_ENV < <(grep -E '^[A-Z_]+=' "$ENVFILE")
(cd tests && env "${SAN_ENV[@]}" "../$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  --ignore-glob='test_emulator_*' "$@") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# Reports of the test process itself (not of the self-test's subprocesses,
# which write theirs on purpose and check them).
for f in "$REPORTS"/*; do
  [ -f "$f" ] || continue
  grep -q "llmpack_sanitizer_selftest" "$f" && continue
  echo "test_sanitized: sanitizer report $f:" >&2; head -60 "$f" >&2
  rc=1
done
[ $rc -eq 5 ] && { echo "test_sanitized: no tests ran: that is a failure" >&2; rc=1; }
echo "test_sanitized: rc=$rc in $((SECONDS - start)) s"
rm -f "$log"
exit $rc
