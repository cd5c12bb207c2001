"""Paged K/V pools for the paged-attention tests (CPU and emulator): random
values in shuffled pages, everything unused poisoned."""
from __future__ import annotations

import torch

from conftest import ULP


def kv_pool(lengths, page_size: int, d: int, dtype, seed: int = 0, pad: int = 0, spare_pages: int = 3):
    """Random K/V in a shuffled pool for int32 lengths [B, Hkv]: (k_pages,
    v_pages, block_tables). Every slot no (sequence, kv-head) uses is NaN, in
    the used pages' tails and in spare pages; table entries past the used
    pages (and `pad` extra columns) are -1 or 10**9, so reading any of them
    shows up as NaN or an out-of-bounds access (ASan build)."""
    g = torch.Generator().manual_seed(seed)
    b, kv = lengths.shape
    need = [[(int(n) + page_size - 1) // page_size for n in row] for row in lengths]
    total = sum(map(sum, need)) + spare_pages
    max_pages = max(1, max(map(max, need))) + pad
    k = torch.full((total, page_size, d), float("nan"), dtype=dtype)
    v = torch.full((total, page_size, d), float("nan"), dtype=dtype)
    tables = torch.where(torch.arange(b * kv * max_pages).view(b, kv, max_pages) % 2 == 0,
                         torch.tensor(-1), torch.tensor(10**9)).to(torch.int32)
    order, used = torch.randperm(total, generator=g), 0
    for i in range(b):
        for h in range(kv):
            n = int(lengths[i, h])
            for p in range(need[i][h]):
                page = int(order[used])
                used += 1
                tables[i, h, p] = page
                rows = min(page_size, n - p * page_size)
                k[page, :rows] = torch.randn(rows, d, generator=g).to(dtype)
                v[page, :rows] = torch.randn(rows, d, generator=g).to(dtype)
    return k, v, tables


def check_output(out, want, v, dtype):
    """out (q's dtype, no NaN: no unused slot was read) against the reference:
    a convex combination of V rows in fp32 (~1e-6 of max |v|, more terms for
    longer contexts), then one rounding to the output dtype."""
    assert out.dtype == dtype and out.shape == want.shape
    assert not out.isnan().any(), "read an unused (NaN) slot"
    vmax = torch.nan_to_num(v.float(), nan=0.0).abs().max()
    tol = ULP[dtype] * want.float().abs() + 2e-5 * vmax
    err = (out.float() - want.float()).abs()
    assert (err <= tol).all(), f"worst error {err.max():.3g}"
