"""`llmpack info`, ISA selection (env var and runtime), build facts."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from llmpack import _lib


def run_py(code: str, **env) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **env}, check=True)
    return out.stdout.strip()


def test_info_command_lists_everything():
    out = subprocess.run([sys.executable, "-m", "llmpack.cli", "info"], capture_output=True, text=True, check=True).stdout
    for key in ("llmpack", "torch", "CPU ISA", "CUDA kernels", "ops"):
        assert key in out
    assert "llmpack.sparse24_linear" in out and "llmpack.sparse24_compress" in out
    assert "tested with" in out and "transformers==" in out
    archs = _lib.cuda_archs()
    assert (f"compiled for sm_{', sm_'.join(archs)}" in out) if archs else ("not compiled" in out)


@pytest.mark.parametrize("level", _lib.supported_isas())
def test_env_var_forces_a_lower_level(level):
    assert run_py("import llmpack._lib as l; print(l.active_isa())", LLMPACK_ISA=level) == level


def test_env_var_cannot_raise_above_the_cpu():
    assert run_py("import llmpack._lib as l; print(l.active_isa())", LLMPACK_ISA="amx") == _lib.cpu_isa()


def test_set_isa_clamps_and_validates():
    before = _lib.active_isa()
    try:
        assert _lib.set_isa("generic") == "generic"
        assert _lib.set_isa("amx") == _lib.cpu_isa()
        with pytest.raises(ValueError, match="unknown ISA level"):
            _lib.set_isa("sse9")
    finally:
        _lib.set_isa(before)


def test_cuda_build_facts_are_consistent():
    archs = _lib.cuda_archs()
    assert all(a.isdigit() for a in archs)
    # CI builds the wheel's CUDA kernels for sm_80 and sm_90 (the sanitized
    # build, loaded through LLMPACK_LIBRARY, is CPU only).
    if os.environ.get("LLMPACK_CUDA") == "ON" and not os.environ.get("LLMPACK_LIBRARY"):
        assert archs == ["80", "90"] and _lib.has_cutlass()


def test_tested_versions_are_exact_pins_and_installed_here():
    """The file setup.sh installs from is what `llmpack info` reports, and this
    test environment is that environment (CI installs from it)."""
    from llmpack._versions import tested_versions, version_report

    pins = tested_versions()
    assert {"torch", "transformers", "gguf", "safetensors"} <= set(pins)
    assert pins["transformers"].startswith("5.")
    for dist, tested, installed in version_report():
        if installed is not None:
            assert installed.split("+")[0] == tested, (dist, tested, installed)
