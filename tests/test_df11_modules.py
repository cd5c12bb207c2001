"""DF11Linear / DF11Embedding / compress_lossless: a compressed model's
logits are bit-identical to the bf16 original's, it saves and loads through
llmpack.save / llmpack.load, and official DFloat11 folders load."""
from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

import llmpack
from llmpack.nn import DF11Embedding, DF11Linear, compress_lossless

pytest.importorskip("transformers")


def tiny_bf16(seed=0):
    from llmpack.models import tiny_llama

    return tiny_llama(seed, dtype=torch.bfloat16)


def logits(model):
    ids = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return model(ids).logits


def test_compress_lossless_is_bit_identical_and_smaller():
    model = tiny_bf16()
    before = logits(model)
    report = compress_lossless(model, progress=False)
    assert len(report.swapped) == 2 * 7 + 2  # 14 decoder Linears + embedding + tied head
    assert isinstance(model.lm_head, DF11Linear) and isinstance(model.model.embed_tokens, DF11Embedding)
    assert model.lm_head.stream is model.model.embed_tokens.stream  # the tied table compressed once
    assert report.compressed_bytes < 0.72 * report.dense_bytes
    assert torch.equal(logits(model), before)


def test_linear_modes_and_dense_weight():
    torch.manual_seed(0)
    lin = nn.Linear(64, 24).bfloat16()
    d = DF11Linear.from_linear(lin)
    assert torch.equal(d.dense_weight().view(torch.int16), lin.weight.view(torch.int16))
    x = torch.randn(3, 64).bfloat16()
    assert torch.equal(d(x), lin(x))
    fused = DF11Linear.from_linear(lin, mode="fused")
    torch.testing.assert_close(fused(x), lin(x), rtol=2e-2, atol=2e-2)
    with pytest.raises(TypeError, match="bf16"):
        DF11Linear.from_linear(nn.Linear(4, 4))


def test_save_and_load_round_trip(tmp_path):
    model = tiny_bf16(1)
    before = logits(model)
    compress_lossless(model, progress=False)
    llmpack.save(model, tmp_path)
    qc = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    fmts = {s["format"] for s in qc["modules"].values()}
    assert fmts == {"df11", "df11_embedding"}
    back = llmpack.load(tmp_path)
    assert isinstance(back.model.layers[0].mlp.up_proj, DF11Linear)
    assert torch.equal(logits(back), before)


def test_corrupted_stream_in_a_saved_model_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    model = tiny_bf16(2)
    compress_lossless(model, progress=False)
    llmpack.save(model, tmp_path)
    path = os.path.join(tmp_path, "model.safetensors")
    t = load_file(path)
    key = "model.layers.1.self_attn.o_proj.stream"
    t[key] = t[key].clone()
    t[key][:32] = 0xFF
    save_file(t, path)
    with pytest.raises(ValueError, match=r"model\.layers\.1\.self_attn\.o_proj: df11_decode: corrupted stream in chunk 0"):
        llmpack.load(tmp_path)


def test_load_official_folder(tmp_path):
    """An official-layout folder (written here by our to_official, one
    safetensors file per module, as the official compressor does) decodes to
    the original weights, named as the model's parameters."""
    from safetensors.torch import save_file

    from llmpack.reference import df11 as ref

    model = tiny_bf16(3)
    weights = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and name.startswith("model.layers.0"):
            f = ref.to_official(mod.weight.detach(), 8, 64)
            f["split_positions"] = torch.zeros(0, dtype=torch.int64)
            save_file({f"{name}.{k}": v.contiguous() for k, v in f.items()}, str(tmp_path / f"{name}.safetensors"))
            weights[f"{name}.weight"] = mod.weight.detach()
    cfg = {"dfloat11_config": {"version": "0.5.0", "threads_per_block": [64], "bytes_per_thread": 8,
                               "pattern_dict": {r"model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj": []}}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    got = llmpack.df11.load_official(str(tmp_path), model)
    assert set(got) == set(weights)
    for name, w in weights.items():
        assert got[name].shape == w.shape and torch.equal(got[name].view(torch.int16), w.view(torch.int16)), name


@pytest.mark.parametrize("dim", [576, 2048, 100, 3000])
def test_embedding_decodes_only_the_rows_it_needs(dim):
    """A generation step looks up a few rows: those are decoded from their
    chunks alone (rows straddling chunk boundaries included), bit-exactly."""
    torch.manual_seed(dim)
    emb = nn.Embedding(50, dim, padding_idx=2).bfloat16()
    d = DF11Embedding.from_embedding(emb)
    for ids in ([0], [49], [3, 3, 17, 48], list(range(50)) * 2):
        x = torch.tensor([ids])
        assert torch.equal(d(x).view(torch.int16), emb(x).view(torch.int16)), ids
    with pytest.raises(IndexError, match="out of range"):
        d(torch.tensor([50]))


def test_chunk_span_is_a_valid_container():
    w = (torch.randn(5 * llmpack._ops.DF11_CHUNK + 123) * 0.03).bfloat16()
    c = llmpack.df11.compress(w)
    for c0, c1 in [(0, 1), (2, 4), (5, 6), (0, 6)]:
        part = llmpack.df11.decompress(c.chunk_span(c0, c1))
        lo, hi = c0 * llmpack._ops.DF11_CHUNK, min(w.numel(), c1 * llmpack._ops.DF11_CHUNK)
        assert torch.equal(part.view(torch.int16), w[lo:hi].view(torch.int16))
    with pytest.raises(IndexError):
        c.chunk_span(3, 7)
