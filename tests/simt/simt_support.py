"""Finds the SIMT-emulator builds for tests/test_emulator_*.py.

scripts/build_simt.sh writes build/simt/ (plain) and build/simt-asan/
(AddressSanitizer), each with a simt_build.json naming its products.
LLMPACK_SIMT_DIR / LLMPACK_SIMT_ASAN_DIR point elsewhere (the ASan default
is then ``$LLMPACK_SIMT_DIR-asan``). A missing or out-of-date build skips the
emulator tests with the reason, unless LLMPACK_REQUIRE_SIMT=1 (CI), which
turns that into a failure.
"""
from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEDULES = ("forward", "reverse", "random:11")


def build_dir(kind: str) -> str:
    plain = os.environ.get("LLMPACK_SIMT_DIR")
    if kind == "plain":
        return plain or os.path.join(REPO, "build", "simt")
    asan = os.environ.get("LLMPACK_SIMT_ASAN_DIR")
    if asan:
        return asan
    return (plain.rstrip("/") + "-asan") if plain else os.path.join(REPO, "build", "simt-asan")


def required() -> bool:
    return os.environ.get("LLMPACK_REQUIRE_SIMT") == "1"


class Unavailable(Exception):
    pass


def _stale(d: str) -> str | None:
    """What ninja would rebuild in build folder d, or None when up to date."""
    if not os.path.exists(os.path.join(d, "build.ninja")):
        return None  # not a Ninja build: cannot tell cheaply, trust it
    ninja = None
    try:  # the ninja CMake configured the folder with, else the one on PATH
        with open(os.path.join(d, "CMakeCache.txt")) as fh:
            for line in fh:
                if line.startswith("CMAKE_MAKE_PROGRAM:"):
                    ninja = line.split("=", 1)[1].strip()
    except OSError:
        pass
    if not ninja or not os.path.exists(ninja):
        ninja = shutil.which("ninja")
    if not ninja:
        return None
    r = subprocess.run([ninja, "-C", d, "-n"], capture_output=True, text=True, timeout=60)
    out = (r.stdout + r.stderr).strip()
    if r.returncode != 0:
        return out[-500:]
    if "no work to do" in out:
        return None
    steps = [ln for ln in out.splitlines() if ln.startswith("[")]
    return f"{len(steps)} build steps pending, e.g. {steps[0] if steps else out[:200]}"


@functools.lru_cache(maxsize=None)
def _info(kind: str) -> dict:
    d = build_dir(kind)
    f = os.path.join(d, "simt_build.json")
    if not os.path.exists(f):
        raise Unavailable(f"SIMT emulator {kind} build not found in {d}: run scripts/build_simt.sh")
    with open(f) as fh:
        info = json.load(fh)
    if info["asan"] != (kind == "asan"):
        raise Unavailable(f"{d} is not a {kind} build (simt_build.json says asan={info['asan']})")
    stale = _stale(d)
    if stale:
        raise Unavailable(f"SIMT emulator {kind} build in {d} is out of date with the sources "
                          f"({stale}): run scripts/build_simt.sh")
    info["dir"] = d
    return info


def info(kind: str = "plain") -> dict:
    """The build's simt_build.json; skips (or fails under LLMPACK_REQUIRE_SIMT=1) if unusable."""
    try:
        return _info(kind)
    except Unavailable as e:
        if required():
            pytest.fail(f"{e} (LLMPACK_REQUIRE_SIMT=1)", pytrace=False)
        pytest.skip(str(e))


def available(kind: str) -> bool:
    try:
        _info(kind)
        return True
    except Unavailable:
        return False


class Ops:
    """torch.ops.llmpack_simt plus the emulator's C controls (schedule, counters)."""

    def __init__(self, path: str):
        import torch

        torch.ops.load_library(path)
        self.ops = torch.ops.llmpack_simt
        self._c = ctypes.CDLL(path)
        self._c.llmpack_simt_set_schedule.argtypes = [ctypes.c_char_p]
        self._c.llmpack_simt_set_schedule.restype = ctypes.c_int
        self._c.llmpack_simt_schedule.restype = ctypes.c_char_p
        self._c.llmpack_simt_counters.argtypes = [ctypes.POINTER(ctypes.c_ulonglong)]
        self.is_asan = bool(self._c.llmpack_simt_is_asan())

    def __getattr__(self, name):
        return getattr(self.ops, name)

    def set_schedule(self, spec: str) -> None:
        assert self._c.llmpack_simt_set_schedule(spec.encode()) == 0, spec

    def schedule(self) -> str:
        return self._c.llmpack_simt_schedule().decode()

    def counters(self) -> dict:
        a = (ctypes.c_ulonglong * 4)()
        self._c.llmpack_simt_counters(a)
        return dict(zip(("launches", "blocks", "threads", "switches"), a))

    def registered(self) -> list[str]:
        """Ops with a CUDA path (in this library: a kernel for CPU tensors).
        CPU-only ops (encoders, official-format readers) have a schema here but
        no kernel."""
        import torch

        return sorted(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names()
                      if n.startswith("llmpack_simt::") and torch._C._dispatch_has_kernel_for_dispatch_key(n, "CPU"))


_loaded: dict[str, Ops] = {}


def current_kind() -> str:
    """"asan" inside the ASan subprocess of tests/test_emulator_asan.py, else "plain"."""
    return "asan" if os.environ.get("LLMPACK_SIMT_UNDER_ASAN") == "1" else "plain"


def load_ops(kind: str | None = None) -> Ops:
    kind = kind or current_kind()
    i = info(kind)
    if kind not in _loaded:
        _loaded[kind] = Ops(i["library"])
    return _loaded[kind]


def run(cmd: list[str], env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)


def asan_env(info_: dict) -> dict:
    """Environment for a Python process that loads an ASan-instrumented library."""
    # libasan must come first; libstdc++ with it, or ASan cannot find the real
    # __cxa_throw (python does not link libstdc++) and aborts on the first throw.
    preload = [info_.get("asan_runtime", ""), info_.get("stdcxx_runtime", "")]
    for rt in preload:
        if not rt or not os.path.exists(rt):
            pytest.fail(f"runtime to preload not found ({rt!r}); rebuild with scripts/build_simt.sh asan",
                        pytrace=False)
    return {
        "LD_PRELOAD": " ".join(preload),
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:halt_on_error=1:print_summary=1",
        "LLMPACK_SIMT_ASAN_DIR": info_["dir"],
        "LLMPACK_SIMT_UNDER_ASAN": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def python() -> str:
    return sys.executable
