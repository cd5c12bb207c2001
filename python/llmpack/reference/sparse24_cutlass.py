"""Reference reorder of 2:4 metadata into CUTLASS's sm80 sparse-GEMM layout.

Written from CUTLASS's own description of the layout, step by step, and
independent of our C++ (csrc/sparse24/sparse24_reorder.h states the same
mapping as a closed-form bit formula; the test checks the two agree):

1. The metadata element for 16-bit A (fp16/bf16) is a uint16 holding 4 groups
   of 4 logical columns, group j in bits 4j..4j+3 as ``i0 | i1 << 2``
   (cutlass/util/host_uncompress.h). Our canonical meta (two groups per byte,
   low nibble first) read as little-endian uint16 is exactly that matrix
   ``E [N, K/16]``.
2. ``cutlass::reorder_meta`` (cutlass/util/host_reorder.h) moves element
   ``(m, k)`` of E, for 16-bit elements, to
   ``row = m // 32 * 32 + (m % 8) * 4 + (m % 32) // 8``, ``col = k``, then
   swaps the off-diagonal entries of each 2x2 block (even row / odd column
   goes one row down and one column left, odd row / even column one row up
   and one column right).
3. The destination tensor's layout is ``GemmKernel::LayoutE`` =
   ``layout::ColumnMajorInterleaved<2>`` with its packed leading dimension
   ``2 * rows``: ``offset(row, col) = (col // 2) * (2 * rows) + row * 2 + col % 2``.

Shapes that CUTLASS itself cannot lay out (N % 32 != 0, or an odd number of
uint16 words per row, i.e. K % 32 != 0) are defined here by zero padding: E is
padded with zero rows to a multiple of 32 and with zero words to an even count
per row; the result is a flat uint8 buffer of ``rows_padded * words_padded * 2``
bytes (little-endian words). This is a layout oracle only: unlike the op, it
does not validate the nibbles.
"""
from __future__ import annotations

import torch


def cutlass_meta_shape(n: int, meta_cols: int) -> tuple[int, int]:
    """(padded rows, padded uint16 words per row) of E for canonical meta [n, meta_cols]."""
    rows = -(-n // 32) * 32
    words = -(-meta_cols // 2)          # uint16 words holding meta_cols bytes
    words += words % 2                  # column pairs: an even count
    return rows, words


def canonical_to_words(meta: torch.Tensor) -> torch.Tensor:
    """uint8 [N, meta_cols] -> int64 [rows_padded, words_padded]: the zero-padded
    E matrix, word c of row n = meta[n, 2c] | meta[n, 2c+1] << 8."""
    n, mcols = meta.shape
    rows, words = cutlass_meta_shape(n, mcols)
    padded = torch.zeros(rows, 2 * words, dtype=torch.int64, device=meta.device)
    padded[:n, :mcols] = meta.to(torch.int64)
    return padded[:, 0::2] | (padded[:, 1::2] << 8)


def reorder_destinations(rows: int, words: int, device=None) -> torch.Tensor:
    """int64 [rows, words]: flat uint16 index in the CUTLASS buffer of E[m, k]
    (steps 2 and 3 of the module docstring, vectorized)."""
    m = torch.arange(rows, device=device).view(-1, 1).expand(rows, words)
    k = torch.arange(words, device=device).view(1, -1).expand(rows, words)
    # Step 2a: row interleave inside each block of 32 rows.
    dest_row = m // 32 * 32 + (m % 8) * 4 + (m % 32) // 8
    dest_col = k.clone()
    # Step 2b: 2x2 "Z to N" swap of the off-diagonal entries.
    down_left = (dest_row % 2 == 0) & (dest_col % 2 == 1)
    up_right = (dest_row % 2 == 1) & (dest_col % 2 == 0)
    dest_row = torch.where(down_left, dest_row + 1, torch.where(up_right, dest_row - 1, dest_row))
    dest_col = torch.where(down_left, dest_col - 1, torch.where(up_right, dest_col + 1, dest_col))
    # Step 3: ColumnMajorInterleaved<2>, packed (leading dimension 2 * rows).
    return (dest_col // 2) * (2 * rows) + dest_row * 2 + dest_col % 2


def sparse24_meta_to_cutlass(meta: torch.Tensor) -> torch.Tensor:
    """Canonical meta uint8 [N, ceil(K/8)] -> flat uint8 buffer in CUTLASS's
    reordered E layout (length ``rows_padded * words_padded * 2``)."""
    if meta.dim() != 2 or meta.dtype != torch.uint8:
        raise ValueError("meta must be a 2-D uint8 tensor")
    e = canonical_to_words(meta)                      # [rows, words] int64 (uint16 values)
    rows, words = e.shape
    dest = reorder_destinations(rows, words, meta.device)
    out_words = torch.empty(rows * words, dtype=torch.int64, device=meta.device)
    out_words[dest.flatten()] = e.flatten()
    # Little-endian bytes of each uint16.
    return torch.stack([out_words & 0xFF, out_words >> 8], dim=1).flatten().to(torch.uint8)
