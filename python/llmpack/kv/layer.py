"""One layer of the paged KV cache: page pool, block tables, append, eviction.

Layout (the kernel's, csrc/kvcache/kvcache.h): pools ``k_pages`` / ``v_pages``
``[num_pages, page_size, head_dim]``; a page holds consecutive slots of ONE
(sequence, kv-head); ``tables`` int32 ``[batch, kv_heads, max_pages]`` and
``lengths`` int32 ``[batch, kv_heads]``. Slots ``0 .. length - 1`` are live,
always contiguous, in no particular token order (attention does not care;
each slot's token index and rotation position are kept beside it).

Eviction reuses slots: at its budget a (sequence, kv-head) writes the incoming
token over the victim's slot, so steady-state decoding allocates and frees
nothing. Pages are taken from the free pool when a row grows and returned when
it shrinks (prefill beyond the budget, ``reset``), whole pages only.

Padding (left-padded batches) is never stored: each row holds only its real
tokens, so rows of different lengths need no mask at decode time.
"""
from __future__ import annotations

import torch

from .policy import Policy

try:  # transformers is optional for the kernels, required for the cache
    from transformers.cache_utils import CacheLayerMixin
except ImportError:  # pragma: no cover - exercised only without transformers
    CacheLayerMixin = object

_NO_BUDGET = 1 << 62
_NOT_CONSUMED = (
    "PagedKVCache: the model's attention did not read the paged cache (its attention implementation is "
    "{impl!r}). Load the model with attn_implementation='llmpack_paged' or call llmpack.kv.attach(model) first.")


class PagedLayer(CacheLayerMixin):
    is_compileable = False
    is_croppable = False
    is_sliding = False

    def __init__(self, policies: list[Policy], page_size: int = 64, dtype: torch.dtype | None = None):
        super().__init__()
        self.policies, self.page_size, self.kv_dtype = policies, int(page_size), dtype
        self.columns = 0          # tokens seen, padding included (what get_seq_length reports)
        self.consumed = True      # did the attention function read what update() handed it?
        self.inv_freq = None      # set by the attention function when a row re-positions keys

    # ---- transformers' layer contract ----------------------------------------------------------------------
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        pol = self.policies * b if len(self.policies) == 1 else self.policies
        if len(pol) != b:
            raise ValueError(f"PagedKVCache was given {len(self.policies)} per-row policies for a batch of {b}")
        dev = self.device = key_states.device
        self.dtype = self.kv_dtype or key_states.dtype
        if self.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise TypeError(f"PagedKVCache stores fp32 / bf16 / fp16 keys and values, not {self.dtype}")
        self.batch_size, self.kv_heads, self.head_dim = b, h, d
        as_long = lambda xs: torch.tensor(xs, dtype=torch.long, device=dev)  # noqa: E731
        self.budget = as_long([p.budget if p.evicts else _NO_BUDGET for p in pol])
        self.sinks = as_long([p.sink_tokens for p in pol])
        self.recent = as_long([p.recent if p.evicts else _NO_BUDGET for p in pol])
        self.heavy = torch.tensor([p.heavy_hitters for p in pol], device=dev)
        self.repos = torch.tensor([p.reposition for p in pol], device=dev)
        self.any_heavy, self.any_repos = bool(self.heavy.any()), bool(self.repos.any())
        self.k_pages = torch.empty(0, self.page_size, d, dtype=self.dtype, device=dev)
        self.v_pages = torch.empty_like(self.k_pages)
        self.free = torch.empty(0, dtype=torch.long, device=dev)   # stack of free page ids: free[:num_free]
        self.num_free = torch.zeros(1, dtype=torch.long, device=dev)  # a tensor: paged_kv_append pops pages
        self.tables = torch.full((b, h, 0), -1, dtype=torch.int32, device=dev)
        self.lengths = torch.zeros(b, h, dtype=torch.int32, device=dev)
        self.tok = torch.empty(b, h, 0, dtype=torch.long, device=dev)      # token index in its sequence
        self.rot = torch.empty_like(self.tok)                               # position its key is rotated to
        self.acc = torch.empty(b, h, 0, dtype=torch.float32, device=dev)    # H2O: accumulated attention
        self.k_orig = torch.empty(b if self.any_repos else 0, h, 0, d, dtype=torch.float32, device=dev)
        self.orig_rot = torch.empty_like(self.tok)
        self.seen = torch.zeros(b, dtype=torch.long, device=dev)            # real tokens per sequence
        self.keys = self.values = None
        self.is_initialized = True

    def update(self, key_states, value_states, *args, kwargs=None, **_):
        """Hands the new keys/values to the attention function through the
        kwargs it receives (transformers' paged-cache route); the writing into
        pages happens there, where the padding mask is known."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if not self.consumed:
            raise RuntimeError(_NOT_CONSUMED.format(impl="not llmpack_paged"))
        if kwargs is None:
            raise RuntimeError("PagedKVCache needs a model whose attention passes its kwargs to cache.update "
                               "(transformers 5.x Llama-style models do)")
        kwargs["llmpack_kv_layer"] = self
        self.consumed = False
        self.columns += key_states.shape[-2]
        return key_states, value_states

    def get_seq_length(self) -> int:
        return self.columns

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.columns + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.is_initialized, self.columns, self.consumed = False, 0, True
        self.keys = self.values = None

    def reorder_cache(self, beam_idx):
        raise NotImplementedError("PagedKVCache does not support beam search (its rows evict independently)")

    def batch_repeat_interleave(self, repeats: int):
        raise NotImplementedError("PagedKVCache does not support expanding a filled cache; expand the inputs instead")

    def batch_select_indices(self, indices):
        raise NotImplementedError("PagedKVCache does not support selecting rows of a filled cache")

    def crop(self, tokens_to_remove: int):
        raise NotImplementedError("PagedKVCache cannot be cropped (evicted tokens are gone)")

    # ---- what the cache holds -------------------------------------------------------------------------------
    @property
    def is_empty(self) -> bool:
        return not self.is_initialized or int(self.seen.sum()) == 0

    def used_pages(self) -> int:
        return int(((self.lengths.long() + self.page_size - 1) // self.page_size).sum()) if self.is_initialized else 0

    def kv_bytes(self) -> int:
        if not self.is_initialized:
            return 0
        return 2 * self.used_pages() * self.page_size * self.head_dim * self.k_pages.element_size()

    # ---- pages --------------------------------------------------------------------------------------------
    def _ensure_capacity(self, slots: int) -> None:
        pages = -(-slots // self.page_size)
        have = self.tables.shape[-1]
        if pages <= have:
            return
        grow = max(pages, 2 * have) - have
        pad = lambda t, v: torch.cat([t, t.new_full((*t.shape[:2], grow * self.page_size, *t.shape[3:]), v)], 2)  # noqa: E731
        self.tables = torch.cat([self.tables, self.tables.new_full((*self.tables.shape[:2], grow), -1)], -1)
        self.tok, self.rot, self.orig_rot = pad(self.tok, -1), pad(self.rot, 0), pad(self.orig_rot, 0)
        self.acc = pad(self.acc, 0.0)
        if self.any_repos:
            self.k_orig = pad(self.k_orig, 0.0)

    @property
    def n_free(self) -> int:
        return int(self.num_free)

    def _reserve_pages(self, n: int) -> None:
        """Grow the pool (doubling) until at least n pages are free."""
        n_free = self.n_free
        if n <= n_free:
            return
        old = self.k_pages.shape[0]
        new = max(2 * old, old + n - n_free, 16)
        more = torch.empty(new - old, self.page_size, self.head_dim, dtype=self.dtype, device=self.device)
        self.k_pages = torch.cat([self.k_pages, more])
        self.v_pages = torch.cat([self.v_pages, torch.empty_like(more)])
        self.free = torch.cat([self.free[:n_free], torch.arange(old, new, device=self.device)])
        self.num_free.fill_(n_free + new - old)

    def _pop_pages(self, n: int) -> torch.Tensor:
        self._reserve_pages(n)
        self.num_free -= n
        n_free = self.n_free
        return self.free[n_free:n_free + n].clone()

    def _push_pages(self, ids: torch.Tensor) -> None:
        self.free = torch.cat([self.free[:self.n_free], ids.long()])
        self.num_free += ids.numel()

    def _page_span(self, lengths: torch.Tensor) -> torch.Tensor:
        return (lengths.long() + self.page_size - 1) // self.page_size

    def _resize(self, new_lengths: torch.Tensor) -> None:
        """Give each (sequence, kv-head) the pages its new length needs, taking
        from or returning to the pool; slots keep their pages."""
        self._ensure_capacity(int(new_lengths.max()))
        old_p, new_p = self._page_span(self.lengths).flatten(), self._page_span(new_lengths).flatten()
        tables = self.tables.view(-1, self.tables.shape[-1])
        grow = (new_p - old_p).clamp(min=0)
        if int(grow.sum()):
            rows = torch.repeat_interleave(torch.arange(grow.numel(), device=self.device), grow)
            first = torch.cumsum(grow, 0) - grow
            cols = old_p[rows] + torch.arange(rows.numel(), device=self.device) - first[rows]
            tables[rows, cols] = self._pop_pages(rows.numel()).to(torch.int32)
        shrink = (old_p - new_p).clamp(min=0)
        if int(shrink.sum()):
            rows = torch.repeat_interleave(torch.arange(shrink.numel(), device=self.device), shrink)
            first = torch.cumsum(shrink, 0) - shrink
            cols = new_p[rows] + torch.arange(rows.numel(), device=self.device) - first[rows]
            self._push_pages(tables[rows, cols])
            tables[rows, cols] = -1
        self.lengths = new_lengths.to(torch.int32)

    def _write(self, b, h, slot, k, v) -> None:
        """Write rows k, v [n, D] into slots (b, h, slot) [n]."""
        page = self.tables[b, h, slot // self.page_size].long()
        rows = page * self.page_size + slot % self.page_size
        self.k_pages.view(-1, self.head_dim)[rows] = k.to(self.dtype)
        self.v_pages.view(-1, self.head_dim)[rows] = v.to(self.dtype)

    # ---- decode: one token per sequence -----------------------------------------------------------------------
    def append_decode(self, k, v, pos, real) -> None:
        """k, v [B, Hkv, D]; pos [B] the position each key was rotated to;
        real [B] bool (False: a padding column, not stored). One call of the
        paged_kv_append op (the victim rule: csrc/kvcache/kvcache_append.h)."""
        pos, real = pos.long().contiguous(), real.bool().contiguous()
        kp, vp = k.to(self.dtype).contiguous(), v.to(self.dtype).contiguous()
        for _ in range(2):
            slot, status = torch.ops.llmpack.paged_kv_append(
                self.k_pages, self.v_pages, self.tables, self.lengths, self.tok, self.rot, self.acc, self.free,
                self.num_free, self.seen, kp, vp, pos, real, self.budget, self.sinks, self.recent, self.heavy)
            if not int(status):
                break
            # Rare (a row starts a page beyond the pool or its table): make room for every row, call again.
            self._ensure_capacity(int(self.lengths.max()) + 1)
            self._reserve_pages(self.batch_size * self.kv_heads)
        else:  # pragma: no cover - the room made above always suffices
            raise RuntimeError("PagedKVCache: paged_kv_append found no room after growing the pool")
        if self.any_repos:
            if self.inv_freq is None:
                raise RuntimeError("PagedKVCache: re-positioning needs the model's rotary frequencies (set by the "
                                   "llmpack_paged attention function)")
            # The query, rotated to its absolute position, then sees each kept token at its distance inside the
            # cache; in steady state only the sinks move (rule: csrc/kvcache/kvcache_reposition.h).
            torch.ops.llmpack.paged_kv_reposition(self.k_pages, self.tables, self.lengths, self.tok, self.rot,
                                                  self.k_orig, self.orig_rot, slot, k.float().contiguous(), pos,
                                                  self.repos, self.inv_freq)

    def accumulate(self, scores: torch.Tensor, real: torch.Tensor) -> None:
        """Add the kernel's per-slot attention (H2O) for heavy-hitter rows."""
        rows = self.heavy & real
        n = min(scores.shape[-1], self.acc.shape[-1])
        self.acc[..., :n] += scores[..., :n] * rows[:, None, None]

    # ---- prefill into an empty cache ---------------------------------------------------------------------------
    def prefill(self, k, v, pos, real, token_scores=None) -> None:
        """k, v [B, Hkv, T, D]; pos [B, T]; real [B, T] bool; token_scores
        [B, Hkv, T] (attention each token received during prefill, for H2O).
        Keeps each row's real tokens, evicted down to its budget by the same
        priority as decoding (sinks and the recent window always kept)."""
        b, h = self.batch_size, self.kv_heads
        keep_idx, keep_n = [], torch.zeros(b, h, dtype=torch.long, device=self.device)
        for i in range(b):
            idx = real[i].nonzero()[:, 0]
            n = idx.numel()
            budget = min(n, int(self.budget[i]))
            t = torch.arange(n, device=self.device)
            protected = (t < self.sinks[i]) | (t > n - 1 - self.recent[i])
            if bool(self.heavy[i]) and token_scores is not None:
                prio = token_scores[i][:, idx].double()
            else:
                prio = t.double().expand(h, n)
            prio = prio.masked_fill(protected, float("inf"))
            keep = prio.topk(budget, dim=-1).indices.sort(-1).values if budget < n else t.expand(h, n)
            keep_idx.append((idx, keep))
            keep_n[i] = keep.shape[-1]
        self._resize(keep_n)
        for i, (idx, keep) in enumerate(keep_idx):
            n = keep.shape[-1]
            if n == 0:
                continue
            hi = torch.arange(h, device=self.device)[:, None].expand(h, n).flatten()
            si = torch.arange(n, device=self.device).repeat(h)
            src = idx[keep].flatten()
            bi = torch.full_like(hi, i)
            kk, vv = k[i, hi, src], v[i, hi, src]
            self._write(bi, hi, si, kk, vv)
            self.tok[bi, hi, si] = keep.flatten()
            self.rot[bi, hi, si] = pos[i, src]
            self.acc[bi, hi, si] = (token_scores[i, hi, src].float() if token_scores is not None
                                    and bool(self.heavy[i]) else 0.0)
            if self.any_repos:
                self.k_orig[bi, hi, si] = kk.float()
                self.orig_rot[bi, hi, si] = pos[i, src]
            self.seen[i] = idx.numel()
