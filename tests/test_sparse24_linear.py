"""sparse24_linear vs the reference (dense matmul of the decompressed weight)
at odd shapes, every dtype and ISA level; bad input rejected clearly."""
from __future__ import annotations

import pytest
import torch

import llmpack
from llmpack.reference import sparse24 as ref

from conftest import assert_close_dot, check_op

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (M, N, K): decode and prefill-ish M, odd N, K with and without a SIMD tail.
SHAPES = [(1, 8, 4), (1, 7, 12), (3, 97, 4096), (7, 33, 100), (16, 5, 36), (1, 1, 4092), (40, 9, 64), (1, 257, 576),
          (9, 33, 128), (16, 300, 576),  # these two: M >= 8 with K % 32 == 0 (AMX tiles)
          (5, 13, 80),  # an odd number of 16-K steps (AVX2's unpaired last step) and a 16-wide tail at 32
          (1, 640, 4096), (6, 640, 4096)]  # W > 2 MiB: the software-prefetching kernels


def packed(n, k, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g).to(dtype).view(n, k // 4, 4)
    keep = w.abs().float().topk(2, -1).indices
    mask = torch.zeros_like(w, dtype=torch.bool).scatter_(-1, keep, True)
    W = torch.where(mask, w, torch.zeros((), dtype=dtype)).view(n, k)
    return W, *llmpack.sparse24_compress(W)


def check(y, x, v, meta, bias=None):
    """Compare with the reference; tolerance from |x| @ |W|^T (+ |bias|)."""
    r = ref.sparse24_linear(x, v, meta, bias)
    W = ref.sparse24_decompress(v, meta)
    mag = x.float().abs() @ W.float().abs().t()
    if bias is not None:
        mag = mag + bias.float().abs()
    assert_close_dot(y, r, mag, W.shape[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_matches_reference(isa, m, n, k, dtype, with_bias):
    W, v, meta = packed(n, k, dtype)
    x = torch.randn(m, k).to(dtype)
    bias = torch.randn(n).to(dtype) if with_bias else None
    check(llmpack.sparse24_linear(x, v, meta, bias), x, v, meta, bias)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 31, 32, 33, 64, 65, 200])
def test_both_sides_of_the_dense_crossover(isa, m, dtype):
    # Small M streams the packed weight; large M unpacks W tile by tile and
    # uses torch's GEMM (several tiles here: N=300 with K=4096). Both must
    # agree with the reference.
    W, v, meta = packed(300, 4096, dtype)
    x = torch.randn(m, 4096).to(dtype)
    b = torch.randn(300).to(dtype)
    check(llmpack.sparse24_linear(x, v, meta, b), x, v, meta, b)


def test_batched_and_strided_x(isa):
    W, v, meta = packed(10, 32, torch.float32)
    x = torch.randn(2, 3, 64)[..., ::2]  # [2, 3, 32], non-contiguous
    y = llmpack.sparse24_linear(x, v, meta)
    assert y.shape == (2, 3, 10)
    check(y, x, v, meta)


def test_x_view_with_storage_offset(isa):
    # Contiguous but not at the start of its storage: the 3-D -> 2-D view must keep the offset.
    W, v, meta = packed(12, 64, torch.bfloat16)
    x = torch.randn(4, 3, 64).to(torch.bfloat16)[1:]
    y = llmpack.sparse24_linear(x, v, meta)
    assert y.shape == (3, 3, 12)
    check(y, x, v, meta)


def test_empty_inputs():
    W, v, meta = packed(6, 8, torch.float32)
    assert llmpack.sparse24_linear(torch.randn(0, 8), v, meta).shape == (0, 6)
    W0, v0, m0 = packed(0, 8, torch.float32)
    assert llmpack.sparse24_linear(torch.randn(3, 8), v0, m0).shape == (3, 0)


def test_opcheck_and_compile():
    W, v, meta = packed(12, 32, torch.bfloat16)
    x, b = torch.randn(3, 32).to(torch.bfloat16), torch.randn(12).to(torch.bfloat16)
    check_op(torch.ops.llmpack.sparse24_linear.default, (x, v, meta, b))
    check_op(torch.ops.llmpack.sparse24_linear.default, (x, v, meta))


def test_bad_input():
    W, v, meta = packed(8, 16, torch.float32)
    x = torch.randn(2, 16)
    with pytest.raises(RuntimeError, match=r"x's last dim is 12 but the packed weight has K=16"):
        llmpack.sparse24_linear(torch.randn(2, 12), v, meta)
    with pytest.raises(RuntimeError, match=r"x is bfloat16 but the weight values are float32"):
        llmpack.sparse24_linear(x.bfloat16(), v, meta)
    with pytest.raises(RuntimeError, match=r"sparse24_linear: meta must have shape \[8, 2\]"):
        llmpack.sparse24_linear(x, v, meta[:, :1])
    with pytest.raises(RuntimeError, match=r"bias must have N=8 elements, got 7"):
        llmpack.sparse24_linear(x, v, meta, torch.randn(7))
    with pytest.raises(RuntimeError, match=r"bias must be float32, got float16"):
        llmpack.sparse24_linear(x, v, meta, torch.randn(8).half())
    with pytest.raises(RuntimeError, match=r"x must be float32 or float16 or bfloat16, got int64"):
        llmpack.sparse24_linear(torch.ones(2, 16, dtype=torch.long), v, meta)
    bad = meta.clone()
    bad[0, 0] = 0xFF
    with pytest.raises(RuntimeError, match=r"corrupted meta"):
        llmpack.sparse24_linear(torch.randn(40, 16), v, bad)  # dense path validates meta


# Rows at every position of a 4-row kernel block (and the ragged last block),
# bytes in full SIMD chunks and in the scalar K tail, each kernel family (M).
@pytest.mark.parametrize("k,row,byte", [(64, 3, 5), (36, 0, 4), (12, 2, 1), (576, 6, 70), (576, 1, 0), (128, 8, 15)])
@pytest.mark.parametrize("m", [1, 5, 16])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
def test_corrupted_meta_is_an_error_on_the_streaming_path(isa, k, row, byte, m, dtype):
    W, v, meta = packed(9, k, dtype)
    bad = meta.clone()
    bad[row, byte] = bad[row, byte] & 0x0F | 0xF0  # high nibble (3, 3): invalid, or a nonzero padding nibble
    with pytest.raises(RuntimeError, match=rf"corrupted meta in weight row {row}\b"):
        llmpack.sparse24_linear(torch.randn(m, k).to(dtype), v, bad)
