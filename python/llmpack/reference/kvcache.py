"""Plain-PyTorch reference for paged decode attention (the oracle of
tests/test_kvcache_attention.py; layout in csrc/kvcache/kvcache.h): de-page
each (sequence, kv-head)'s used slots, then softmax attention in fp32."""
from __future__ import annotations

import torch


def gather_slots(pages: torch.Tensor, table: torch.Tensor, length: int) -> torch.Tensor:
    """Slots 0 .. length - 1 of one (sequence, kv-head): [length, head_dim]."""
    page_size = pages.shape[1]
    t = torch.arange(length)
    return pages[table[t // page_size].long(), t % page_size]


def paged_decode_attention(q, k_pages, v_pages, block_tables, lengths, scale: float, return_scores: bool = False):
    b, heads, d = q.shape
    kv_heads, max_pages = block_tables.shape[1], block_tables.shape[2]
    group = heads // kv_heads
    page_size = k_pages.shape[1]
    out = torch.zeros(b, heads, d, dtype=torch.float32)
    scores = torch.zeros(b if return_scores else 0, kv_heads, max_pages * page_size, dtype=torch.float32)
    for i in range(b):
        for h in range(kv_heads):
            n = int(lengths[i, h])
            if n == 0:
                continue
            k = gather_slots(k_pages, block_tables[i, h], n).float()
            v = gather_slots(v_pages, block_tables[i, h], n).float()
            qh = q[i, h * group:(h + 1) * group].float()           # [group, d]
            p = torch.softmax((qh @ k.T) * scale, dim=-1)           # [group, n]
            out[i, h * group:(h + 1) * group] = p @ v
            if return_scores:
                scores[i, h, :n] = p.sum(0)
    return out.to(q.dtype), scores
