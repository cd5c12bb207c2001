"""Fuzz target: sparse24_decompress(values, meta) on arbitrary meta bytes and
shapes (meta is what a user reads from a checkpoint)."""
from __future__ import annotations

import torch

import llmpack
from llmpack.reference import sparse24 as ref

from _fuzz import DTYPES, Input, Seed, expect_clear_error, same_bits, small_int_values, uint8_tensor

NAMES = ("meta", "values")


def meta_is_valid(meta: torch.Tensor, groups: int) -> bool:
    """Every group's nibble encodes i0 < i1, and the padding nibble (odd group
    count) is 0: the documented contract (csrc/sparse24/sparse24.h)."""
    if meta.shape[0] == 0 or groups == 0:
        return True
    nib = torch.stack([meta & 0xF, meta >> 4], -1).reshape(meta.shape[0], -1)
    real = nib[:, :groups]
    ok = bool(((real & 3) < (real >> 2)).all())
    return ok and (groups % 2 == 0 or bool((nib[:, groups] == 0).all()))


def packed_args(src: Input):
    """(values, meta, groups, shapes_match) from the bytes; the meta shape is
    off by one row or column now and then, to exercise the shape checks."""
    n, groups = src.int_in(0, 9), src.int_in(0, 40)
    dtype = src.choice(DTYPES)
    jitter = src.byte()
    rows, cols = n, (groups + 1) // 2
    if jitter % 16 == 1:
        rows += 1
    elif jitter % 16 == 2:
        cols = max(0, cols - 1) if cols else 1
    meta = uint8_tensor(src.take(rows * cols), (rows, cols))
    values = small_int_values(src, (n, 2 * groups), dtype)
    return values, meta, groups, (rows, cols) == (n, (groups + 1) // 2)


def seed_bytes(n, groups, dtype_index, dense_seed=0) -> bytes:
    """A valid packed weight (from a real 2:4 pruned W) in this target's layout."""
    g = torch.Generator().manual_seed(dense_seed)
    w = torch.randint(-4, 5, (n, groups, 4), generator=g).float()
    w[..., 2:] = 0  # any 2:4 pattern; the packer picks the nibbles
    w = w[..., torch.randperm(4, generator=g)].reshape(n, 4 * groups)
    _, meta = ref.sparse24_compress(w)
    return (Seed().int_in(0, n).int_in(0, groups).byte(dtype_index).byte(0)
            .raw(meta.flatten().numpy().tobytes()).raw(bytes(range(9)) * 8).bytes())


def seeds():
    return [seed_bytes(n, gr, d, i) for i, (n, gr, d) in enumerate([(1, 1, 0), (3, 5, 1), (8, 40, 2), (9, 7, 0), (0, 3, 1)])]


def TestOneInput(data: bytes):
    values, meta, groups, shapes_match = packed_args(Input(data))
    try:
        out = llmpack.sparse24_decompress(values, meta)
    except Exception as err:  # noqa: BLE001 - the oracle decides
        expect_clear_error(err, NAMES)
        assert not (shapes_match and meta_is_valid(meta, groups)), f"valid input rejected: {err}"
        return
    assert shapes_match and meta_is_valid(meta, groups), "corrupted meta or a bad shape was accepted"
    assert same_bits(out, ref.sparse24_decompress(values, meta)), "result differs from the reference"
