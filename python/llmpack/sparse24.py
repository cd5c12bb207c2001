"""2:4 structured sparsity: user-facing helpers around the packing ops."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._ops import sparse24_compress, sparse24_decompress, sparse24_linear

__all__ = ["pad_k", "sparse24_compress", "sparse24_decompress", "sparse24_linear"]


def pad_k(t: torch.Tensor, multiple: int = 4) -> torch.Tensor:
    """Pad the last dim with zeros up to a multiple of ``multiple``.

    Apply to both the weight [N, K] and the activations [..., K]: the zero
    columns contribute nothing to the product, and a zero group is 2:4.
    """
    k = t.shape[-1]
    extra = (-k) % multiple
    return F.pad(t, (0, extra)) if extra else t
