"""QuantLinear, the RTN / GPTQ producers (llmpack.quantize), save/load, the
GGUF importer (SmolLM2's Q4_1 file, bit-exact weights) and corrupted
checkpoints."""
import json
import os

import pytest
import torch
from torch import nn

import llmpack
from llmpack import QuantLinear
from llmpack.compress.quantize import dequantize_codes, gptq, rtn
from llmpack.models import tiny_llama
from llmpack.reference import btc as R


def linear(n=24, k=200, bias=True, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias)
    return lin.to(dtype)


@pytest.mark.parametrize("wbits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [32, 128, -1])
@pytest.mark.parametrize("symmetric", [False, True])
def test_rtn_error_is_bounded_by_a_step(wbits, group_size, symmetric):
    lin = linear()
    codes, scales, zeros = rtn(lin.weight, wbits, group_size, symmetric)
    w = R.dequantize(codes, scales, zeros, None, group_size)
    step = scales.double().repeat_interleave(200 if group_size < 0 else group_size, 1)[:, :200]
    # Half a step of rounding, plus up to half a step where the rounded zero point clips the range.
    assert ((w - lin.weight.double()).abs() <= step + 1e-6).all()
    assert (w - lin.weight.double()).abs().mean() < step.mean() / 3


@pytest.mark.parametrize("abits", [16, 8, 4])
def test_from_linear_forward_matches_reference(abits):
    lin = linear()
    q = QuantLinear.from_linear(lin, wbits=4, abits=abits, group_size=64)
    x = torch.randn(3, 5, 200)
    y = q(x)
    ref = R.linear(x, q.codes(), q.scales, q.zeros, None, abits=abits, group_size=64, bias=lin.bias.detach())
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(q.dense_weight(), R.dequantize(q.codes(), q.scales, q.zeros, None, 64).float())


def test_cached_scaled_sums_follow_the_scales():
    # QuantLinear caches the per-row sum_g s_g Q_g for the CPU integer kernels: editing the scales
    # in place, or replacing them or the code sums, must not leave the output on stale sums.
    q = QuantLinear.from_linear(linear(), wbits=4, abits=8, group_size=64)
    x = torch.randn(3, 200)

    def ref():
        return R.linear(x, q.codes(), q.scales, q.zeros, None, abits=8, group_size=64, bias=q.bias.detach())

    torch.testing.assert_close(q(x), ref(), rtol=1e-4, atol=1e-4)
    first = q._scaled_sums()
    assert first is q._scaled_sums()                      # cached between calls
    q.scales.mul_(2)
    torch.testing.assert_close(q(x), ref(), rtol=1e-4, atol=1e-4)
    q.scales = q.scales / 2
    torch.testing.assert_close(q(x), ref(), rtol=1e-4, atol=1e-4)
    assert torch.allclose(q._scaled_sums(), first)
    q.code_sums = q.code_sums.clone()                     # a new tensor: recomputed, same value
    assert q._scaled_sums() is not first
    with torch.inference_mode():                          # no version counters there: the kernel forms it
        qi = QuantLinear.from_linear(linear(), wbits=4, abits=8, group_size=64)
        assert qi._scaled_sums() is None
        torch.testing.assert_close(qi(x), q(x), rtol=1e-4, atol=1e-4)


def test_w8_weight_only_is_close_to_dense():
    lin = linear()
    q = QuantLinear.from_linear(lin, wbits=8, group_size=32)
    x = torch.randn(4, 200)
    rel = (q(x) - lin(x)).norm() / lin(x).norm()
    assert rel < 5e-3, rel


def test_bf16_module_and_repr():
    lin = linear(dtype=torch.bfloat16)
    q = QuantLinear.from_linear(lin, wbits=3, abits=8, group_size=32)
    y = q(torch.randn(2, 200, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and y.shape == (2, 24)
    assert "W3 group 32" in repr(q) and "A8" in repr(q)


def test_gptq_beats_rtn_on_its_calibration_inputs():
    torch.manual_seed(0)
    k, n = 128, 32
    # Correlated inputs (as real activations are): where GPTQ's error feedback pays.
    x = torch.randn(512, 16) @ torch.randn(16, k) + 0.1 * torch.randn(512, k)
    w = torch.randn(n, k)
    H = x.T @ x
    err = lambda wq: (x @ (w - wq).T).norm()  # noqa: E731
    rtn_err = err(R.dequantize(*rtn(w, 3, 32), None, 32).float())
    for act_order, static in ((False, False), (True, True), (True, False)):
        c, s, z, perm = gptq(w, H, 3, 32, act_order=act_order, static_groups=static)
        assert (perm is None) == (not act_order or static)
        assert err(dequantize_codes(c, s, z, 32, perm)) < 0.8 * rtn_err, (act_order, static)


def test_gptq_dynamic_groups_follow_the_visit_order():
    """act_order without static groups: groups are runs of columns in decreasing diag(H) order (GPTQ's
    dynamic groups); the codes come back in that order with the permutation, and a QuantLinear holding
    them (input_perm) computes x W^T with W in input order."""
    torch.manual_seed(1)
    k, n = 200, 24
    x = torch.randn(256, k) * torch.linspace(0.1, 3, k)[torch.randperm(k)]   # unequal column energies
    w = torch.randn(n, k)
    H = x.T @ x
    c, s, z, perm = gptq(w, H, 4, 32, act_order=True)
    assert torch.equal(perm, torch.argsort(H.diagonal(), descending=True, stable=True))
    wq = dequantize_codes(c, s, z, 32, perm)
    for abits, tol in ((16, 1e-4), (8, 2e-2)):
        q = QuantLinear.from_codes(c, s, z, wbits=4, group_size=32, abits=abits, input_perm=perm)
        assert q.act_order and "act order" in repr(q)
        assert torch.equal(q.dense_weight(), wq)
        xs = torch.randn(5, k)
        want = xs @ wq.T
        assert (q(xs) - want).abs().max() <= tol * want.abs().max(), abits
        if abits == 16:
            compiled = torch.compile(q, fullgraph=True)
            torch.testing.assert_close(compiled(xs), q(xs))


def test_input_perm_must_be_a_permutation():
    c, s, z = rtn(linear().weight, 4, 32)
    for perm, msg in [(torch.tensor([0] * 200), r"input_perm\[1\] = 0 repeats entry \[0\]"),
                      (torch.arange(200) + 1, r"input_perm\[199\] = 200 is not an input index \(0..199\)"),
                      (torch.arange(199), r"shape \[200\]"),
                      (torch.arange(200).float(), "an integer tensor")]:
        with pytest.raises(ValueError, match=msg):
            QuantLinear.from_codes(c, s, z, wbits=4, group_size=32, input_perm=perm)


def test_act_order_model_saves_loads_and_rejects_a_bad_perm(tmp_path):
    model = tiny_llama()
    ids = torch.randint(0, 128, (4, 24), generator=torch.Generator().manual_seed(0))
    report = llmpack.quantize(model, wbits=4, abits=8, group_size=32, method="gptq", calibration=ids,
                              act_order=True, progress=False)
    up = model.model.layers[0].mlp.up_proj
    assert up.act_order and not torch.equal(up.input_perm, torch.arange(up.in_features))
    assert len(report.swapped) == 14
    with torch.no_grad():
        want = model(ids).logits
    llmpack.save(model, str(tmp_path / "ok"))
    cfg = json.loads((tmp_path / "ok" / "config.json").read_text())
    assert cfg["quantization_config"]["modules"]["model.layers.0.mlp.up_proj"]["act_order"] is True
    back = llmpack.load(str(tmp_path / "ok"))
    assert torch.equal(back.model.layers[0].mlp.up_proj.input_perm, up.input_perm)
    with torch.no_grad():
        assert torch.equal(back(ids).logits, want)
    llmpack.save(model, str(tmp_path / "bad"))
    _corrupt(str(tmp_path / "bad"), "layers.1.mlp.down_proj.input_perm", lambda t: t.index_fill_(0, torch.tensor([5]), 0))
    with pytest.raises(ValueError, match=r"model.layers.1.mlp.down_proj: input_perm\[\d+\] = 0 repeats"):
        llmpack.load(str(tmp_path / "bad"))


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_quantize_model(method):
    model = tiny_llama()
    ids = torch.randint(0, 128, (4, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids).logits
    report = llmpack.quantize(model, wbits=8, abits=16, group_size=32, method=method,
                              calibration=ids if method == "gptq" else None, progress=False)
    assert len(report.swapped) == 14 and "lm_head" in report.skipped
    assert all(isinstance(model.get_submodule(n), QuantLinear) for n in report.swapped)
    assert str(report).startswith(f"quantize ({method}, W8A16, group 32): 14 Linears")
    with torch.no_grad():
        out = model(ids).logits
    assert (out - ref).norm() / ref.norm() < 0.02


def test_quantize_bad_arguments():
    model = tiny_llama()
    with pytest.raises(ValueError, match="needs calibration"):
        llmpack.quantize(model, method="gptq")
    with pytest.raises(ValueError, match="wbits must be in 1..8"):
        llmpack.quantize(model, wbits=9)
    with pytest.raises(ValueError, match="group_size must be"):
        llmpack.quantize(model, group_size=100)
    with pytest.raises(ValueError, match="unknown quantization method"):
        llmpack.quantize(model, method="awq")


def test_save_load_roundtrip(tmp_path):
    model = tiny_llama()
    llmpack.quantize(model, wbits=4, abits=8, group_size=32, progress=False)
    ids = torch.randint(0, 128, (2, 10))
    with torch.no_grad():
        want = model(ids).logits
    llmpack.save(model, str(tmp_path))
    back = llmpack.load(str(tmp_path))
    up = back.model.layers[0].mlp.up_proj
    assert isinstance(up, QuantLinear) and up.planes.dtype == torch.uint8   # loaded into the CPU layout
    with torch.no_grad():
        assert torch.equal(back(ids).logits, want)


@pytest.mark.parametrize("wbits", [3, 4, 7])
def test_cpu_holds_fields_and_state_dict_holds_planes(wbits):
    q = QuantLinear.from_linear(linear(), wbits=wbits, abits=16, group_size=32)
    planes = R.pack_planes(q.codes(), wbits)
    assert q.planes.dtype == torch.uint8 and torch.equal(q.planes, R.pack_fields(q.codes(), wbits))
    assert torch.equal(q.bit_planes(), planes)
    sd = q.state_dict()
    assert sd["planes"].dtype == torch.int32 and torch.equal(sd["planes"], planes)
    # A fresh module (planes buffer) and one already in the fields layout both load planes.
    x = torch.randn(3, 200)
    for target in (QuantLinear(200, 24, wbits=wbits, group_size=32), q):
        target.load_state_dict(sd)
        assert target.planes.dtype == torch.uint8
        assert torch.equal(target(x), q(x))
    # Off the CPU the module holds planes again (meta stands in for a GPU here: no bytes move).
    assert q.to("meta").planes.dtype == torch.uint8
    back = QuantLinear(200, 24, wbits=wbits, group_size=32)
    back._apply(lambda t: t)
    assert back.planes.dtype == torch.uint8


def _corrupt(folder, key_suffix, fn):
    from safetensors.torch import load_file, save_file

    path = next(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".safetensors"))
    tensors = load_file(path)
    key = next(k for k in tensors if k.endswith(key_suffix))
    tensors[key] = fn(tensors[key].clone())
    save_file(tensors, path, metadata={"format": "pt"})
    return key


def test_corrupted_checkpoint_is_a_clear_error(tmp_path):
    model = tiny_llama()
    llmpack.quantize(model, wbits=4, group_size=32, progress=False)
    for what, suffix, fn, msg in [
        ("sums", "layers.0.mlp.up_proj.code_sums", lambda t: t.index_put_((torch.tensor([1]), torch.tensor([0])),
                                                                          torch.tensor([999], dtype=t.dtype)),
         r"code_sums\[1, 0\] = 999 but the codes of that group sum to"),
        ("zeros", "layers.1.self_attn.q_proj.zeros", lambda t: t.fill_(200), r"zeros\[0, 0\] = 200 does not fit"),
        ("planes", "layers.0.mlp.down_proj.planes", lambda t: t.fill_(-1), "has bits set past in_features"),
    ]:
        folder = tmp_path / what
        llmpack.save(model, str(folder))
        _corrupt(str(folder), suffix, fn)
        with pytest.raises(ValueError, match=msg):
            llmpack.load(str(folder))


def test_spec_errors(tmp_path):
    model = tiny_llama()
    llmpack.quantize(model, wbits=4, group_size=32, progress=False)
    llmpack.save(model, str(tmp_path))
    cfg_path = tmp_path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    name = next(iter(cfg["quantization_config"]["modules"]))
    cfg["quantization_config"]["modules"][name]["wbits"] = 11
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="wbits must be one of"):
        llmpack.load(str(tmp_path))


def test_gguf_blocks_decode():
    import numpy as np

    from llmpack.io.gguf import decode_blocks

    d = np.array([0.5], dtype=np.float16).view(np.uint8)
    m = np.array([-1.0], dtype=np.float16).view(np.uint8)
    nib = np.arange(16, dtype=np.uint8) | (np.arange(16, dtype=np.uint8)[::-1] << 4)
    q4_1 = np.concatenate([d, m, nib])[None, :]
    codes, scales, zeros, offsets, bits = decode_blocks("Q4_1", q4_1, 32)
    assert bits == 4 and zeros is None
    assert codes[0, :16].tolist() == list(range(16)) and codes[0, 16:].tolist() == list(range(15, -1, -1))
    assert float(scales[0, 0]) == 0.5 and float(offsets[0, 0]) == -1.0
    q8 = np.concatenate([d, np.arange(-16, 16, dtype=np.int8).view(np.uint8)])[None, :]
    codes, _, zeros, _, bits = decode_blocks("Q8_0", q8, 32)
    assert bits == 8 and int(zeros[0, 0]) == 128 and codes[0].tolist() == list(range(112, 144))
    with pytest.raises(ValueError, match="expected 1 blocks of 20 bytes"):
        decode_blocks("Q4_1", q4_1[:, :19], 32)


def test_smollm2_gguf_import_is_bit_exact():
    pytest.importorskip("gguf")
    from llmpack.io.gguf import quantize_from_gguf
    from llmpack.models import load_smollm2, smollm2_gguf_path

    try:
        model, tok = load_smollm2(torch.float32)
    except ImportError as e:
        pytest.skip(str(e))
    dense = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    ids = tok("It is a truth universally acknowledged, that a single man", return_tensors="pt").input_ids
    with torch.no_grad():
        want = model(ids).logits
    report = quantize_from_gguf(model, smollm2_gguf_path(), progress=False)
    assert len(report.swapped) == 210 and report.method == "gguf Q4_1"
    for name in report.swapped:   # the file's own codes and scales: the very weights transformers dequantized
        assert torch.equal(model.get_submodule(name).dense_weight(), dense[name]), name
    with torch.no_grad():
        got = model(ids).logits
    assert (got - want).abs().max() < 1e-3 * want.abs().max()
