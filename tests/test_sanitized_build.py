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

SANITIZED = bool(os.environ.get("LLMPACK_LIBRARY")) and "libasan" in os.environ.get("LD_PRELOAD", "")
pytestmark = pytest.mark.skipif(not SANITIZED, reason="only inside scripts/test_sanitized.sh")


def test_the_sanitized_library_is_the_one_loaded():
    assert _lib.LIBRARY_PATH == os.path.abspath(os.environ["LLMPACK_LIBRARY"])
    maps = open("/proc/self/maps").read()
    assert "libasan" in maps and "libubsan" in maps


@pytest.mark.parametrize("kind, report", [(1, "AddressSanitizer: heap-buffer-overflow"),
                                          (2, "runtime error: signed integer overflow")])
def test_a_report_kills_the_process(kind, report):
    code = ("import ctypes, llmpack._lib as l; "
            f"print(ctypes.CDLL(l.LIBRARY_PATH).llmpack_sanitizer_selftest({kind}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0, r.stdout + r.stderr
    assert report in r.stderr, r.stderr[-3000:]
    assert ctypes.CDLL(_lib.LIBRARY_PATH).llmpack_sanitizer_selftest(0) == 0
