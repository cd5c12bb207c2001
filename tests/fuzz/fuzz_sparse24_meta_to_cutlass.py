"""Fuzz target: sparse24_meta_to_cutlass(meta), the reorder into CUTLASS's
sparse-GEMM metadata layout, on arbitrary meta bytes and shapes."""
from __future__ import annotations

import torch

from llmpack import _ops
from llmpack.reference import sparse24_cutlass as ref

from _fuzz import Input, Seed, expect_clear_error, uint8_tensor
from fuzz_sparse24_decompress import meta_is_valid

NAMES = ("meta",)


def valid_without_k(meta, cols) -> bool:
    """The op cannot know K: every nibble must be valid, except that the last
    one of each row may be 0 (the padding nibble of an odd group count), row
    by row (sparse24_ops.cpp: meta_reorder_params)."""
    return all(meta_is_valid(row[None], 2 * cols) or (cols > 0 and meta_is_valid(row[None], 2 * cols - 1))
               for row in meta)


def seeds():
    out = []
    for n, cols in [(1, 1), (32, 8), (33, 3), (64, 16), (5, 2)]:
        nib = torch.tensor([0x4, 0x8, 0xC, 0x9, 0xD, 0xE], dtype=torch.uint8)  # the six valid nibbles
        meta = nib[torch.arange(n * cols * 2) % 6].reshape(-1, 2)
        meta = (meta[:, 0] | (meta[:, 1] << 4)).reshape(n, cols)
        out.append(Seed().int_in(0, n).int_in(0, cols).raw(meta.flatten().numpy().tobytes()).bytes())
    return out


def TestOneInput(data: bytes):
    src = Input(data)
    n, cols = src.int_in(0, 70), src.int_in(0, 20)
    meta = uint8_tensor(src.take(n * cols), (n, cols))
    try:
        out = _ops.sparse24_meta_to_cutlass(meta)
    except Exception as err:  # noqa: BLE001
        expect_clear_error(err, NAMES)
        assert not valid_without_k(meta, cols), f"valid meta rejected: {err}"
        return
    assert valid_without_k(meta, cols), "corrupted meta was accepted"
    assert torch.equal(out, ref.sparse24_meta_to_cutlass(meta)), "result differs from the reference"
