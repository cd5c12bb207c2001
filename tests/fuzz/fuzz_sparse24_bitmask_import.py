"""Fuzz target: llmpack.io.from_sparse24_bitmask, the importer of
compressed-tensors' sparse-24-bitmask tensors (compressed, bitmask, shape as
read from a checkpoint: shapes and bits arbitrary)."""
from __future__ import annotations

import torch

import llmpack
from llmpack.io import from_sparse24_bitmask

from _fuzz import DTYPES, Input, Seed, expect_clear_error, same_bits, small_int_values, uint8_tensor

NAMES = ("compressed", "bitmask", "shape", "row")


def dense_from_bitmask(compressed, bitmask, r, c):
    """Independent oracle: scatter each row's values to the set bits, in order."""
    bits = torch.tensor([[(int(b) >> j) & 1 for b in row for j in range(8)] for row in bitmask.tolist()],
                        dtype=torch.bool).reshape(r, 8 * bitmask.shape[1])[:, :c]
    out = torch.zeros(r, c, dtype=compressed.dtype)
    for i in range(r):
        out[i, bits[i]] = compressed[i, : int(bits[i].sum())]
    return out


def seeds():
    out = []
    for r, c, d in [(1, 4, 0), (3, 12, 1), (8, 64, 2), (2, 36, 0)]:
        g = torch.Generator().manual_seed(r * c)
        keep = torch.rand(r, c // 4, 4, generator=g).argsort(-1)[..., :2]
        mask = torch.zeros(r, c // 4, 4, dtype=torch.bool).scatter_(-1, keep, True).reshape(r, c)
        padded = torch.cat([mask, torch.zeros(r, (-c) % 8, dtype=torch.bool)], 1).reshape(r, -1, 8)
        bitmask = (padded.to(torch.uint8) << torch.arange(8, dtype=torch.uint8)).sum(-1).to(torch.uint8)
        out.append(Seed().int_in(0, r).int_in(0, c).byte(d).byte(0).raw(bitmask.flatten().numpy().tobytes())
                   .raw(bytes(range(9)) * 8).bytes())
    return out


def TestOneInput(data: bytes):
    src = Input(data)
    r, c = src.int_in(0, 9), src.int_in(0, 72)
    dtype = src.choice(DTYPES)
    jitter = src.byte() % 16
    shape = [[r], [c]]
    comp_shape, mask_shape = (r, c // 2), (r, (c + 7) // 8)
    if jitter == 1:
        shape = [[r]]                       # a malformed shape tensor
    elif jitter == 2:
        comp_shape = (r, c // 2 + 1)
    elif jitter == 3:
        mask_shape = (r + 1, (c + 7) // 8)
    elif jitter == 4:
        shape = [[-r - 1], [c]]
    bitmask = uint8_tensor(src.take(mask_shape[0] * mask_shape[1]), mask_shape)
    compressed = small_int_values(src, comp_shape, dtype)
    try:
        values, meta = from_sparse24_bitmask(compressed, bitmask, torch.tensor(shape))
    except Exception as err:  # noqa: BLE001
        expect_clear_error(err, NAMES)
        return
    assert jitter not in (1, 2, 3, 4) and c % 4 == 0, "a malformed shape was accepted"
    dense = dense_from_bitmask(compressed, bitmask, r, c)
    got = llmpack.sparse24_decompress(values, meta)
    assert same_bits(got, dense), "imported weight differs from the bitmask's"
