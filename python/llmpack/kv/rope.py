"""Re-rotating cached keys (StreamingLLM's "positions inside the cache").

transformers applies RoPE before the cache sees a key, so a cached key is
already rotated to its absolute position p. RoPE rotations compose,
R(p + d) = R(d) R(p), so moving a key to position p + d needs only R(d) applied
to the stored key: the un-rotated key is never needed. The cache keeps each
re-positioned slot's key as it arrived (fp32) and rotates that copy by the
total offset each time, so bf16 rounding does not accumulate step after step
(torch.ops.llmpack.paged_kv_reposition, csrc/kvcache/kvcache_reposition.h).
"""
from __future__ import annotations

import torch


def inv_freq_from_config(config, device=None) -> torch.Tensor:
    """The rotary inverse frequencies of a transformers config (fp32), as its
    rotary embedding computes them; the rotary-type registry covers the scaled
    variants (llama3, yarn, linear, ...)."""
    params = getattr(config, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default")
    if rope_type != "default":
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        if rope_type not in ROPE_INIT_FUNCTIONS:
            raise ValueError(f"re-positioning keys needs the rotary type {rope_type!r}, which transformers does not know")
        return ROPE_INIT_FUNCTIONS[rope_type](config, device)[0].float()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dim = int(head_dim * params.get("partial_rotary_factor", 1.0))
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))
