"""Interop with compressed-tensors' sparse-24-bitmask layout (round trips and
an independent oracle built from that format's documented definition)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import llmpack
from llmpack.io import from_sparse24_bitmask, to_sparse24_bitmask


def two_of_four(r, c, dtype=torch.float16, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(r, c, generator=g).to(dtype).view(r, c // 4, 4)
    keep = w.abs().float().topk(2, -1).indices
    mask = torch.zeros_like(w, dtype=torch.bool).scatter_(-1, keep, True)
    return torch.where(mask, w, torch.zeros((), dtype=dtype)).view(r, c), mask.view(r, c)


def bitmask_oracle(W, mask):
    """The format by its definition: kept values row-major, numpy.packbits little."""
    r, c = W.shape
    return W[mask].reshape(r, c // 2), torch.from_numpy(np.packbits(mask.numpy(), axis=-1, bitorder="little"))


@pytest.mark.parametrize("r,c", [(1, 4), (7, 12), (5, 8), (97, 4096), (3, 36)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_matches_format_definition_and_round_trips(r, c, dtype):
    W, mask = two_of_four(r, c, dtype)
    values, meta = llmpack.sparse24_compress(W)
    out = to_sparse24_bitmask(values, meta)
    comp, bits = bitmask_oracle(W, mask)
    assert out["shape"].flatten().tolist() == [r, c]
    assert torch.equal(out["compressed"], comp) and torch.equal(out["bitmask"], bits)
    v2, m2 = from_sparse24_bitmask(comp, bits, [r, c])
    assert torch.equal(v2, values) and torch.equal(m2, meta)
    assert torch.equal(llmpack.sparse24_decompress(v2, m2), W)


def test_groups_with_zeros_round_trip():
    W = torch.zeros(2, 8)
    W[0, 1] = 3.0
    values, meta = llmpack.sparse24_compress(W)
    out = to_sparse24_bitmask(values, meta)
    v2, m2 = from_sparse24_bitmask(out["compressed"], out["bitmask"], out["shape"])
    assert torch.equal(llmpack.sparse24_decompress(v2, m2), W)


def test_rejects_bad_bitmask():
    W, mask = two_of_four(3, 8)
    comp, bits = bitmask_oracle(W, mask)
    bad = bits.clone()
    bad[2, 0] |= 0x0F  # 4 bits set in row 2, group 0
    with pytest.raises(ValueError, match=r"row 2, group 0 \(columns 0..3\) does not keep exactly 2 of 4"):
        from_sparse24_bitmask(comp, bad, [3, 8])
    with pytest.raises(ValueError, match="compressed has shape"):
        from_sparse24_bitmask(comp[:, :2], bits, [3, 8])
    with pytest.raises(ValueError, match="bitmask must be uint8"):
        from_sparse24_bitmask(comp, bits.to(torch.int32), [3, 8])
    with pytest.raises(ValueError, match="not a multiple of 4"):
        from_sparse24_bitmask(comp, bits, [3, 6])


def test_rejects_corrupted_meta():
    W, _ = two_of_four(2, 8)
    values, meta = llmpack.sparse24_compress(W)
    meta = meta.clone()
    meta[1, 0] = 0x00
    with pytest.raises(ValueError, match="corrupted"):
        to_sparse24_bitmask(values, meta)


# --------------------------------------------------------------------------
# torch's SparseSemiStructuredTensor (CUTLASS backend) metadata
# --------------------------------------------------------------------------
from torch.sparse._semi_structured_conversions import (  # noqa: E402
    sparse_semi_structured_from_dense_cutlass,
    sparse_semi_structured_to_dense_cutlass,
)

from llmpack.io import from_torch_semi_structured, to_torch_semi_structured  # noqa: E402


@pytest.mark.parametrize("r,c", [(32, 64), (64, 128), (96, 576)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_semi_structured_matches_torch_and_round_trips(r, c, dtype):
    W, _ = two_of_four(r, c, dtype)
    values, meta = llmpack.sparse24_compress(W)
    packed, tmeta = to_torch_semi_structured(values, meta)
    ref_packed, ref_meta = sparse_semi_structured_from_dense_cutlass(W)  # torch's own converter
    assert torch.equal(packed, ref_packed) and torch.equal(tmeta, ref_meta)
    assert torch.equal(sparse_semi_structured_to_dense_cutlass(packed, tmeta), W)
    v2, m2 = from_torch_semi_structured(ref_packed, ref_meta)
    assert torch.equal(v2, values) and torch.equal(m2, meta)


def test_torch_semi_structured_rejects_unsupported():
    W, _ = two_of_four(8, 64)
    v, m = llmpack.sparse24_compress(W)
    with pytest.raises(ValueError, match="N % 32 == 0"):
        to_torch_semi_structured(v, m)
    W, _ = two_of_four(32, 64, torch.float32)
    v, m = llmpack.sparse24_compress(W)
    with pytest.raises(ValueError, match="float16/bfloat16"):
        to_torch_semi_structured(v, m)
    W, _ = two_of_four(32, 64)
    v, m = llmpack.sparse24_compress(W)
    with pytest.raises(ValueError, match="meta must be int16"):
        from_torch_semi_structured(v, torch.zeros(32, 3, dtype=torch.int16))
