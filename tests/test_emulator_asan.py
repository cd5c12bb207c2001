"""The AddressSanitizer build of the emulator (build/simt-asan/):

* the kernel tests (test_emulator_kernels.py, test_emulator_btc.py) again, in a subprocess with
  libasan preloaded (the main pytest process stays uninstrumented), so an
  out-of-bounds access by any of our kernels on torch's CPU tensors fails;
* the emulator's C++ unit tests under ASan (fiber stacks are annotated, so
  ASan follows the switches without false positives);
* off-by-one stores into dynamic shared memory, a static __shared__ array and
  global memory, each reported by ASan at the kernel's source line.
"""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "simt"))
import simt_support as simt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = pytest.mark.skipif(simt.current_kind() == "asan", reason="already inside the ASan run")


def test_kernel_tests_under_asan():
    info = simt.info("asan")
    env = simt.asan_env(info)
    r = simt.run([simt.python(), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                  os.path.join(HERE, "test_emulator_kernels.py"), os.path.join(HERE, "test_emulator_btc.py")],
                 env=env, timeout=900)
    out = r.stdout + r.stderr
    assert "AddressSanitizer" not in out, out[-6000:]
    assert r.returncode == 0, out[-6000:]
    assert " passed" in r.stdout


def test_unit_tests_under_asan():
    info = simt.info("asan")
    r = simt.run([info["unit_tests"]], env={"ASAN_OPTIONS": "detect_leaks=0"}, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "FAIL" not in r.stdout and "AddressSanitizer" not in out, out[-6000:]


@pytest.mark.parametrize("name, report, where", [
    ("smem_off_by_one", "heap-buffer-overflow", "in k_shift_dyn"),
    ("static_smem_off_by_one", "global-buffer-overflow", "in k_shift_static"),
    ("global_off_by_one", "heap-buffer-overflow", "in k_fill"),
])
def test_asan_catches_out_of_bounds_store(name, report, where):
    info = simt.info("asan")
    r = simt.run([info["broken_kernels"], name], env={"ASAN_OPTIONS": "detect_leaks=0"}, timeout=120)
    assert r.returncode != 0 and "not detected" not in r.stdout, r.stdout + r.stderr
    assert f"ERROR: AddressSanitizer: {report}" in r.stderr, r.stderr[-4000:]
    assert "WRITE of size 4" in r.stderr
    assert where in r.stderr and "broken_kernels.cu" in r.stderr, r.stderr[-4000:]
