"""Loads the compiled library and reads its build/machine facts.

The library registers every ``torch.ops.llmpack.*`` op when loaded. Besides
ops it exports a few plain C functions (csrc/common/info.cpp) that we call
through ctypes: feature queries need no tensors, so no pybind11 is used.
"""
from __future__ import annotations

import ctypes
import glob
import os

import torch

ISA_LEVELS = ("generic", "avx2", "avx512", "avx512_bf16", "amx")

_here = os.path.dirname(os.path.abspath(__file__))


def _find_library() -> str:
    # LLMPACK_LIBRARY: load another build of the same library instead (the
    # sanitized one of scripts/build_sanitized.sh, for the tests).
    override = os.environ.get("LLMPACK_LIBRARY")
    if override:
        if not os.path.isfile(override):
            raise ImportError(f"llmpack: LLMPACK_LIBRARY={override!r} is not a file")
        return os.path.abspath(override)
    found = sorted(glob.glob(os.path.join(_here, "libllmpack_ops*.so")))
    if not found:
        raise ImportError(
            f"llmpack: compiled library libllmpack_ops.so not found in {_here}. "
            "Install the package (pip install --no-build-isolation .) rather than "
            "importing it from the source tree.")
    return found[0]


LIBRARY_PATH = _find_library()
torch.ops.load_library(LIBRARY_PATH)
_c = ctypes.CDLL(LIBRARY_PATH)
for _name in ("llmpack_version", "llmpack_cpu_features", "llmpack_cuda_archs"):
    getattr(_c, _name).restype = ctypes.c_char_p
for _name in ("llmpack_cpu_isa", "llmpack_active_isa", "llmpack_has_cutlass"):
    getattr(_c, _name).restype = ctypes.c_int
_c.llmpack_set_active_isa.restype = ctypes.c_int
_c.llmpack_set_active_isa.argtypes = [ctypes.c_int]


def library_version() -> str:
    return _c.llmpack_version().decode()


def cpu_isa() -> str:
    """Highest CPU ISA level this machine and this build support."""
    return ISA_LEVELS[_c.llmpack_cpu_isa()]


def active_isa() -> str:
    """ISA level the CPU kernels use now (lowered by LLMPACK_ISA or set_isa)."""
    return ISA_LEVELS[_c.llmpack_active_isa()]


def set_isa(level: str) -> str:
    """Make the CPU kernels use ``level`` (or the highest supported below it).

    Returns the level now active. Meant for tests and benchmarks: it is a
    process-wide switch.
    """
    if level not in ISA_LEVELS:
        raise ValueError(f"unknown ISA level {level!r}; expected one of {ISA_LEVELS}")
    return ISA_LEVELS[_c.llmpack_set_active_isa(ISA_LEVELS.index(level))]


def supported_isas() -> list[str]:
    return list(ISA_LEVELS[: _c.llmpack_cpu_isa() + 1])


def cpu_features() -> list[str]:
    s = _c.llmpack_cpu_features().decode()
    return s.split(",") if s else []


def cuda_archs() -> list[str]:
    """CUDA architectures the kernels were compiled for ([] if built without CUDA)."""
    s = _c.llmpack_cuda_archs().decode()
    return s.split(",") if s else []


def has_cutlass() -> bool:
    return bool(_c.llmpack_has_cutlass())


def registered_ops() -> list[str]:
    names = torch._C._dispatch_get_all_op_names()
    return sorted(n.split("::", 1)[1] for n in names if n.startswith("llmpack::"))
