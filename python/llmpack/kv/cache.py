"""``PagedKVCache``: a transformers ``Cache`` over paged KV with eviction."""
from __future__ import annotations

from functools import partial

import torch
from transformers.cache_utils import Cache

from . import attention
from .layer import _NOT_CONSUMED, PagedLayer
from .policy import Policy, make_policy


class PagedKVCache(Cache):
    """Paged KV cache with an eviction policy, for ``model.generate(cache=...)``.

    policy: "full" | "window" | "sink" (StreamingLLM) | "h2o" | "sink+h2o";
    budget: tokens kept per (sequence, kv-head) (None only for "full");
    sink_tokens: first tokens always kept by the sink policies; recent: the
    protected recent window (default: the whole budget left by the sinks, or
    half of it for the H2O policies); reposition: rotate kept keys to their
    positions inside the cache (default: only "sink", as StreamingLLM does);
    page_size: slots per page (64 by default: the decode kernel reads each
    page as one run of rows, and on cold KV 16-slot pages ran it 1.3-1.8x
    slower than 64, 128 another 5-15 % faster; a page is also the most a
    (sequence, kv-head) over-allocates); dtype: storage dtype of K/V
    (default: the model's). ``policy`` may also be a list of per-row policies (str, dict of
    these arguments, or ``Policy``), one per batch row, to compare policies
    side by side in one pass.

    The model must use the ``llmpack_paged`` attention: load it with
    ``attn_implementation="llmpack_paged"`` or call ``llmpack.kv.attach(model)``.
    """

    def __init__(self, policy="full", budget: int | None = None, sink_tokens: int = 4, recent: int | None = None,
                 page_size: int = 64, dtype: torch.dtype | None = None, reposition: bool | None = None):
        if int(page_size) < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        common = dict(budget=budget, sink_tokens=sink_tokens, recent=recent, reposition=reposition)
        rows = policy if isinstance(policy, (list, tuple)) else [policy]
        self.policies = [self._policy(p, common) for p in rows]
        attention.register()
        super().__init__(layer_class_to_replicate=partial(PagedLayer, self.policies, page_size, dtype))

    @staticmethod
    def _policy(p, common) -> Policy:
        if isinstance(p, Policy):
            return p
        if isinstance(p, str):
            return make_policy(p, **common)
        if isinstance(p, dict):
            args = {**common, **p}
            return make_policy(args.pop("policy", "full"), **args)
        raise TypeError(f"a policy is a name, a dict of PagedKVCache arguments or a Policy, not {type(p).__name__}")

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        # The previous layer's attention must have read the cache: anything
        # else (sdpa, eager) would attend over the new tokens only.
        if 0 < layer_idx <= len(self.layers) and not self.layers[layer_idx - 1].consumed:
            impl = getattr(kwargs.get("kwargs"), "get", lambda *_: None)("attn_implementation")
            raise RuntimeError(_NOT_CONSUMED.format(impl=impl or "not llmpack_paged"))
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)

    def kv_bytes(self) -> int:
        """Bytes of K and V in the pages the cache holds now (all layers)."""
        return sum(layer.kv_bytes() for layer in self.layers)

    def num_kept_tokens(self, layer: int = 0) -> torch.Tensor:
        """Tokens kept per (sequence, kv-head) in ``layer``: int32 [B, Hkv]."""
        lay = self.layers[layer]
        return lay.lengths.clone() if lay.is_initialized else torch.zeros(0, 0, dtype=torch.int32)
