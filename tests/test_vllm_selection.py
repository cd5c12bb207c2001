"""Which llmpack format serves each vLLM layer (no vLLM needed: the choice
is plain Python in llmpack.integrations.vllm.selection)."""
from __future__ import annotations

import pytest

from llmpack.integrations.vllm.selection import format_of, is_ct_sparse24, is_tied

PACKED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}


def llmpack_cfg(modules, aliases=None):
    return {"quant_method": "llmpack", "modules": modules, "aliases": aliases or {}}


def test_merged_layers_take_their_parts_format():
    qc = llmpack_cfg({f"model.layers.0.self_attn.{p}": {"format": "df11"} for p in ("q_proj", "k_proj", "v_proj")})
    assert format_of(qc, "model.layers.0.self_attn.qkv_proj", PACKED) == "df11"
    assert format_of(qc, "model.layers.0.mlp.gate_up_proj", PACKED) is None


def test_merged_layer_with_mixed_formats_is_refused_by_name():
    qc = llmpack_cfg({"model.layers.0.self_attn.q_proj": {"format": "df11"},
                      "model.layers.0.self_attn.k_proj": {"format": "sparse24"},
                      "model.layers.0.self_attn.v_proj": {"format": "df11"}})
    with pytest.raises(ValueError, match="qkv_proj.*different formats"):
        format_of(qc, "model.layers.0.self_attn.qkv_proj", PACKED)


def test_tied_head_is_recognised_from_the_aliases():
    qc = llmpack_cfg({"lm_head": {"format": "df11"}, "model.embed_tokens": {"format": "df11_embedding"}},
                     {"lm_head.stream": "model.embed_tokens.stream"})
    assert is_tied(qc, "lm_head") and not is_tied(qc, "model.embed_tokens")


def test_compressed_tensors_2_4_is_claimed_only_without_quantization():
    sc = {"format": "sparse-24-bitmask", "targets": ["Linear"], "ignore": ["lm_head"]}
    assert is_ct_sparse24({"quant_method": "compressed-tensors", "sparsity_config": sc})
    assert not is_ct_sparse24({"quant_method": "compressed-tensors", "sparsity_config": sc, "config_groups": {"g": {}}})
    qc = {"quant_method": "compressed-tensors", "sparsity_config": sc}
    assert format_of(qc, "model.layers.0.mlp.down_proj", PACKED) == "ct-sparse24"
    assert format_of(qc, "lm_head", PACKED) is None
