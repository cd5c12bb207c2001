"""Typed wrappers over ``torch.ops.llmpack.*`` and every op's fake (meta) impl.

Fake impls describe output shapes/dtypes without computing, so the ops work
under torch.compile, FakeTensor and meta tensors. The shape rules mirror the
layout documented in the C++ headers (csrc/<family>/<family>.h).
"""
from __future__ import annotations

import torch

from . import _lib  # noqa: F401  (loads the library, which defines the ops)

_ops = torch.ops.llmpack


# --------------------------------------------------------------------------
# 2:4 sparsity (csrc/sparse24/sparse24.h)
# --------------------------------------------------------------------------
def _meta_cols(k: int) -> int:
    return (k // 4 + 1) // 2


@torch.library.register_fake("llmpack::sparse24_compress")
def _(W):
    torch._check(W.dim() == 2, lambda: f"sparse24_compress: W must be 2-D, got {W.dim()}-D")
    n, k = W.shape
    torch._check(k % 4 == 0, lambda: f"sparse24_compress: K={k} must be a multiple of 4")
    return W.new_empty(n, k // 2), W.new_empty(n, _meta_cols(k), dtype=torch.uint8)


@torch.library.register_fake("llmpack::sparse24_decompress")
def _(values, meta):
    torch._check(values.dim() == 2, lambda: "sparse24_decompress: values must be 2-D")
    n, half = values.shape
    return values.new_empty(n, half * 2)


@torch.library.register_fake("llmpack::sparse24_linear")
def _(x, values, meta, bias=None):
    torch._check(x.shape[-1] == values.shape[1] * 2,
                 lambda: f"sparse24_linear: x's last dim {x.shape[-1]} != K={values.shape[1] * 2}")
    torch._check(x.dtype == values.dtype, lambda: "sparse24_linear: x and values dtypes must match")
    return x.new_empty(*x.shape[:-1], values.shape[0])


@torch.library.register_fake("llmpack::sparse24_meta_to_cutlass")
def _(meta):
    torch._check(meta.dim() == 2, lambda: f"sparse24_meta_to_cutlass: meta must be 2-D, got {meta.dim()}-D")
    torch._check(meta.dtype == torch.uint8, lambda: "sparse24_meta_to_cutlass: meta must be uint8")
    n, mcols = meta.shape
    return meta.new_empty(((n + 31) // 32 * 32) * ((mcols + 3) // 4 * 4), dtype=torch.uint8)


def sparse24_compress(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack a 2:4-sparse ``W [N, K]`` into ``(values [N, K/2], meta uint8 [N, ceil(K/8)])``."""
    return _ops.sparse24_compress(W)


def sparse24_decompress(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`sparse24_compress`."""
    return _ops.sparse24_decompress(values, meta)


def sparse24_linear(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x [..., K] @ W^T + bias`` with ``W [N, K]`` packed 2:4 as ``(values, meta)``."""
    return _ops.sparse24_linear(x, values, meta, bias)


def sparse24_meta_to_cutlass(meta: torch.Tensor) -> torch.Tensor:
    """2:4 ``meta [N, ceil(K/8)]`` -> flat uint8 metadata in CUTLASS's sm80 sparse-GEMM layout
    (``round_up(N, 32) * round_up(ceil(K/8), 4)`` bytes, validated; csrc/sparse24/sparse24_reorder.h)."""
    return _ops.sparse24_meta_to_cutlass(meta)
