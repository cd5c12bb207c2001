"""Sinks + window eviction inside vLLM: the configuration and the block-table
arithmetic (no vLLM import, so the main test venv tests it).

vLLM pages its KV cache in blocks that hold every kv-head of ``block_size``
consecutive tokens, and a request's blocks are its token prefix in order. The
rule, per request, at a step whose queries start after ``context`` cached
tokens (vLLM's ``num_computed_tokens``):

* the first ``sink_blocks = ceil(sink_tokens / block_size)`` blocks are sinks
  and are kept for the request's life (the whole first block, not only its
  first ``sink_tokens`` tokens: eviction is per block);
* the window is vLLM's sliding window of ``window`` tokens, rounded out to
  whole blocks: the blocks wholly before token ``context - window + 1`` (after
  the sinks) are *dropped*: freed by the KV manager (``kv.SinkWindowManager``)
  and left out of attention by the backend (the block tables handed to vLLM's
  CPU kernel are compacted to sinks + window, see :func:`compact`).

So each query sees the sink blocks, then every token from the window's first
block on: between ``window`` and ``window + block_size - 1`` recent tokens
plus the step's own. The KV manager frees with the same formula on a context
no newer than the worker's, so the worker never reads a freed block. Keys keep
the absolute positions vLLM rotated them with (no re-positioning: vLLM
applies RoPE before the cache write, and re-rotating the sinks per step would
need the backend to own RoPE).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

CONFIG_KEY = "llmpack_kv"   # in vLLM's ``additional_config``
POLICIES = ("sink", "window")


@dataclass(frozen=True)
class SinkWindow:
    """``policy`` ``sink`` (StreamingLLM: sinks + window) or ``window`` (no sinks);
    ``window`` recent tokens."""
    policy: str
    sink_tokens: int
    window: int

    def sink_blocks(self, block_size: int) -> int:
        return -(-self.sink_tokens // block_size)


def parse(additional_config) -> SinkWindow | None:
    """The ``llmpack_kv`` entry of vLLM's ``additional_config`` (None when absent):
    ``{"policy": "sink", "sink_tokens": 4, "window": 256}``; ``policy``
    ``"window"`` keeps no sinks. Errors name the bad field."""
    if not isinstance(additional_config, dict) or CONFIG_KEY not in additional_config:
        return None
    cfg = additional_config[CONFIG_KEY]
    if not isinstance(cfg, dict):
        raise ValueError(f"additional_config[{CONFIG_KEY!r}] must be a dict, got {type(cfg).__name__}")
    unknown = set(cfg) - {"policy", "sink_tokens", "window"}
    if unknown:
        raise ValueError(f"additional_config[{CONFIG_KEY!r}]: unknown keys {sorted(unknown)} "
                         "(expected policy, sink_tokens, window)")
    policy = cfg.get("policy", "sink")
    if policy not in POLICIES:
        raise ValueError(f"additional_config[{CONFIG_KEY!r}]['policy'] must be one of {POLICIES} in vLLM "
                         f"(h2o needs what vLLM's scheduler lacks, see the README), got {policy!r}")
    window = cfg.get("window")
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"additional_config[{CONFIG_KEY!r}]['window'] must be an int >= 1, got {window!r}")
    sinks = cfg.get("sink_tokens", 4 if policy == "sink" else 0)
    if not isinstance(sinks, int) or isinstance(sinks, bool) or sinks < 0:
        raise ValueError(f"additional_config[{CONFIG_KEY!r}]['sink_tokens'] must be an int >= 0, got {sinks!r}")
    if policy == "window" and sinks:
        raise ValueError(f"additional_config[{CONFIG_KEY!r}]: policy 'window' keeps no sinks, "
                         f"got sink_tokens={sinks}")
    return SinkWindow(policy, sinks, window)


def dropped_blocks(context: torch.Tensor, block_size: int, sink_blocks: int, window: int) -> torch.Tensor:
    """Per request, how many blocks after the sinks are out of the window for
    queries that start after ``context`` cached tokens (int64)."""
    skipped_tokens = (context.to(torch.int64) - window + 1).clamp_min(0)
    return (skipped_tokens // block_size - sink_blocks).clamp_min(0)


def compact(block_table: torch.Tensor, seq_lens: torch.Tensor, query_lens: torch.Tensor, block_size: int,
            sink_blocks: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block tables and lengths of the virtual sequences sinks + window, for the
    first ``len(seq_lens)`` rows of ``block_table`` (new tensors; the worker's
    persistent table is not touched). Row ``r`` keeps blocks ``[0, sink_blocks)``
    and ``[sink_blocks + d_r, ...)`` where ``d_r = dropped_blocks(seq_lens[r] -
    query_lens[r])``; its length shrinks by ``d_r * block_size``. The queries
    stay the last tokens of the virtual sequence, so a causal kernel masks
    them as before."""
    n = seq_lens.shape[0]
    drop = dropped_blocks(seq_lens - query_lens, block_size, sink_blocks, window)
    if n == 0 or not bool((drop > 0).any()):
        return block_table, seq_lens
    table = block_table[:n]
    cols = torch.arange(table.shape[1], dtype=torch.int64)
    src = torch.where(cols[None, :] < sink_blocks, cols[None, :], cols[None, :] + drop[:, None])
    # Columns past a row's blocks are never read (the length bounds them): any valid index does.
    src = src.clamp_max(table.shape[1] - 1)
    out = block_table.clone()
    out[:n] = torch.gather(table, 1, src)
    return out, seq_lens - (drop * block_size).to(seq_lens.dtype)
