"""SparseLinear and sparsify: drop-in behaviour, state_dict, skip report."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import llmpack
from llmpack.nn import SparseLinear, sparsify

from conftest import assert_close_dot


def pruned_linear(k, n, bias=True, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias).to(dtype)
    w = lin.weight.data
    kp = k - k % 4
    g = w[:, :kp].reshape(n, -1, 4)
    keep = g.abs().float().topk(2, -1).indices
    g.mul_(torch.zeros_like(g).scatter_(-1, keep, 1))
    if k % 4:  # a partial last group must be 2:4 too (it is padded with zeros)
        w[:, kp + 2:] = 0
    return lin


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("k,n", [(8, 4), (12, 7), (96, 33), (7, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_linear(isa, k, n, dtype, bias):
    lin = pruned_linear(k, n, bias, dtype)
    sp = SparseLinear.from_linear(lin)
    assert sp.values.dtype == dtype and (sp.bias is None) == (not bias)
    assert torch.equal(sp.dense_weight(), lin.weight.data)
    x = torch.randn(2, 3, k).to(dtype)
    with torch.no_grad():
        ref = nn.functional.linear(x.float(), lin.weight.float(), None if lin.bias is None else lin.bias.float())
    mag = x.float().abs() @ lin.weight.float().abs().t()
    assert_close_dot(sp(x), ref.to(dtype), mag, k)


def test_state_dict_roundtrip():
    sp = SparseLinear.from_linear(pruned_linear(64, 16))
    sd = sp.state_dict()
    assert set(sd) == {"values", "meta", "bias"} and sd["meta"].dtype == torch.uint8
    assert sd["values"].shape == (16, 32)
    fresh = SparseLinear(64, 16)
    fresh.load_state_dict(sd)
    x = torch.randn(3, 64)
    assert torch.equal(fresh(x), sp(x))


def test_fresh_module_is_valid_and_zero():
    for k in (8, 12, 7):
        assert not SparseLinear(k, 3, bias=False)(torch.randn(2, k)).any()


def test_dtype_conversion_follows_module_to():
    sp = SparseLinear.from_linear(pruned_linear(16, 8)).to(torch.bfloat16)
    assert sp.values.dtype == torch.bfloat16 and sp.meta.dtype == torch.uint8 and sp.bias.dtype == torch.bfloat16
    assert sp(torch.randn(1, 16, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_from_linear_rejects_dense_weight():
    with pytest.raises(RuntimeError, match="not 2:4 sparse: row 0, group 0"):
        SparseLinear.from_linear(nn.Linear(8, 4))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 16)
        self.up = nn.Linear(16, 32)
        self.odd = nn.Linear(6, 4)
        self.down = nn.Linear(32, 16, bias=False)
        self.lm_head = nn.Linear(16, 10, bias=False)

    def forward(self, x):
        return self.lm_head(self.down(torch.relu(self.up(self.embed(x)))))


def test_sparsify_swaps_and_reports():
    model = Tiny()
    report = sparsify(model, method="magnitude", progress=False)
    assert isinstance(model.up, SparseLinear) and isinstance(model.down, SparseLinear)
    assert isinstance(model.lm_head, nn.Linear) and isinstance(model.odd, nn.Linear)
    assert set(report.swapped) == {"up", "down"}
    assert "lm_head" in report.skipped and "odd" in report.skipped
    assert "multiple of M=4" in report.skipped["odd"]
    assert report.packed_bytes < report.dense_bytes
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 10)
    assert "swapped 2 Linears" in str(report)


def test_top_level_api():
    assert llmpack.prune is not None and llmpack.SparseLinear is SparseLinear


def test_compile_fullgraph_module():
    sp = SparseLinear.from_linear(pruned_linear(32, 8))
    x = torch.randn(2, 32)
    torch._dynamo.reset()
    out = torch.compile(sp, fullgraph=True, backend="aot_eager")(x)
    assert torch.equal(out, sp(x))
