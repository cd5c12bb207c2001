"""Paged KV cache with eviction for transformers ``generate``.

``PagedKVCache`` (a transformers ``Cache``) holds each layer's keys and values
in pages with per-(sequence, kv-head) block tables and evicts by policy;
decode attention runs in ``torch.ops.llmpack.paged_decode_attention``.
``attach(model)`` switches a model to the matching attention function.
"""
from .attention import NAME as ATTN_IMPLEMENTATION
from .attention import attach, register
from .cache import PagedKVCache
from .policy import POLICIES, Policy, make_policy

__all__ = ["ATTN_IMPLEMENTATION", "PagedKVCache", "POLICIES", "Policy", "attach", "make_policy", "register"]
