"""Fuzz target: sparse24_linear(x, values, meta, bias) on arbitrary meta bytes,
shapes, row counts M (every kernel family: gather, tile, dense crossover) and
ISA levels. Values are small integers, so kernel and reference agree exactly."""
from __future__ import annotations

import torch

import llmpack
from llmpack import _lib
from llmpack.reference import sparse24 as ref

from _fuzz import Input, Seed, expect_clear_error, same_bits, small_int_values
from fuzz_sparse24_decompress import meta_is_valid, packed_args, seed_bytes

NAMES = ("meta", "values", "x", "bias")
ISAS = _lib.supported_isas()
M_CHOICES = (1, 2, 4, 7, 8, 16, 33)


def seeds():
    return [s + Seed().byte(mi).byte(i).byte(i % 2).bytes()
            for i, (mi, s) in enumerate(zip(range(len(M_CHOICES)), [seed_bytes(8, 40, i % 3, i) for i in range(7)]))]


def TestOneInput(data: bytes):
    src = Input(data)
    values, meta, groups, shapes_match = packed_args(src)
    m = src.choice(M_CHOICES)
    _lib.set_isa(src.choice(ISAS))
    with_bias = src.byte() % 2 == 1
    x = small_int_values(src, (m, values.shape[1] * 2), values.dtype)
    bias = small_int_values(src, (values.shape[0],), values.dtype) if with_bias else None
    try:
        out = llmpack.sparse24_linear(x, values, meta, bias)
    except Exception as err:  # noqa: BLE001
        expect_clear_error(err, NAMES)
        assert not (shapes_match and meta_is_valid(meta, groups)), f"valid input rejected: {err}"
        return
    assert shapes_match and meta_is_valid(meta, groups), "corrupted meta or a bad shape was accepted"
    expected = ref.sparse24_linear(x, values, meta, bias)
    assert same_bits(out, expected), "result differs from the reference"
