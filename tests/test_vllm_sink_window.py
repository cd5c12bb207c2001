"""Sinks + window eviction in vLLM: the block-table compaction the CPU backend
gets, against the rule written out token by token (no vLLM needed; the vLLM
run is in tests/vllm/test_vllm_plugin.py)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmpack.integrations.vllm.sink_window import SinkWindow, compact, parse


def kept_positions(seq_len: int, query_len: int, block_size: int, sink_tokens: int, window: int) -> list[int]:
    """The rule as the README states it: whole sink blocks, then every token from
    the block holding the window's first token (context - window + 1) on."""
    context = seq_len - query_len
    sink_end = -(-sink_tokens // block_size) * block_size
    window_start = max(0, context - window + 1) // block_size * block_size
    return [p for p in range(seq_len) if p < sink_end or p >= window_start]


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 4), st.sampled_from([1, 4, 32]), st.integers(0, 70), st.integers(1, 90), st.data())
def test_compacted_tables_address_exactly_the_kept_tokens(rows, block_size, sink_tokens, window, data):
    seq_lens = [data.draw(st.integers(1, 300)) for _ in range(rows)]
    query_lens = [data.draw(st.integers(1, s)) for s in seq_lens]
    max_blocks = max(-(-s // block_size) for s in seq_lens) + data.draw(st.integers(0, 3))
    # Distinct physical block ids per row, and one padded row the compaction must leave alone.
    table = torch.randperm(4096)[: (rows + 1) * max_blocks].view(rows + 1, max_blocks).to(torch.int32)
    sink_blocks = SinkWindow("sink", sink_tokens, window).sink_blocks(block_size)
    out, lens = compact(table, torch.tensor(seq_lens, dtype=torch.int32), torch.tensor(query_lens, dtype=torch.int32),
                        block_size, sink_blocks, window)
    assert out.dtype == table.dtype and lens.dtype == torch.int32
    assert torch.equal(out[rows:], table[rows:])
    for r in range(rows):
        kept = kept_positions(seq_lens[r], query_lens[r], block_size, sink_tokens, window)
        assert int(lens[r]) == len(kept), (r, seq_lens[r], query_lens[r])
        # The step's queries are the virtual sequence's last tokens.
        assert kept[-query_lens[r]:] == list(range(seq_lens[r] - query_lens[r], seq_lens[r]))
        for i, p in enumerate(kept):
            assert (int(out[r, i // block_size]), i % block_size) == (int(table[r, p // block_size]), p % block_size)


def test_nothing_dropped_returns_the_same_tensors():
    table = torch.arange(12, dtype=torch.int32).view(2, 6)
    seq, q = torch.tensor([40, 7], dtype=torch.int32), torch.tensor([1, 7], dtype=torch.int32)
    out, lens = compact(table, seq, q, 16, 1, 64)
    assert out is table and lens is seq


def test_the_window_counts_from_the_sinks_end():
    # 16-slot blocks, 1 sink block, window 32, decoding the token at position 100:
    # blocks 0 (sink) and 4.. (window from token 69, in block 4) stay, 1..3 go.
    table = torch.arange(10, 20, dtype=torch.int32).view(1, 10)
    out, lens = compact(table, torch.tensor([101]), torch.tensor([1]), 16, 1, 32)
    assert out[0, :4].tolist() == [10, 14, 15, 16] and int(lens[0]) == 101 - 3 * 16


def test_config_parsing_names_the_bad_field():
    assert parse({}) is None and parse({"other": 1}) is None
    assert parse({"llmpack_kv": {"policy": "sink", "window": 256}}) == SinkWindow("sink", 4, 256)
    assert parse({"llmpack_kv": {"policy": "window", "window": 64}}) == SinkWindow("window", 0, 64)
    bad = [({"policy": "h2o", "window": 8}, "policy"), ({"policy": "sink"}, "window"),
           ({"policy": "sink", "window": 0}, "window"), ({"policy": "sink", "window": 8, "sink_tokens": -1}, "sink_tokens"),
           ({"policy": "window", "window": 8, "sink_tokens": 4}, "keeps no sinks"), ({"window": 8, "budget": 3}, "unknown keys")]
    for cfg, needle in bad:
        with pytest.raises(ValueError, match=needle):
            parse({"llmpack_kv": cfg})
    with pytest.raises(ValueError, match="must be a dict"):
        parse({"llmpack_kv": "sink"})
