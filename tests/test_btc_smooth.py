"""SmoothQuant-style activation smoothing (llmpack.compress.smooth,
``llmpack.quantize(smooth=alpha)``): folding the scales into the norms and
up_proj leaves the float model's logits unchanged; with outlier activation
channels it lowers the error of low-bit activations; unsupported models and
arguments are clear errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import llmpack
from llmpack.compress.prune import find_decoder_layers
from llmpack.compress.smooth import activation_absmax, smooth
from llmpack.models import tiny_llama


def outlier_llama(seed: int = 0):
    """tiny_llama whose norms make a few activation channels ~30x the rest, as in trained LLMs."""
    model = tiny_llama(seed, hidden_size=128, intermediate_size=192)
    for layer in model.model.layers:
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.weight[[3, 50, 97]] *= 30.0
    return model


def calib(n: int = 8, seed: int = 1):
    return torch.randint(0, 128, (n, 32), generator=torch.Generator().manual_seed(seed))


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def test_smoothing_keeps_the_float_model():
    model, ids = outlier_llama(), calib()
    with torch.no_grad():
        want = model(ids).logits
    q = model.model.layers[0].self_attn.q_proj
    before = activation_absmax(model, [q], [ids], progress=False)[id(q)]
    n = smooth(model, find_decoder_layers(model), [ids], alpha=0.5, progress=False)
    assert n == 2 * 6                        # q, k, v, gate, up, down per layer
    with torch.no_grad():
        got = model(ids).logits
    assert rel_err(got, want) < 1e-5
    after = activation_absmax(model, [q], [ids], progress=False)[id(q)]
    spread = lambda a: float(a.max() / a.median())  # noqa: E731
    assert spread(after) < spread(before) / 4, (spread(before), spread(after))


@pytest.mark.parametrize("abits", [4, 6])
def test_smoothing_lowers_low_bit_activation_error(abits):
    ids = calib()
    errs = {}
    for alpha in (None, 0.5):
        model = outlier_llama()
        with torch.no_grad():
            want = model(ids).logits
        report = llmpack.quantize(model, wbits=8, abits=abits, group_size=32, calibration=ids, smooth=alpha,
                                  progress=False)
        with torch.no_grad():
            errs[alpha] = rel_err(model(ids).logits, want)
        if alpha is not None:
            assert "smoothed the inputs of 12 Linears (SmoothQuant, alpha 0.5)" in str(report)
    assert errs[0.5] < 0.7 * errs[None], errs


def test_smoothed_model_saves_and_loads(tmp_path):
    model, ids = outlier_llama(), calib()
    llmpack.quantize(model, wbits=4, abits=8, group_size=32, calibration=ids, smooth=0.6, progress=False)
    with torch.no_grad():
        want = model(ids[:2]).logits
    llmpack.save(model, str(tmp_path))
    with torch.no_grad():
        assert torch.equal(llmpack.load(str(tmp_path))(ids[:2]).logits, want)


class OnePlusNorm(nn.Module):
    """Gemma-style (1 + w) * rms(x): the scales cannot be folded into it."""

    def __init__(self, width):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(width), requires_grad=False)

    def forward(self, x):
        return (1 + self.weight) * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def test_bad_arguments_and_models():
    ids = calib(2)
    with pytest.raises(ValueError, match="smooth= needs calibration inputs"):
        llmpack.quantize(tiny_llama(), abits=4, smooth=0.5)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\], got 1.5"):
        llmpack.quantize(tiny_llama(), abits=4, smooth=1.5, calibration=ids, progress=False)
    model = tiny_llama()
    model.model.layers[1].input_layernorm = OnePlusNorm(64)
    with pytest.raises(ValueError, match=r"layer 1's input_layernorm \(OnePlusNorm\) does not scale its output"):
        llmpack.quantize(model, abits=4, smooth=0.5, calibration=ids, progress=False)
    model = tiny_llama()
    del model.model.layers[0].mlp.up_proj
    with pytest.raises(ValueError, match="supports Llama-style decoder layers.*layer 0 has no"):
        llmpack.quantize(model, abits=4, smooth=0.5, calibration=ids, progress=False)
