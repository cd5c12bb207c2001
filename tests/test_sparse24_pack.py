"""2:4 pack/unpack ops vs the reference: exact at every ISA level, bad input rejected."""
from __future__ import annotations

import pytest
import torch

import llmpack
from llmpack.reference import sparse24 as ref

from conftest import check_op

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(1, 4), (8, 4), (7, 12), (1, 8), (97, 4096), (3, 4092), (4095, 4), (0, 8), (5, 0)]


def random_24(n, k, dtype, seed=0):
    """Random 2:4 weight with every kind of group: 0, 1 or 2 nonzeros, at any positions."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g).to(dtype)
    groups = w.view(n, k // 4, 4)
    keep = torch.rand(n, k // 4, 4, generator=g).argsort(-1)[..., :2]
    mask = torch.zeros(n, k // 4, 4, dtype=torch.bool).scatter_(-1, keep, True)
    mask &= torch.rand(n, k // 4, 4, generator=g) > 0.15  # some groups keep fewer than 2
    return torch.where(mask, groups, torch.zeros((), dtype=dtype)).view(n, k)  # +0, not -0, where dropped


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_roundtrip_matches_reference(isa, shape, dtype):
    w = random_24(*shape, dtype)
    values, meta = llmpack.sparse24_compress(w)
    rv, rm = ref.sparse24_compress(w)
    assert values.dtype == dtype and meta.dtype == torch.uint8
    assert torch.equal(meta, rm), "metadata differs from the reference"
    assert torch.equal(values.view(torch.uint8), rv.view(torch.uint8))
    back = llmpack.sparse24_decompress(values, meta)
    assert torch.equal(back.view(torch.uint8), w.view(torch.uint8)), "round trip not bit-exact"
    assert torch.equal(ref.sparse24_decompress(values, meta), w)


def test_special_values_roundtrip(isa):
    # NaN and Inf count as nonzero and survive bit-exactly; -0.0 counts as zero.
    w = torch.tensor([[float("nan"), 0.0, float("-inf"), 0.0, -0.0, 1.0, 0.0, 0.0]])
    values, meta = llmpack.sparse24_compress(w)
    back = llmpack.sparse24_decompress(values, meta)
    assert torch.equal(back.view(torch.int32), w.view(torch.int32))


def test_noncontiguous_input(isa):
    w = random_24(16, 32, torch.float32)
    wt = w.t().contiguous().t()  # same values, column-major strides
    assert not wt.is_contiguous()
    v, m = llmpack.sparse24_compress(wt)
    assert torch.equal(llmpack.sparse24_decompress(v, m), w)


def test_pad_k():
    w = torch.randn(3, 7)
    p = llmpack.pad_k(w)
    assert p.shape == (3, 8) and torch.equal(p[:, :7], w) and not p[:, 7].any()


def test_opcheck_and_compile():
    w = random_24(8, 24, torch.float16)
    check_op(torch.ops.llmpack.sparse24_compress.default, (w,))
    v, m = llmpack.sparse24_compress(w)
    check_op(torch.ops.llmpack.sparse24_decompress.default, (v, m))


def test_not_24_names_first_bad_group(isa):
    w = random_24(64, 64, torch.float32)
    w[37, 20:24] = torch.tensor([1.0, 2.0, 3.0, 0.0])  # 3 nonzeros in row 37, group 5
    w[40, 0:4] = 1.0
    with pytest.raises(RuntimeError, match=r"not 2:4 sparse: row 37, group 5 \(columns 20\.\.23\)"):
        llmpack.sparse24_compress(w)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: torch.zeros(4, 6), r"K=6 must be a multiple of 4"),
        (lambda: torch.zeros(2, 4, 4), r"W must be 2-D"),
        (lambda: torch.zeros(4, 8, dtype=torch.int32), r"W must be float32 or float16 or bfloat16, got int32"),
        (lambda: torch.zeros(4, 8, dtype=torch.float64), r"got float64"),
    ],
)
def test_compress_bad_input(make, match):
    with pytest.raises(RuntimeError, match=match):
        llmpack.sparse24_compress(make())


def test_decompress_bad_input(isa):
    v, m = llmpack.sparse24_compress(random_24(4, 16, torch.float32))
    with pytest.raises(RuntimeError, match=r"meta must have shape \[4, 2\]"):
        llmpack.sparse24_decompress(v, m[:, :1])
    with pytest.raises(RuntimeError, match=r"meta must be uint8"):
        llmpack.sparse24_decompress(v, m.to(torch.int32))
    with pytest.raises(RuntimeError, match=r"values must be float32"):
        llmpack.sparse24_decompress(v.to(torch.int32), m)
    bad = m.clone()
    bad[2, 1] = 0x55  # nibble 5 = positions (1, 1): not a valid pair
    with pytest.raises(RuntimeError, match=r"corrupted meta at row 2, byte 1"):
        llmpack.sparse24_decompress(v, bad)


def test_decompress_rejects_nonzero_padding_nibble(isa):
    v, m = llmpack.sparse24_compress(random_24(2, 12, torch.float16))  # 3 groups: last high nibble is padding
    bad = m.clone()
    bad[1, 1] |= 0x40
    with pytest.raises(RuntimeError, match=r"corrupted meta at row 1, byte 1"):
        llmpack.sparse24_decompress(v, bad)


def test_uses_torch_threads(isa):
    # Same answer whatever the thread count (work is split by rows).
    w = random_24(257, 64, torch.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = llmpack.sparse24_compress(w)
        torch.set_num_threads(max(2, before))
        b = llmpack.sparse24_compress(w)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_misaligned_tensors_from_a_file_buffer_are_read_correctly(isa):
    """A tensor viewed from a file buffer at an odd offset (safetensors with a
    hostile header can produce one) is copied to aligned memory first: the
    kernels read elements through typed pointers."""
    torch.manual_seed(0)
    w = torch.randn(6, 16)
    w.view(6, 4, 4)[..., 2:] = 0
    values, meta = llmpack.sparse24_compress(w)
    raw = bytearray(1) + bytearray(values.numpy().tobytes())
    odd = torch.frombuffer(raw, dtype=torch.float32, offset=1, count=values.numel()).view(values.shape)
    assert odd.data_ptr() % 4 != 0
    assert torch.equal(llmpack.sparse24_decompress(odd, meta), w)
    x = torch.randn(3, 16)
    torch.testing.assert_close(llmpack.sparse24_linear(x, odd, meta), llmpack.sparse24_linear(x, values, meta))
