"""sparse24_meta_to_cutlass: our CPU (and, where present, CUDA) reorder of the
2:4 metadata into CUTLASS's sm80 sparse-GEMM layout, checked byte for byte
against the plain-PyTorch reference written from CUTLASS's documented reorder
rules (python/llmpack/reference/sparse24_cutlass.py)."""
from __future__ import annotations

import pytest
import torch

import llmpack  # noqa: F401  (loads the ops)
from llmpack.reference import sparse24_cutlass as ref

from conftest import check_op

op = torch.ops.llmpack.sparse24_meta_to_cutlass.default

# (N, K): aligned ones (what the GEMM takes) and odd ones (padding in rows,
# in words per row, and the canonical padding nibble when K/4 is odd).
SHAPES = [(32, 64), (64, 128), (96, 4096), (1, 4), (7, 12), (31, 60), (33, 100), (45, 36),
          (70, 260), (128, 1000), (5, 8), (3, 16), (40, 48)]


def meta_cols(k: int) -> int:
    return (k // 4 + 1) // 2


def random_meta(n: int, k: int, seed: int) -> torch.Tensor:
    """Valid canonical meta: compress a random 2:4 weight."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    keep = torch.rand(n, k // 4, 4, generator=g).argsort(-1)[..., :2]
    mask = torch.zeros(n, k // 4, 4, dtype=torch.bool).scatter_(-1, keep, True).reshape(n, k)
    _, meta = llmpack.sparse24_compress(w * mask)
    return meta


def expected_bytes(n: int, mcols: int) -> int:
    return (-(-n // 32) * 32) * (-(-mcols // 4) * 4)


@pytest.mark.parametrize("n,k", SHAPES)
def test_cpu_matches_reference(n, k):
    meta = random_meta(n, k, seed=n * 1000 + k)
    out = op(meta)
    assert out.dtype == torch.uint8 and out.dim() == 1
    assert out.numel() == expected_bytes(n, meta_cols(k))
    assert torch.equal(out, ref.sparse24_meta_to_cutlass(meta))


VALID = torch.tensor([0x4, 0x8, 0xC, 0x9, 0xD, 0xE], dtype=torch.uint8)


def random_nibbles(n: int, mcols: int, seed: int) -> torch.Tensor:
    """Random valid nibbles in every position, each row's last nibble 0 (as
    padding) in about half the rows."""
    g = torch.Generator().manual_seed(seed)
    nib = VALID[torch.randint(0, 6, (n, 2 * mcols), generator=g)]
    nib[torch.rand(n, generator=g) < 0.5, -1] = 0
    return nib[:, 0::2] | (nib[:, 1::2] << 4)


@pytest.mark.parametrize("n,mcols", [(1, 1), (33, 7), (64, 8), (9, 3)])
def test_moves_bytes_intact(n, mcols):
    """The reorder only moves bytes: every input byte arrives once, the rest is zero padding."""
    meta = random_nibbles(n, mcols, seed=n)
    out = op(meta)
    assert torch.equal(out, ref.sparse24_meta_to_cutlass(meta))
    padding = torch.zeros(out.numel() - meta.numel(), dtype=torch.uint8)
    assert torch.equal(out.sort().values, torch.cat([meta.flatten(), padding]).sort().values)


@pytest.mark.parametrize("bad_nibble", [0x0, 0x5, 0x6, 0x3])    # i0 == i1, or i0 > i1
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_corrupted_meta_raises(bad_nibble, where):
    n, mcols = 40, 6
    meta = random_nibbles(n, mcols, seed=7)
    meta[:, -1] &= 0x0F                          # no padding zeros: K/4 could be odd or even
    row, col = {"first": (0, 0), "middle": (17, 3), "last": (39, mcols - 1)}[where]
    if where == "last":
        meta[row, col] = (meta[row, col] & 0x0F) | (bad_nibble << 4)  # the possible padding nibble
    else:
        meta[row, col] = (meta[row, col] & 0xF0) | bad_nibble
    if row + 1 < n:
        meta[row + 1:, 0] = 0x00                 # later rows bad too: the first one is reported
    if where == "last" and bad_nibble == 0x0:
        op(meta)                                 # a zero last nibble is padding when K/4 is odd
        return
    with pytest.raises(RuntimeError, match=rf"sparse24_meta_to_cutlass: corrupted meta in weight row {row}\b"):
        op(meta)


def test_aligned_is_a_permutation():
    meta = random_meta(64, 256, seed=1)
    out = op(meta)
    assert out.numel() == meta.numel()
    assert torch.equal(out.sort().values, meta.flatten().sort().values)


def test_register_structure():
    """The layout fact the kernels rely on (csrc/sparse24/sparse24_reorder.h):
    in each 128-byte block (32 rows x 32 columns of K), 32-bit word l holds
    the 16-bit word (row r, K half l % 2) in its low half and row r + 8 in its
    high half, with r = l // 4 + 16 * ((l // 2) % 2)."""
    n, k = 64, 64                                 # 2 row blocks x 2 k-steps
    rows, words = n, k // 16
    # Tag every 16-bit word with a distinct word of four valid nibbles (base-6 digits).
    t = torch.arange(rows * words, dtype=torch.int64)
    nibbles = VALID.to(torch.int64)[torch.stack([t // 6**j % 6 for j in range(4)], -1)]    # [rows*words, 4]
    tags = (nibbles * torch.tensor([1, 16, 256, 4096])).sum(-1).view(rows, words)
    meta = torch.stack([tags & 0xFF, tags >> 8], -1).reshape(rows, 2 * words).to(torch.uint8)
    out = op(meta).to(torch.int64)
    got = (out[0::2] | (out[1::2] << 8)).view(k // 32, n // 32, 32, 2)  # [kstep, block, lane, half]
    for kstep in range(k // 32):
        for block in range(n // 32):
            for lane in range(32):
                r = block * 32 + lane // 4 + 16 * ((lane // 2) % 2)
                c = 2 * kstep + lane % 2
                assert int(got[kstep, block, lane, 0]) == int(tags[r, c])
                assert int(got[kstep, block, lane, 1]) == int(tags[r + 8, c])


def test_empty_and_noncontiguous():
    assert op(torch.zeros(0, 4, dtype=torch.uint8)).numel() == 0
    assert op(torch.zeros(3, 0, dtype=torch.uint8)).numel() == 0
    meta = random_meta(48, 96, seed=2)
    strided = meta.t().contiguous().t()           # same values, column-major storage
    assert not strided.is_contiguous()
    assert torch.equal(op(strided), op(meta))


def test_bad_input():
    with pytest.raises(RuntimeError, match="sparse24_meta_to_cutlass"):
        op(torch.zeros(4, 4, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="sparse24_meta_to_cutlass"):
        op(torch.zeros(4, dtype=torch.uint8))


def test_opcheck():
    check_op(op, (random_meta(40, 72, seed=3),))


def test_first_bad_row_across_threads():
    """Rows are split across torch's pool: the lowest bad row is reported."""
    meta = random_nibbles(20000, 4, seed=11)
    meta[:, -1] &= 0x0F
    meta[19000, 1] = 0x55
    meta[15000, 2] = 0x11
    with pytest.raises(RuntimeError, match=r"weight row 15000\b"):
        op(meta)
    meta[300, 0] = 0x00
    with pytest.raises(RuntimeError, match=r"weight row 300\b"):
        op(meta)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("n,k", SHAPES)
def test_cuda_matches_cpu(n, k):
    meta = random_meta(n, k, seed=k)
    assert torch.equal(op(meta.cuda()).cpu(), op(meta))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_corrupted_meta_raises():
    meta = random_nibbles(70, 5, seed=5)
    meta[:, -1] &= 0x0F
    meta[33, 2] = 0x77
    with pytest.raises(RuntimeError, match=r"weight row 33\b"):
        op(meta.cuda())
