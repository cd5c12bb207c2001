"""N:M pruning producers (magnitude, Wanda, SparseGPT), the corpus reader and
perplexity. Fast: tiny random models and constructed cases only; the real
SmolLM2 run lives in bench/sparse24_quality.py."""
from __future__ import annotations

import gzip
import struct

import pytest
import torch
from torch import nn

from llmpack.compress.prune import (
    METHODS,
    nm_mask_from_scores,
    parse_pattern,
    prune,
    sparsegpt_prune_weight,
)
from llmpack.data import corpus, rdata
from llmpack.eval.perplexity import greedy_tokens_per_s, perplexity


def assert_nm(weight: torch.Tensor, n: int, m: int):
    nonzero = (weight.reshape(weight.shape[0], -1, m) != 0).sum(-1)
    assert int(nonzero.max()) <= n, f"a group of {m} has {int(nonzero.max())} > {n} non-zeros"


@pytest.fixture
def tiny():
    pytest.importorskip("transformers")
    from llmpack.models import tiny_llama

    return tiny_llama(0)


def calib_tokens(seed=0, n=6, seq=16, vocab=128):
    return torch.randint(0, vocab, (n, seq), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- patterns and masks

@pytest.mark.parametrize("bad", ["2-4", "4:2", "0:4", "4:4", "a:b", "2:4:8", "", 24, None])
def test_bad_pattern_is_a_clear_value_error(bad):
    with pytest.raises(ValueError, match="N:M"):
        parse_pattern(bad)
    with pytest.raises(ValueError, match="N:M"):
        prune(nn.Linear(8, 8), "magnitude", bad)


def test_unknown_method_and_missing_calibration():
    with pytest.raises(ValueError, match="unknown pruning method"):
        prune(nn.Linear(8, 8), "random")
    for method in ("wanda", "sparsegpt"):
        with pytest.raises(ValueError, match="calibration"):
            prune(nn.Linear(8, 8), method)


def test_nm_mask_keeps_exactly_n_highest_per_group():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.2, 3.0, -1.0, 2.0, 0.0]])
    keep = nm_mask_from_scores(scores, 2, 4)
    assert keep.tolist() == [[False, True, True, False, True, False, True, False]]
    big = torch.randn(16, 64)
    assert (nm_mask_from_scores(big, 4, 8).reshape(16, 8, 8).sum(-1) == 4).all()
    with pytest.raises(ValueError, match="multiple of M"):
        nm_mask_from_scores(torch.randn(2, 6), 2, 4)


def test_magnitude_keeps_top2_abs_per_group():
    lin = nn.Linear(16, 8, bias=False)
    w = lin.weight.detach().clone()
    prune(lin, "magnitude", "2:4", progress=False)
    groups, pruned = w.reshape(8, 4, 4), lin.weight.reshape(8, 4, 4)
    top2 = groups.abs().topk(2, dim=-1).indices
    expected = torch.zeros_like(groups).scatter(-1, top2, groups.gather(-1, top2))
    assert torch.equal(pruned, expected)


# ---------------------------------------------------------------- whole models

@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
@pytest.mark.parametrize("method", METHODS)
def test_pattern_holds_for_every_method_on_tiny_llama(tiny, method, pattern):
    n, m = parse_pattern(pattern)
    report = prune(tiny, method, pattern, calibration=calib_tokens(), batch_size=4, progress=False)
    assert report.skipped == {"lm_head": "output head"}
    assert len(report.pruned) == 2 * 7  # q k v o gate up down, two layers
    assert report.sparsity == pytest.approx(1 - n / m, abs=1e-3)
    for name, mod in tiny.named_modules():
        if name in report.pruned:
            assert_nm(mod.weight, n, m)
    assert torch.count_nonzero(tiny.model.embed_tokens.weight) == tiny.model.embed_tokens.weight.numel()
    with torch.no_grad():
        assert torch.isfinite(tiny(calib_tokens(1)).logits).all()


def test_linears_outside_the_decoder_stack_are_reported(tiny):
    """Outside Linears get no per-layer statistics and are reported, not pruned blindly."""
    report = prune(tiny, "sparsegpt", calibration=calib_tokens(), skip=lambda name, mod: False, progress=False)
    assert report.skipped == {"lm_head": "outside the decoder layer stack"}


def test_skip_report_reasons():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 6), nn.Linear(6, 4), nn.Linear(4, 4))
    report = prune(model, "magnitude", "2:4", progress=False,
                   skip=lambda name, mod: "kept dense on purpose" if name == "3" else False)
    assert report.pruned == ["0", "1"]
    assert report.skipped["2"] == "in_features=6 is not a multiple of M=4"
    assert report.skipped["3"] == "kept dense on purpose"
    assert torch.count_nonzero(model[2].weight) == model[2].weight.numel()
    assert "skipped 2: in_features=6" in str(report)


def tiny_mixed_layer_types(seed=0):
    """A tiny Gemma3 text model whose layers alternate sliding-window (local
    rotary base, windowed mask) and full attention (global rotary base, causal
    mask): each layer type gets its own position embeddings and mask."""
    pytest.importorskip("transformers")
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
        sliding_window=4, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                         "full_attention": {"rope_type": "default", "rope_theta": 10000.0}},
        attn_implementation="eager")
    torch.manual_seed(seed)
    return Gemma3ForCausalLM(cfg).eval().requires_grad_(False)


def reference_layerwise_prune(model, method, batches):
    """Layer-by-layer pruning as it is meant to work, without llmpack's loop:
    the statistics of layer i's Linears are hooked from the real inputs those
    Linears see in the model's own forward pass, layers < i already pruned."""
    from llmpack.compress.prune import _STATS, find_decoder_layers
    from llmpack.models import forward_no_cache

    for layer in find_decoder_layers(model):
        lins = {name: mod for name, mod in layer.named_modules() if isinstance(mod, nn.Linear)}
        shared = {}
        stats = {name: _STATS[method](lin, shared) for name, lin in lins.items()}
        handles = [lin.register_forward_hook(lambda mod, inp, out, s=stats[name]: s.add(inp[0]))
                   for name, lin in lins.items()]
        with torch.no_grad():
            for batch in batches:
                forward_no_cache(model, batch)
                shared.clear()
        for h in handles:
            h.remove()
        with torch.no_grad():
            for name, lin in lins.items():
                lin.weight.copy_(stats[name].pruned_weight(lin.weight, 2, 4))


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_layerwise_calibration_gives_each_layer_type_its_own_inputs(method):
    """The layer-wise loop must call every layer with its own masks and rotary
    tables: a loop that reuses layer 0's (sliding) arguments for the full
    attention layers diverges from the reference from layer 1 on."""
    calib = calib_tokens(seed=3, n=4, seq=16)
    ours, ref = tiny_mixed_layer_types(), tiny_mixed_layer_types()
    prune(ours, method, "2:4", calibration=calib, batch_size=2, progress=False)
    reference_layerwise_prune(ref, method, list(calib.split(2)))
    for (name, a), (_, b) in zip(ours.named_modules(), ref.named_modules()):
        if isinstance(a, nn.Linear) and name.startswith("model.layers"):
            same_mask = ((a.weight != 0) == (b.weight != 0)).float().mean().item()
            if method == "wanda":  # identical inputs give identical norms: exact
                assert same_mask == 1.0, f"{name}: Wanda masks differ from the reference"
                assert torch.equal(a.weight, b.weight), name
            else:  # SparseGPT: the same math, up to near-ties of the OBS scores
                assert same_mask > 0.99, f"{name}: only {same_mask:.3f} of the mask agrees"
                torch.testing.assert_close(a.weight, b.weight, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------- constructed cases

def test_wanda_follows_input_norms_where_magnitude_does_not():
    lin = nn.Linear(8, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.9, 0.2, 0.1, 1.0, 0.9, 0.2, 0.1]]))
    # Features 2,3 (and 6,7) are 100x larger in the data than 0,1 (and 4,5).
    x = torch.randn(256, 8) * torch.tensor([1, 1, 100, 100, 1, 1, 100, 100.0])
    mag, wanda = nn.Sequential(nn.Linear(8, 1, bias=False)), nn.Sequential(nn.Linear(8, 1, bias=False))
    for m in (mag, wanda):
        m[0].load_state_dict(lin.state_dict())
    prune(mag, "magnitude", progress=False)
    prune(wanda, "wanda", calibration=x, progress=False)
    assert (mag[0].weight != 0).tolist() == [[True, True, False, False] * 2]
    assert (wanda[0].weight != 0).tolist() == [[False, False, True, True] * 2]


def correlated_inputs(n=1024, k=64, rank=16, seed=0):
    """Low-rank features plus noise, per-feature scales: pruned inputs are then
    largely predictable from the kept ones, which only SparseGPT's update uses."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, rank, generator=g) @ torch.randn(rank, k, generator=g)
    return (x + 0.1 * torch.randn(n, k, generator=g)) * torch.rand(k, generator=g).add(0.1)


def prune_copy(dense: nn.Linear, method, x, **kw):
    model = nn.Sequential(nn.Linear(dense.in_features, dense.out_features, bias=False))
    model[0].load_state_dict(dense.state_dict())
    prune(model, method, "2:4", calibration=x, batch_size=256, progress=False, **kw)
    assert_nm(model[0].weight, 2, 4)
    return model[0]


def test_sparsegpt_reconstructs_layer_output_best():
    torch.manual_seed(0)
    x, dense = correlated_inputs(), nn.Linear(64, 32, bias=False)
    with torch.no_grad():
        errors = {method: (dense(x) - prune_copy(dense, method, x)(x)).norm().item() for method in METHODS}
    assert errors["sparsegpt"] < 0.6 * errors["wanda"], errors
    assert errors["wanda"] < errors["magnitude"], errors


def test_sparsegpt_equals_wanda_for_uncorrelated_inputs():
    """With a diagonal Hessian there is nothing to propagate: SparseGPT's score
    w^2 / diag(H^-1)^2 reduces to Wanda's (|w| ||x||)^2 and kept weights stay put."""
    torch.manual_seed(0)
    scales = torch.rand(32) + 0.1
    x = torch.diag(scales).repeat(4, 1)  # X^T X = 4 diag(scales^2)
    dense = nn.Linear(32, 16, bias=False)
    sgpt = prune_copy(dense, "sparsegpt", x, percdamp=0.0)
    assert torch.equal(sgpt.weight, prune_copy(dense, "wanda", x).weight)


def test_sparsegpt_handles_dead_columns_and_small_blocks():
    x = correlated_inputs(k=32)
    x[:, 5] = 0  # never active: its weights are free, H is singular there
    w = torch.randn(16, 32)
    for blocksize in (4, 6, 128):  # 6 is rounded down to a multiple of M
        out = sparsegpt_prune_weight(w, x.T @ x, 2, 4, blocksize=blocksize)
        assert torch.isfinite(out).all() and out.dtype == w.dtype
        assert_nm(out, 2, 4)
        assert (out[:, 5] == 0).all()


# ---------------------------------------------------------------- data and eval

def _xdr(*ints):
    return struct.pack(f">{len(ints)}i", *ints)


def _charsxp(s: str):
    raw = s.encode()
    return _xdr(9 | (8 << 12), len(raw)) + raw  # CHARSXP, UTF-8 level


def test_rds_reader_on_a_hand_built_stream(tmp_path):
    # c(a="x", b=NA) with a names attribute, serialized as R's XDR version 3.
    body = (b"X\n" + _xdr(3, 0x040300, 0x030500, 5) + b"UTF-8"
            + _xdr(16 | (1 << 9), 2) + _charsxp("x") + _xdr(9, -1)
            + _xdr(2 | (1 << 10)) + _xdr(1) + _charsxp("names")
            + _xdr(16, 2) + _charsxp("a") + _charsxp("b") + _xdr(254))
    path = tmp_path / "v.rds"
    path.write_bytes(gzip.compress(body))
    value = rdata.read_rds(path)
    assert list(value) == ["x", None] and value.names == ["a", "b"]


@pytest.mark.skipif(not corpus.austen_available(), reason="r-cran-janeaustenr not installed")
def test_austen_novels_are_read_from_the_r_package():
    books = corpus.load_austen()
    assert list(books) == list(corpus.AUSTEN_TITLES.values())
    assert books["Pride & Prejudice"].count("It is a truth universally acknowledged") == 1
    assert all(len(t) > 400_000 for t in books.values())
    calib, held, desc = corpus.calibration_and_eval_text("austen")
    assert "Persuasion" in desc and "Sir Walter Elliot" in held and "Sir Walter Elliot" not in calib


def test_missing_corpus_names_the_apt_package(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus, "_R_LIBRARIES", (str(tmp_path),))
    monkeypatch.delenv("LLMPACK_R_LIBRARY", raising=False)
    with pytest.raises(corpus.CorpusNotInstalled, match="apt-get install -y r-cran-janeaustenr"):
        corpus.load_austen()


class CharTokenizer:
    def encode(self, text, **_):
        return [ord(c) % 128 for c in text]


def test_tokenize_chunks_is_deterministic_and_disjoint():
    text = "".join(chr(97 + i % 26) for i in range(1000))
    a = corpus.tokenize_chunks(CharTokenizer(), text, 50, 7)
    assert a.shape == (7, 50) and a.dtype == torch.long
    assert torch.equal(a, corpus.tokenize_chunks(CharTokenizer(), text, 50, 7))
    assert a[1, 0] == ord(text[1000 // 7]) % 128  # windows spread over the whole text
    with pytest.raises(ValueError, match="fewer than"):
        corpus.tokenize_chunks(CharTokenizer(), text, 200, 6)


def test_perplexity_of_uniform_model_is_vocab_size():
    class Uniform(nn.Module):
        def forward(self, ids):
            return torch.zeros(*ids.shape, 37)

    assert perplexity(Uniform(), calib_tokens(vocab=37)) == pytest.approx(37, rel=1e-6)
    assert greedy_tokens_per_s(Uniform(), CharTokenizer(), "hi", new_tokens=3) > 0


def test_greedy_tokens_per_s_and_tiny_llama_is_deterministic(tiny):
    from llmpack.models import tiny_llama

    again = tiny_llama(0)
    assert all(torch.equal(a, b) for a, b in zip(tiny.state_dict().values(), again.state_dict().values()))
    assert greedy_tokens_per_s(tiny, CharTokenizer(), "hello", new_tokens=4) > 0
