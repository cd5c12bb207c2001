"""The attention function and mask function registered with transformers
under the name ``llmpack_paged``.

The cache's ``update`` puts its layer into the kwargs that transformers then
passes to the attention function (the route its own paged cache uses), so the
attention function is where tokens are written into pages: it is the only
place that sees both the new keys and the padding mask.

* one new token per sequence (decode): append (evicting at the budget), then
  ``torch.ops.llmpack.paged_decode_attention`` over the block tables; its
  per-slot scores feed H2O's accumulators directly;
* a prompt into an empty cache (prefill): causal attention over the prompt
  (SDPA, or chunked eager attention when H2O needs each token's received
  attention), then the real tokens are stored and evicted down to the budget;
* several tokens into a filled cache: one decode step per token, so the
  budget holds at every step;
* no paged cache at all (a plain forward, another Cache): SDPA over the keys
  given, with the causal + padding mask built here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .rope import inv_freq_from_config

NAME = "llmpack_paged"
_EAGER_QUERY_CHUNK = 256   # bounds the [B, Hq, chunk, T] probabilities of an H2O prefill


def padding_mask(attention_mask=None, **_):
    """Mask function: hand the 2D padding mask (bool [B, seen + new] or None)
    through unchanged; the attention function builds what it needs from it."""
    if attention_mask is not None and attention_mask.ndim != 2:
        raise ValueError("llmpack_paged attention takes a 2D padding mask, not a prepared 4D mask")
    return attention_mask


def _causal_mask(real_keys, q_len: int, k_len: int, device) -> torch.Tensor:
    """bool [B or 1, 1, q_len, k_len]: causal (queries are the last q_len
    keys) and padding; a padding query also sees itself, so no row is empty."""
    qi = torch.arange(q_len, device=device)[:, None] + (k_len - q_len)
    kj = torch.arange(k_len, device=device)[None, :]
    mask = (kj <= qi)[None, None]
    if real_keys is not None:
        mask = (mask & real_keys[:, None, None, -k_len:]) | (kj == qi)[None, None]
    return mask


def _dense_attention(query, key, value, mask, scale):
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale,
                                         enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous()


def _attention_with_scores(query, key, value, mask, scale, real_queries):
    """Eager causal attention that also returns the attention each key
    received, summed over real queries and the query heads of its kv-head:
    [B, Hkv, T] fp32 (H2O's accumulators at prefill)."""
    b, hq, t, d = query.shape
    hkv = key.shape[1]
    group = hq // hkv
    kf = key.float().repeat_interleave(group, 1)
    vf = value.float().repeat_interleave(group, 1)
    out = torch.empty(b, hq, t, d, dtype=torch.float32, device=query.device)
    received = torch.zeros(b, hq, t, dtype=torch.float32, device=query.device)
    for s in range(0, t, _EAGER_QUERY_CHUNK):
        e = min(t, s + _EAGER_QUERY_CHUNK)
        logits = (query[:, :, s:e].float() @ kf.transpose(-1, -2)) * scale
        p = torch.softmax(logits.masked_fill(~mask[..., s:e, :], float("-inf")), -1)
        out[:, :, s:e] = p @ vf
        w = real_queries[:, None, s:e, None].float() if real_queries is not None else 1.0
        received += (p * w).sum(2)
    return out.to(query.dtype).transpose(1, 2).contiguous(), received.view(b, hkv, group, t).sum(2)


def _positions(kwargs, layer, b: int, t: int):
    pos = kwargs.get("position_ids")
    if pos is None:
        pos = torch.arange(layer.columns - t, layer.columns, device=layer.device)[None]
    return pos.to(layer.device).long().expand(b, t)


def paged_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention interface: query [B, Hq, T, D], key/value
    [B, Hkv, T, D] (the new tokens when the paged cache is in use) ->
    ([B, T, Hq, D], None)."""
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    layer = kwargs.get("llmpack_kv_layer")
    if layer is None:
        mask = _causal_mask(attention_mask, query.shape[2], key.shape[2], query.device)
        return _dense_attention(query, key, value, mask, scale), None
    layer.consumed = True
    b, _, t, _ = query.shape
    real = attention_mask[:, -t:] if attention_mask is not None else torch.ones(b, t, dtype=torch.bool,
                                                                               device=query.device)
    pos = _positions(kwargs, layer, b, t)
    if layer.any_repos and layer.inv_freq is None:
        layer.inv_freq = inv_freq_from_config(module.config, layer.device)
    if t > 1 and layer.is_empty:
        mask = _causal_mask(real, t, t, query.device)
        if layer.any_heavy:
            out, received = _attention_with_scores(query, key, value, mask, scale, real)
        else:
            out, received = _dense_attention(query, key, value, mask, scale), None
        layer.prefill(key, value, pos, real, received)
        return out, None
    outs = [_decode_step(layer, query[:, :, i], key[:, :, i], value[:, :, i], pos[:, i], real[:, i], scale)
            for i in range(t)]
    return torch.stack(outs, 1), None


def _decode_step(layer, q, k, v, pos, real, scale):
    layer.append_decode(k, v, pos, real)
    out, scores = torch.ops.llmpack.paged_decode_attention(
        q.to(layer.dtype).contiguous(), layer.k_pages, layer.v_pages, layer.tables, layer.lengths, float(scale),
        layer.any_heavy)
    if layer.any_heavy:
        layer.accumulate(scores, real)
    return out.to(q.dtype)


def register() -> None:
    """Register ``llmpack_paged`` with transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, paged_attention_forward)
    AttentionMaskInterface.register(NAME, padding_mask)


def attach(model):
    """Switch a transformers model to the ``llmpack_paged`` attention (needed
    once before ``generate(cache=PagedKVCache(...))``); returns the model."""
    register()
    config = model.config
    if getattr(config, "sliding_window", None) or getattr(config, "attention_chunk_size", None):
        raise ValueError("llmpack_paged attention does not implement sliding-window or chunked attention layers")
    model.set_attn_implementation(NAME)
    return model
