"""Reference 2:4 pack/unpack (layout: csrc/sparse24/sparse24.h)."""
from __future__ import annotations

import torch

_INT_VIEW = {2: torch.int16, 4: torch.int32}


def _nonzero(W: torch.Tensor) -> torch.Tensor:
    """Elementwise "is nonzero" by bits with the sign cleared (NaN/Inf are nonzero, -0.0 is zero)."""
    bits = W.view(_INT_VIEW[W.element_size()])
    mask = 0x7FFF if W.element_size() == 2 else 0x7FFFFFFF
    return (bits & mask) != 0


def kept_positions(W: torch.Tensor) -> torch.Tensor:
    """[N, K/4, 2] int64: the two kept positions of each group, ascending.

    Nonzero positions first, topped up with the lowest-index zero positions.
    Raises ValueError naming the first group with more than 2 nonzeros.
    """
    n, k = W.shape
    nz = _nonzero(W).reshape(n, k // 4, 4)
    counts = nz.sum(-1)
    bad = (counts > 2).flatten().nonzero()
    if bad.numel():
        i = int(bad[0])
        row, g = divmod(i, k // 4)
        raise ValueError(f"W is not 2:4 sparse: row {row}, group {g} (columns {4*g}..{4*g+3}) has more than 2 nonzeros")
    # Rank positions: nonzeros first, then by index; take the first two, sort.
    pos = torch.arange(4, device=W.device).expand_as(nz)
    rank_key = (~nz).to(torch.int64) * 4 + pos
    first_two = rank_key.argsort(dim=-1, stable=True)[..., :2]
    return first_two.sort(dim=-1).values


def sparse24_compress(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, k = W.shape
    if k % 4:
        raise ValueError(f"K={k} must be a multiple of 4")
    idx = kept_positions(W)                                   # [N, G, 2]
    values = W.reshape(n, k // 4, 4).gather(-1, idx).reshape(n, k // 2)
    nib = (idx[..., 0] | (idx[..., 1] << 2)).to(torch.uint8)  # [N, G]
    if nib.shape[1] % 2:
        nib = torch.cat([nib, torch.zeros(n, 1, dtype=torch.uint8, device=W.device)], 1)
    meta = nib[:, 0::2] | (nib[:, 1::2] << 4)
    return values, meta


def unpack_nibbles(meta: torch.Tensor, groups: int) -> torch.Tensor:
    """uint8 [N, ceil(G/2)] -> int64 [N, G] group nibbles."""
    lo, hi = meta & 0xF, meta >> 4
    return torch.stack([lo, hi], -1).reshape(meta.shape[0], 2 * meta.shape[1])[:, :groups].to(torch.int64)


def sparse24_decompress(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    n, half = values.shape
    k = half * 2
    nib = unpack_nibbles(meta, k // 4)
    idx = torch.stack([nib & 3, nib >> 2], -1)                # [N, G, 2]
    if (idx[..., 0] >= idx[..., 1]).any():
        raise ValueError("corrupted meta: a nibble does not encode i0 < i1")
    out = torch.zeros(n, k // 4, 4, dtype=values.dtype, device=values.device)
    out.scatter_(-1, idx, values.reshape(n, k // 4, 2))
    return out.reshape(n, k)


def sparse24_linear(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """Dense matmul of the decompressed weight, accumulated in fp32 (as every kernel does)."""
    W = sparse24_decompress(values, meta)
    y = torch.nn.functional.linear(x.float(), W.float(), None if bias is None else bias.float())
    return y.to(x.dtype)
