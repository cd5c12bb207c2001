"""Fuzz target: llmpack.io.from_torch_semi_structured, the importer of torch's
SparseSemiStructuredTensor CUTLASS tensors (packed values + int16 metadata
words as read from a file)."""
from __future__ import annotations

import torch

import llmpack
from llmpack.io import from_torch_semi_structured, to_torch_semi_structured

from _fuzz import Input, Seed, expect_clear_error, same_bits, small_int_values, uint8_tensor

NAMES = ("meta", "packed", "W", "N %", "float16/bfloat16")
DT = (torch.float16, torch.bfloat16, torch.float32)


def seeds():
    out = []
    for n32, k64, d in [(1, 1, 0), (1, 2, 1), (2, 1, 0)]:
        n, k = 32 * n32, 64 * k64
        g = torch.Generator().manual_seed(n + k)
        w = torch.randint(-4, 5, (n, k // 4, 4), generator=g).to(DT[d])
        w[..., :2] = 0
        w = w.reshape(n, k)
        _, meta = to_torch_semi_structured(*llmpack.sparse24_compress(w))
        out.append(Seed().int_in(0, n32).int_in(0, k64).byte(d).byte(0)
                   .raw(meta.contiguous().view(torch.uint8).flatten().numpy().tobytes()).raw(bytes(range(9)) * 8).bytes())
    return out


def TestOneInput(data: bytes):
    src = Input(data)
    n32, k64 = src.int_in(0, 2), src.int_in(0, 2)
    dtype = src.choice(DT)
    jitter = src.byte() % 16
    n, k = 32 * n32 + (jitter == 1), 64 * k64 + 4 * (jitter == 2)
    meta_cols = k // 16 + (jitter == 3)
    raw = uint8_tensor(src.take(2 * n * meta_cols), (n, 2 * meta_cols))
    meta = raw.view(torch.int16) if meta_cols else torch.zeros(n, 0, dtype=torch.int16)
    packed = small_int_values(src, (n, k // 2), dtype)
    try:
        values, meta8 = from_torch_semi_structured(packed, meta)
    except Exception as err:  # noqa: BLE001
        expect_clear_error(err, NAMES)
        return
    assert jitter not in (1, 2, 3) and dtype != torch.float32, "a malformed input was accepted"
    from torch.sparse._semi_structured_conversions import sparse_semi_structured_to_dense_cutlass

    dense = sparse_semi_structured_to_dense_cutlass(packed, meta)
    assert same_bits(llmpack.sparse24_decompress(values, meta8), dense), "imported weight differs from torch's decode"
