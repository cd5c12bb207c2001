"""Deliberately broken kernels (tests/simt/broken_kernels.cu), each caught by
the plain emulator build: a missing __syncthreads shows as wrong results under
every schedule, a wrong mma fragment index as a mismatch against the reference
GEMM, threads exiting before a barrier and a shuffle mask without the caller
as emulator errors, an off-by-one store into dynamic shared memory as a fault
on the guard page behind it (or, when the kernel states its size, a clear
error). The ASan build's catches (static shared, global memory) are in
test_emulator_asan.py.
"""
from __future__ import annotations

import os
import re
import signal
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "simt"))
import simt_support as simt  # noqa: E402


def demo(name: str, kind: str = "plain", env: dict | None = None):
    exe = simt.info(kind)["broken_kernels"]
    return simt.run([exe, name], env=env, timeout=120)


def test_missing_barrier_gives_wrong_results():
    r = demo("missing_barrier")
    assert r.returncode == 0, r.stdout + r.stderr
    broken = re.findall(r"broken kernel, schedule (\S+): (\d+) of", r.stdout)
    fixed = re.findall(r"fixed kernel, schedule (\S+): (\d+) of", r.stdout)
    assert len(broken) == 3 and all(int(n) > 0 for _, n in broken), r.stdout
    assert len(fixed) == 3 and all(int(n) == 0 for _, n in fixed), r.stdout


def test_wrong_fragment_index_mismatches_reference():
    r = demo("wrong_fragment")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "broken kernel: 128 of 128 outputs differ" in r.stdout
    assert "fixed kernel: 0 of 128 outputs differ" in r.stdout


def test_threads_exiting_before_barrier_is_an_error():
    r = demo("exited_before_barrier")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reached by 200 of 256 threads; 56 threads exited" in r.stdout
    assert "broken_kernels.cu" in r.stdout


def test_shuffle_mask_without_caller_is_an_error():
    r = demo("shfl_bad_mask")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mask 0xfffffffe does not include the calling lane 0" in r.stdout


def test_dynamic_smem_off_by_one_faults_on_guard_page():
    r = demo("smem_off_by_one")
    assert r.returncode == -signal.SIGSEGV, (r.returncode, r.stdout, r.stderr)
    assert "kernel k_shift_dyn" in r.stderr
    assert "thread (255,0,0)" in r.stderr
    assert "out-of-bounds access to dynamic shared memory" in r.stderr
    assert "0 bytes past the end of the 1024-byte dynamic shared memory" in r.stderr


def test_dynamic_smem_declared_size_is_checked():
    r = demo("smem_declared_too_small")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "uses 1028 bytes of dynamic shared memory but the launch provides 1024" in r.stdout


def test_spin_wait_on_another_block_is_stopped_by_the_watchdog():
    r = demo("spin_on_other_block", env={"LLMPACK_SIMT_WATCHDOG_S": "1"})
    assert r.returncode == -signal.SIGABRT, (r.returncode, r.stdout, r.stderr)
    assert "watchdog: kernel k_wait_for_block1 has run 1 s without any thread reaching" in r.stderr
