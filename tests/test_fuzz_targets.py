"""The fuzz targets (tests/fuzz/fuzz_*.py) in the ordinary test run: each
target's seeds, every stored crasher (tests/fuzz/regressions/<target>/: inputs
that once crashed a target, kept so the fix stays fixed) and a few hundred
random byte strings go through the target's oracle (clear error or the
reference's result). The coverage-guided runs are tests/fuzz/run.py's."""
from __future__ import annotations

import glob
import importlib
import os
import random
import sys

import pytest

FUZZ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz")
sys.path.insert(0, FUZZ)

TARGETS = sorted(os.path.basename(p)[len("fuzz_"):-3] for p in glob.glob(os.path.join(FUZZ, "fuzz_*.py")))


@pytest.fixture(autouse=True)
def _restore_isa():
    """The linear target picks an ISA level per input (a process-wide switch)."""
    from llmpack import _lib

    before = _lib.active_isa()
    yield
    _lib.set_isa(before)


def test_every_target_is_found():
    assert len(TARGETS) >= 5, TARGETS


@pytest.mark.parametrize("name", TARGETS)
def test_seeds_and_regressions_pass_the_oracle(name):
    target = importlib.import_module(f"fuzz_{name}")
    stored = sorted(glob.glob(os.path.join(FUZZ, "regressions", name, "*")))
    inputs = list(target.seeds()) + [open(p, "rb").read() for p in stored]
    assert inputs
    for data in inputs:
        target.TestOneInput(data)


@pytest.mark.parametrize("name", TARGETS)
def test_random_bytes_pass_the_oracle(name):
    target = importlib.import_module(f"fuzz_{name}")
    rng = random.Random(name)
    seeds = target.seeds()
    for i in range(300):
        if i % 2:  # a seed with a few bytes flipped: mostly well-formed, a little corrupted
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        else:
            data = rng.randbytes(rng.randint(0, 300))
        target.TestOneInput(data)
