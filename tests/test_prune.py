"""N:M pruning producers (magnitude, Wanda, SparseGPT), the corpus reader and
perplexity. Fast: tiny random models and constructed cases only; the real
SmolLM2 run lives in bench/sparse24_quality.py."""
from __future__ import annotations

import gzip
import math
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
from llmpack.eval.perplexity import perplexity


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


def correlated_inputs(n=1024, k=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) / math.sqrt(k) + torch.eye(k)
    return torch.randn(n, k, generator=g) @ mix * torch.rand(k, generator=g).add(0.1)


def test_sparsegpt_reconstructs_layer_output_best():
    x = correlated_inputs()
    dense = nn.Linear(64, 32, bias=False)
    errors = {}
    for method in METHODS:
        model = nn.Sequential(nn.Linear(64, 32, bias=False))
        model[0].load_state_dict(dense.state_dict())
        prune(model, method, "2:4", calibration=x, batch_size=256, progress=False)
        assert_nm(model[0].weight, 2, 4)
        with torch.no_grad():
            errors[method] = (dense(x) - model(x)).norm().item()
    assert errors["sparsegpt"] < 0.8 * errors["wanda"] < errors["magnitude"], errors


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
