"""Sinks + window eviction inside vLLM (imports vLLM: loaded by
``llmpack.integrations.vllm.register``). The rule is in :mod:`.sink_window`;
here it is wired into vLLM's three places:

* **KV cache spec**: with ``additional_config={"llmpack_kv": {...}}`` every
  full-attention decoder layer declares a :class:`SinkWindowSpec`, a sliding-
  window spec that also retains the sink blocks (so vLLM's pool sizing and
  admission count sinks + window per request, not the model's context);
* **KV manager** (engine process): :class:`SinkWindowManager` frees the blocks
  between the sinks and the window, as vLLM's sliding-window manager frees
  those before its window; prefix-cache hits are not served (a hit's blocks
  would have to carry the sinks too);
* **attention** (worker): vLLM's CPU backend gets block tables compacted to
  sinks + window (:func:`.sink_window.compact`), so its own kernel attends
  to exactly the kept blocks.

CPU backend only (vLLM's other backends would need the same compaction).
"""
from __future__ import annotations

import dataclasses
import functools

import torch

from vllm.model_executor.layers.attention.attention import Attention
from vllm.utils.math_utils import cdiv
from vllm.v1.core.single_type_kv_cache_manager import SlidingWindowManager
from vllm.v1.kv_cache_interface import FullAttentionSpec, SlidingWindowSpec
from vllm.v1.kv_cache_spec_registry import KVCacheSpecRegistry

from .sink_window import CONFIG_KEY, compact, parse


@dataclasses.dataclass(frozen=True, kw_only=True)
class SinkWindowSpec(SlidingWindowSpec):
    """vLLM's sliding-window spec (``sliding_window`` recent tokens) plus the
    blocks holding the first ``sink_tokens`` tokens, kept for a request's life."""
    sink_tokens: int = 0

    @property
    def sink_blocks(self) -> int:
        return cdiv(self.sink_tokens, self.block_size)

    def max_admission_blocks_per_request(self, max_in_flight_tokens: int, max_model_len: int) -> int:
        window_blocks = super().max_admission_blocks_per_request(max_in_flight_tokens, max_model_len)
        return min(window_blocks + self.sink_blocks, cdiv(max_model_len, self.block_size) + 1)


class SinkWindowManager(SlidingWindowManager):
    """Frees what vLLM's sliding-window manager frees, except the sink blocks."""

    def __init__(self, kv_cache_spec: SinkWindowSpec, **kwargs) -> None:
        super().__init__(kv_cache_spec, **kwargs)
        self.sink_blocks = kv_cache_spec.sink_blocks

    def remove_skipped_blocks(self, request_id: str, processed_computed_tokens: int,
                              num_prompt_tokens: int | None = None) -> None:
        skipped_blocks = self.get_num_skipped_tokens(processed_computed_tokens) // self.block_size
        last = min(skipped_blocks, len(self.req_to_blocks[request_id]))
        if last > self.sink_blocks:
            self._remove_blocks_in_range(request_id, self.sink_blocks, last)

    @classmethod
    def find_longest_cache_hit(cls, block_hashes, max_length, kv_cache_group_ids, block_pool, kv_cache_spec,
                               drop_eagle_block, alignment_tokens, dcp_world_size=1, pcp_world_size=1):
        return tuple([] for _ in kv_cache_group_ids), 0


# Built-ins first: a registry that is not empty is taken as complete.
KVCacheSpecRegistry._ensure_registered()
KVCacheSpecRegistry.register(SinkWindowSpec, SinkWindowManager, uniform_type_base_spec=SlidingWindowSpec)


def _sink_window_spec(layer: Attention, spec, vllm_config):
    rule = parse(vllm_config.additional_config)
    if rule is None or spec is None:
        return spec
    if type(spec) is not FullAttentionSpec:
        raise NotImplementedError(f"additional_config[{CONFIG_KEY!r}]: layer {layer.layer_name} has a "
                                  f"{type(spec).__name__}; sink/window eviction applies to full-attention layers only")
    backend = layer.attn_backend.get_name()
    if backend != "CPU_ATTN":
        raise NotImplementedError(f"additional_config[{CONFIG_KEY!r}]: sink/window eviction runs on vLLM's CPU "
                                  f"attention backend only, this layer uses {backend}")
    # The fields both specs have (the page geometry); FullAttentionSpec's own window fields stay behind.
    common = {f.name for f in dataclasses.fields(SlidingWindowSpec) if f.init} - {"sliding_window"}
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(FullAttentionSpec) if f.name in common}
    return SinkWindowSpec(**fields, sliding_window=rule.window, sink_tokens=rule.sink_tokens)


def _patch_spec() -> None:
    original = Attention.get_kv_cache_spec
    if getattr(original, "_llmpack", False):
        return

    @functools.wraps(original)
    def get_kv_cache_spec(self, vllm_config):
        return _sink_window_spec(self, original(self, vllm_config), vllm_config)

    get_kv_cache_spec._llmpack = True
    Attention.get_kv_cache_spec = get_kv_cache_spec


def _patch_cpu_backend() -> None:
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionMetadataBuilder
    except ImportError:  # a vLLM build without the CPU backend: nothing to compact
        return
    original = CPUAttentionMetadataBuilder.build
    if getattr(original, "_llmpack", False):
        return

    @functools.wraps(original)
    def build(self, common_prefix_len, common_attn_metadata, fast_build=False):
        spec = self.kv_cache_spec
        if isinstance(spec, SinkWindowSpec):
            common_attn_metadata = _compacted(common_attn_metadata, spec)
        return original(self, common_prefix_len, common_attn_metadata, fast_build)

    build._llmpack = True
    CPUAttentionMetadataBuilder.build = build


def _compacted(meta, spec: SinkWindowSpec):
    n = meta.num_reqs
    starts = meta.query_start_loc_cpu[: n + 1]
    query_lens = (starts[1:] - starts[:-1]).to(meta.seq_lens.dtype)
    seq_lens = meta.seq_lens[:n]
    table, lens = compact(meta.block_table_tensor, seq_lens, query_lens, spec.block_size, spec.sink_blocks,
                          spec.sliding_window)
    if table is meta.block_table_tensor:
        return meta
    if meta.seq_lens.shape[0] > n:  # padded rows stay as they were
        lens = torch.cat([lens, meta.seq_lens[n:]])
    return dataclasses.replace(meta, block_table_tensor=table, seq_lens=lens, max_seq_len=int(lens[:n].max()))


def install() -> None:
    """Patch vLLM (idempotent). Inert unless ``additional_config`` names ``llmpack_kv``."""
    _patch_spec()
    _patch_cpu_backend()
