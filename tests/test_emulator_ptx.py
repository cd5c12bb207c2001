"""The SIMT emulator's own tests: one pytest test per C++ test in
build/simt/simt_unit_tests (each PTX instruction of csrc/common/cuda/ptx.cuh
against a scalar model from the PTX ISA's fragment tables, plus the core:
indices, barriers, shared memory, shuffles, votes, atomics, fp16/bf16,
misuse detection, speed), and a check that ptx.cuh compiles under nvcc for
sm_80 and sm_90 with every instruction emitted.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "simt"))
import simt_support as simt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _test_names() -> list[str]:
    if not simt.available("plain"):
        return []
    exe = simt._info("plain")["unit_tests"]
    return subprocess.run([exe, "--list"], capture_output=True, text=True, check=True, timeout=60).stdout.split()


NAMES = _test_names()


@pytest.mark.parametrize("name", NAMES or ["<not built>"])
def test_emulator_unit(name):
    exe = simt.info("plain")["unit_tests"]  # skips / fails with the reason when not built
    r = simt.run([exe, name], timeout=300)
    assert r.returncode == 0 and f"PASS {name}" in r.stdout, r.stdout + r.stderr


def test_every_ptx_wrapper_has_a_unit_test():
    if not NAMES:
        simt.info("plain")
    for instr in ("mma_m16n8k16_f16f32", "mma_m16n8k16_bf16f32", "mma_sp_m16n8k32_f16f32_selector0",
                  "mma_sp_m16n8k32_f16f32_selector1", "mma_sp_m16n8k32_bf16f32_selector0",
                  "mma_sp_m16n8k32_bf16f32_selector1", "bmma_m8n8k128_and_popc", "bmma_m16n8k256_and_popc",
                  "ldmatrix_x1", "ldmatrix_x2", "ldmatrix_x4", "ldmatrix_x1_trans", "ldmatrix_x2_trans",
                  "ldmatrix_x4_trans", "cp_async"):
        assert f"ptx_{instr}" in NAMES, instr


NVCC = shutil.which("nvcc")
PTX_INSTRUCTIONS = [
    "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
    "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
    "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32",
    "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32",
    "mma.sync.aligned.m8n8k128.row.col.s32.b1.b1.s32.and.popc",
    "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc",
    "ldmatrix.sync.aligned.m8n8.x1.shared.b16", "ldmatrix.sync.aligned.m8n8.x2.shared.b16",
    "ldmatrix.sync.aligned.m8n8.x4.shared.b16", "ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16",
    "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16", "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16",
    "cp.async.cg.shared.global", "cp.async.commit_group", "cp.async.wait_group", "cp.async.wait_all",
]


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_ptx_header_compiles_with_nvcc(arch, tmp_path):
    src = os.path.join(HERE, "simt", "ptx_compile_check.cu")
    inc = os.path.join(simt.REPO, "csrc")
    ptx = tmp_path / "check.ptx"
    base = [NVCC, "-std=c++17", f"-arch={arch}", f"-I{inc}"]
    r = subprocess.run(base + ["--ptx", src, "-o", str(ptx)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    text = ptx.read_text()
    missing = [i for i in PTX_INSTRUCTIONS if i not in text]
    assert not missing, f"not emitted for {arch}: {missing}"
    assert "trap;" not in text, "a wrapper fell back to its trap branch"
    # ... and ptxas accepts it (operand kinds, immediates).
    r = subprocess.run(base + ["-c", src, "-o", str(tmp_path / "check.o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
