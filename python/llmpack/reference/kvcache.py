"""Plain-PyTorch reference for paged decode attention (the oracle of
tests/test_kvcache_attention.py; layout in csrc/kvcache/kvcache.h): de-page
each (sequence, kv-head)'s used slots, then softmax attention in fp32."""
from __future__ import annotations

import math

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


# ---- eviction (oracle of tests/test_kvcache_cache.py) ---------------------------------------------------------

def rope(x: torch.Tensor, pos, inv_freq: torch.Tensor) -> torch.Tensor:
    """RoPE of un-rotated x [..., D] at position(s) pos, as complex numbers
    (first half real part, second half imaginary: Llama's rotate-half)."""
    half = x.shape[-1] // 2
    z = torch.complex(x[..., :half].double(), x[..., half:].double())
    angle = torch.as_tensor(pos, dtype=torch.float64)[..., None] * inv_freq.double()
    z = z * torch.polar(torch.ones_like(angle), angle)
    return torch.cat([z.real, z.imag], -1).float()


class EvictingHeadReference:
    """One (sequence, kv-head) of an evicting cache, kept as a list of tokens.

    Each step appends one token (evicting first when at the budget: the
    unprotected token of lowest accumulated attention, or the oldest), then
    attends in fp64 with un-rotated keys rotated either to their absolute
    positions or, with ``policy.reposition``, to their ranks inside the cache
    (the query to the last rank), as StreamingLLM defines it."""

    def __init__(self, policy, inv_freq: torch.Tensor):
        self.policy, self.inv_freq = policy, inv_freq
        self.kept: list[dict] = []
        self.seen = 0

    def _evict(self):
        p = self.policy
        protected = lambda e: e["tok"] < p.sink_tokens or e["tok"] > self.seen - p.recent  # noqa: E731
        candidates = [e for e in self.kept if not protected(e)]
        victim = min(candidates, key=lambda e: e["acc"] if p.heavy_hitters else e["tok"])
        self.kept.remove(victim)

    def append(self, k_raw, v, pos: int):
        if self.policy.evicts and len(self.kept) == self.policy.budget:
            self._evict()
        self.kept.append(dict(tok=self.seen, k=k_raw, v=v, pos=pos, acc=0.0))
        self.seen += 1

    def attend(self, q_raw, q_pos: int, scale: float):
        """q_raw [G, D] un-rotated -> (out [G, D] fp32, probabilities summed
        over the G query heads, one per kept token in token order)."""
        kept = sorted(self.kept, key=lambda e: e["tok"])
        n = len(kept)
        if self.policy.reposition:
            k_pos, q_pos = list(range(n)), n - 1
        else:
            k_pos = [e["pos"] for e in kept]
        keys = torch.stack([rope(e["k"], kp, self.inv_freq) for e, kp in zip(kept, k_pos)]).double()
        vals = torch.stack([e["v"] for e in kept]).double()
        q = rope(q_raw, q_pos, self.inv_freq).double()
        p = torch.softmax(q @ keys.T * scale, -1)
        received = p.sum(0)
        for e, r in zip(kept, received.tolist()):
            e["acc"] += r
        return (p @ vals).float(), received

    def tokens(self) -> list[int]:
        return sorted(e["tok"] for e in self.kept)


# ---- one decode step of the cache's bookkeeping (oracle of torch.ops.llmpack.paged_kv_append) ---------------

def paged_kv_append(k_pages, v_pages, block_tables, lengths, token_index, rotation, heavy_scores, free_pages,
                    num_free, seen, k, v, pos, real, budget, sinks, recent, heavy):
    """The op's rule (csrc/kvcache/kvcache_append.h), one (sequence,
    kv-head) at a time, mutating the same tensors; returns (slot, status).
    Raises RuntimeError on the states the op rejects (num_free or a length
    out of range, nothing evictable, a write through a page outside the
    pool); its tensors may then be partly written, the op's are not."""
    batch, heads = k.shape[:2]
    pages, page_size, max_pages = k_pages.shape[0], k_pages.shape[1], block_tables.shape[2]
    if not 0 <= int(num_free[0]) <= free_pages.numel():
        raise RuntimeError(f"num_free = {int(num_free[0])} is outside the stack")
    slot = torch.full((batch, heads), -1, dtype=torch.long)
    new_pages = missing = 0
    for b in range(batch):
        for h in range(heads):
            n = int(lengths[b, h])
            if not 0 <= n <= max_pages * page_size:
                raise RuntimeError(f"lengths[{b}, {h}] = {n} is outside the block table")
            if not bool(real[b]):
                continue
            if n < int(budget[b]):
                slot[b, h] = n
                if n % page_size == 0:
                    new_pages += 1
                    missing += n // page_size >= max_pages
                continue
            tok = token_index[b, h, :n].tolist()
            evictable = [s for s in range(n) if int(sinks[b]) <= tok[s] <= int(seen[b]) - int(recent[b])]
            if not evictable:
                raise RuntimeError(f"sequence {b}, kv-head {h} has no evictable token")
            prio = heavy_scores[b, h].double() if bool(heavy[b]) else token_index[b, h].double()
            key = lambda s: (-math.inf if math.isnan(float(prio[s])) else float(prio[s]), s)  # noqa: E731
            slot[b, h] = min(evictable, key=key)
    if new_pages > int(num_free[0]) or missing:
        return slot, torch.tensor([max(new_pages - int(num_free[0]), 0) + missing])
    for b in range(batch):
        for h in range(heads):
            t = int(slot[b, h])
            if t < 0:
                continue
            if t == int(lengths[b, h]):
                if t % page_size == 0:
                    num_free[0] -= 1
                    page = int(free_pages[int(num_free[0])])
                    if not 0 <= page < pages:
                        raise RuntimeError(f"free_pages[{int(num_free[0])}] = {page} is outside the pool")
                    block_tables[b, h, t // page_size] = page
                lengths[b, h] += 1
            page = int(block_tables[b, h, t // page_size])
            if not 0 <= page < pages:
                raise RuntimeError(f"block_tables[{b}, {h}, {t // page_size}] = {page} is outside the pool")
            row = page * page_size + t % page_size
            k_pages.view(-1, k_pages.shape[-1])[row] = k[b, h]
            v_pages.view(-1, v_pages.shape[-1])[row] = v[b, h]
            token_index[b, h, t], rotation[b, h, t], heavy_scores[b, h, t] = seen[b], pos[b], 0.0
    seen += real.long()
    return slot, torch.tensor([0])


# ---- StreamingLLM's re-positioning after a decode step (oracle of torch.ops.llmpack.paged_kv_reposition) ------

def _rotate_half_fp32(x: torch.Tensor, delta: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """x fp32 [n, D] rotated by delta [n] positions in fp32 (rotate-half
    pairing of the first 2 * len(inv_freq) elements; the rest as they are)."""
    h = inv_freq.numel()
    angle = delta.to(torch.float32)[:, None] * inv_freq
    c, s = angle.cos(), angle.sin()
    lo, hi = x[:, :h], x[:, h:2 * h]
    return torch.cat([lo * c - hi * s, hi * c + lo * s, x[:, 2 * h:]], dim=1)


def paged_kv_reposition(k_pages, block_tables, lengths, token_index, rotation, k_orig, orig_rotation, slot, k, pos,
                        reposition, inv_freq):
    """The op's rule (csrc/kvcache/kvcache_reposition.h), one (sequence,
    kv-head) at a time, mutating the same tensors. Raises RuntimeError,
    before writing anything, on the states the op rejects (a length, slot or
    used page's table entry out of range in a re-positioning row)."""
    batch, heads, max_pages = block_tables.shape
    pages, page_size = k_pages.shape[:2]
    rows = [(b, h) for b in range(batch) if bool(reposition[b]) for h in range(heads)]
    for b, h in rows:
        n, t = int(lengths[b, h]), int(slot[b, h])
        if not 0 <= n <= max_pages * page_size:
            raise RuntimeError(f"lengths[{b}, {h}] = {n} is outside the block table")
        if not -1 <= t < n:
            raise RuntimeError(f"slot[{b}, {h}] = {t} is neither -1 nor a used slot")
        for page in range(-(-n // page_size)):
            if not 0 <= int(block_tables[b, h, page]) < pages:
                raise RuntimeError(f"block_tables[{b}, {h}, {page}] = {int(block_tables[b, h, page])} is outside "
                                   "the pool")
    flat = k_pages.view(-1, k_pages.shape[-1])
    for b, h in rows:
        n, t = int(lengths[b, h]), int(slot[b, h])
        if t >= 0:
            k_orig[b, h, t], orig_rotation[b, h, t] = k[b, h], pos[b]
        order = torch.argsort(token_index[b, h, :n], stable=True)      # ties: the lower slot first
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n)
        target = pos[b] - (n - 1 - rank)
        moved = (target != rotation[b, h, :n]).nonzero()[:, 0]
        if moved.numel() == 0:
            continue
        keys = _rotate_half_fp32(k_orig[b, h, moved], target[moved] - orig_rotation[b, h, moved], inv_freq)
        rows_at = block_tables[b, h, moved // page_size].long() * page_size + moved % page_size
        flat[rows_at] = keys.to(k_pages.dtype)
        rotation[b, h, moved] = target[moved]
