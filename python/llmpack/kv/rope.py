"""Re-rotating cached keys (StreamingLLM's "positions inside the cache").

transformers applies RoPE before the cache sees a key, so a cached key is
already rotated to its absolute position p. RoPE rotations compose,
R(p + d) = R(d) R(p), so moving a key to position p + d needs only R(d) applied
to the stored key: the un-rotated key is never needed. The cache keeps each
re-positioned slot's key as it arrived (fp32) and rotates that copy by the
total offset each time, so bf16 rounding does not accumulate step after step.
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


def rotate_by(keys: torch.Tensor, delta: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """keys [..., D] (rotate-half convention, as Llama's apply_rotary_pos_emb)
    rotated by ``delta`` [...] positions; fp32 in, fp32 out."""
    angles = delta.to(torch.float32)[..., None] * inv_freq          # [..., D_rot / 2]
    cos = torch.cat((angles.cos(), angles.cos()), dim=-1)
    sin = torch.cat((angles.sin(), angles.sin()), dim=-1)
    rot = cos.shape[-1]
    x, rest = keys[..., :rot], keys[..., rot:]
    half = rot // 2
    rotated_half = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return torch.cat((x * cos + rotated_half * sin, rest), dim=-1)
