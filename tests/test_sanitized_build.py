"""The sanitized test run (scripts/test_sanitized.sh) really runs on the
ASan + UBSan library and a report really fails it. Outside that run these
tests check nothing but skip with the reason."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from llmpack import _lib

SANITIZED = bool(os.environ.get("LLMPACK_LIBRARY")) and "asan" in os.environ.get("LD_PRELOAD", "")
pytestmark = pytest.mark.skipif(not SANITIZED, reason="only inside scripts/test_sanitized.sh")


def test_the_sanitized_library_is_the_one_loaded():
    assert _lib.LIBRARY_PATH == os.path.abspath(os.environ["LLMPACK_LIBRARY"])
    maps = open("/proc/self/maps").read()
    assert "asan" in maps  # GCC: libasan (+ libubsan); clang: asan_fuzzer.so with UBSan inside


@pytest.mark.parametrize("kind, report", [(1, "AddressSanitizer: heap-buffer-overflow"),
                                          (2, "runtime error: signed integer overflow")])
def test_a_report_kills_the_process(kind, report, tmp_path):
    code = ("import ctypes, llmpack._lib as l; "
            f"print(ctypes.CDLL(l.LIBRARY_PATH).llmpack_sanitizer_selftest({kind}))")
    env = {k: v.replace("log_path=", "log_path_unused=") for k, v in os.environ.items()}  # report on stderr
    # stderr to a file, not a pipe: the symbolizer ASan starts may outlive the
    # dying process and hold a pipe open.
    err_file = tmp_path / "stderr.txt"
    with open(err_file, "w") as err:
        rc = subprocess.run([sys.executable, "-c", code], stdout=err, stderr=err, timeout=120, env=env).returncode
    out = err_file.read_text()
    assert rc != 0, out
    assert report in out, out[-3000:]
    assert ctypes.CDLL(_lib.LIBRARY_PATH).llmpack_sanitizer_selftest(0) == 0
