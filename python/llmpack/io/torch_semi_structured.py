"""torch's semi-structured (2:4) sparse format <-> llmpack 2:4 packing.

torch.sparse.SparseSemiStructuredTensor's CUTLASS backend stores a 2:4 fp16 /
bf16 weight [N, K] as ``packed`` [N, K/2] (the kept values, the same as our
``values``) and ``meta`` int16 [N, K/16] holding CUTLASS's reordered
metadata. Our canonical meta read as little-endian uint16 is CUTLASS's
un-reordered metadata, so the forward direction is our own reorder op
(``sparse24_meta_to_cutlass``, tested against an independent reference and
against torch's converter). The reverse direction goes through torch's own
decoder of its format and our packer, so it accepts whatever torch produced.
"""
from __future__ import annotations

import torch

from .. import _ops


def _check_shape(n: int, k: int, dtype: torch.dtype):
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"torch's semi-structured CUTLASS format holds float16/bfloat16, got {dtype}")
    if n % 32 or k % 64:
        raise ValueError(f"torch's semi-structured CUTLASS format needs N % 32 == 0 and K % 64 == 0, got [{n}, {k}]")


def to_torch_semi_structured(values: torch.Tensor, meta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """llmpack ``(values, meta)`` -> torch's ``(packed, meta int16 [N, K/16])``.

    Wrap the pair with ``torch.sparse.SparseSemiStructuredTensorCUTLASS`` on a
    GPU, or decode it with ``sparse_semi_structured_to_dense_cutlass``."""
    n, k = values.shape[0], values.shape[1] * 2
    _check_shape(n, k, values.dtype)
    words = _ops.sparse24_meta_to_cutlass(meta)        # validated, flat uint8
    return values.clone(), words.view(torch.int16).view(n, k // 16)


def from_torch_semi_structured(packed: torch.Tensor, meta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's ``(packed [N, K/2], meta int16 [N, K/16])`` -> llmpack ``(values, meta)``."""
    from torch.sparse._semi_structured_conversions import sparse_semi_structured_to_dense_cutlass

    n, k = packed.shape[0], packed.shape[1] * 2
    _check_shape(n, k, packed.dtype)
    if meta.dtype != torch.int16 or tuple(meta.shape) != (n, k // 16):
        raise ValueError(f"meta must be int16 of shape {(n, k // 16)}, got {meta.dtype} {tuple(meta.shape)}")
    dense = sparse_semi_structured_to_dense_cutlass(packed, meta)
    return _ops.sparse24_compress(dense)
