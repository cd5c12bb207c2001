"""llmpack.load on compressed-tensors ``pack-quantized`` / ``int-quantized``
folders: every quantized Linear becomes a QuantLinear whose weights are
exactly compressed-tensors' own dequantization of the same tensors.

Folders for the <= 0.17 per-word packer are written by the installed
compressed-tensors itself (apply_quantization_config, calculate_qparams,
ModelCompressor.compress_model, update_config) and checked against its own
decompress_weight. The >= 0.18 continuous bit stream is written here by a
small independent writer from the format's definition (code i of a row at
bits [i*b, i*b + b) of one little-endian stream). That understanding was
checked offline against compressed-tensors 0.18.0's
``compressors/pack_quantized/helpers.py::pack_to_int32`` / ``unpack_from_int32``
(the wheel unpacked in /tmp, not installed): for b = 1..8, row lengths 1..200,
packed_dim 0 and 1, its words equal this writer's and llmpack's unpacker
inverts them.
"""
from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from torch import nn

ct = pytest.importorskip("compressed_tensors")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from compressed_tensors.compressors import ModelCompressor  # noqa: E402
from compressed_tensors.compressors.quantized_compressors import (  # noqa: E402
    IntQuantizationCompressor,
    PackedQuantizationCompressor,
)
from compressed_tensors.quantization import (  # noqa: E402
    QuantizationArgs,
    QuantizationConfig,
    QuantizationScheme,
    apply_quantization_config,
)
from compressed_tensors.quantization.utils import calculate_qparams  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import llmpack  # noqa: E402
from llmpack.models import tiny_llama  # noqa: E402
from llmpack.nn import QuantLinear  # noqa: E402

Q_PROJ = "model.layers.0.self_attn.q_proj"


def logits(model, seed=1):
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(ids, use_cache=False).logits.float()


def linear_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]


def rewrite(folder, fn):
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path)


def set_dtype(folder, dtype):
    """config.json's dtype (tiny_llama casts the parameters, not the config)."""
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg.pop("torch_dtype", None)
    cfg["dtype"] = str(dtype).removeprefix("torch.")
    with open(path, "w") as f:
        json.dump(cfg, f)


def edit_qc(folder, fn):
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    fn(cfg["quantization_config"])
    with open(path, "w") as f:
        json.dump(cfg, f)


# ---------------------------------------------------------------- written by compressed-tensors (<= 0.17 packer)

def ct_folder(folder, fmt, wargs, iargs=None, dtype=torch.float32, hidden=64, inter=96, seed=0):
    """A tiny Llama quantized and compressed by the installed compressed-tensors; returns the
    (float) model it started from."""
    model = tiny_llama(seed, hidden_size=hidden, intermediate_size=inter, dtype=dtype)
    dense = copy.deepcopy(model)
    wa = QuantizationArgs(**wargs)
    scheme = QuantizationScheme(targets=["Linear"], weights=wa,
                                input_activations=QuantizationArgs(**iargs) if iargs else None)
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"],
                                                        format=fmt))
    g = torch.Generator().manual_seed(seed + 7)
    for _, m in model.named_modules():
        if not hasattr(m, "weight_scale"):
            continue
        w = m.weight.float()
        if hasattr(m, "weight_g_idx"):   # actorder "group": GPTQ's groups, runs of a column permutation
            visit = torch.randperm(w.shape[1], generator=g)
            m.weight_g_idx.data[visit] = (torch.arange(w.shape[1]) // wa.group_size).to(m.weight_g_idx.dtype)
            w = w[:, torch.argsort(m.weight_g_idx.data, stable=True)]
        if wa.strategy == "group":
            w = w.view(w.shape[0], -1, wa.group_size)
            mn, mx = w.amin(-1), w.amax(-1)
        elif wa.strategy == "channel":
            mn, mx = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
        else:
            mn, mx = w.amin().reshape(1), w.amax().reshape(1)
        s, z = calculate_qparams(mn, mx, wa)
        m.weight_scale.data = s.to(m.weight_scale.dtype).reshape(m.weight_scale.shape)
        if hasattr(m, "weight_zero_point"):
            m.weight_zero_point.data = z.to(m.weight_zero_point.dtype).reshape(m.weight_zero_point.shape)
    comp = ModelCompressor.from_pretrained_model(model, quantization_format=fmt)
    comp.compress_model(model)
    os.makedirs(folder, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"},
              os.path.join(folder, "model.safetensors"))
    model.config.to_json_file(os.path.join(folder, "config.json"))
    comp.update_config(str(folder))
    set_dtype(folder, dtype)
    return dense


def ct_dequant(folder, prefix, fmt, wargs):
    """compressed-tensors' own decompression of one module's tensors in the folder."""
    with safe_open(os.path.join(folder, "model.safetensors"), framework="pt") as f:
        data = {k[len(prefix) + 1:]: f.get_tensor(k) for k in f.keys()
                if k.startswith(prefix + ".") and not k.endswith(".bias")}
    compressor = PackedQuantizationCompressor() if fmt == "pack-quantized" else IntQuantizationCompressor()
    return compressor.decompress_weight(data, QuantizationArgs(**wargs))


CT_CASES = {
    # name: (format, weight args, input activation args, dtype, hidden, intermediate)
    "w4g32-asym-fp16": ("pack-quantized", dict(num_bits=4, strategy="group", group_size=32, symmetric=False),
                        None, torch.float16, 64, 96),
    "w4g128-sym-bf16": ("pack-quantized", dict(num_bits=4, strategy="group", group_size=128, symmetric=True),
                        None, torch.bfloat16, 128, 256),
    "w4g32-actorder-asym": ("pack-quantized", dict(num_bits=4, strategy="group", group_size=32, symmetric=False,
                                                   actorder="group"), None, torch.float32, 64, 96),
    "w8g64-actorder-sym-a8": ("int-quantized", dict(num_bits=8, strategy="group", group_size=64, symmetric=True,
                                                    actorder="group"),
                              dict(num_bits=8, strategy="token", dynamic=True, symmetric=False), torch.float16, 128, 192),
    "w3g64-asym": ("pack-quantized", dict(num_bits=3, strategy="group", group_size=64, symmetric=False),
                   None, torch.float32, 64, 128),
    "w6-channel-sym-fp16": ("pack-quantized", dict(num_bits=6, strategy="channel", symmetric=True),
                            None, torch.float16, 64, 96),
    "w8-channel-asym": ("pack-quantized", dict(num_bits=8, strategy="channel", symmetric=False),
                        None, torch.float32, 64, 96),
    "w5-tensor-asym": ("pack-quantized", dict(num_bits=5, strategy="tensor", symmetric=False),
                       None, torch.float32, 64, 96),
    "w8a8-sym": ("int-quantized", dict(num_bits=8, strategy="channel", symmetric=True),
                 dict(num_bits=8, strategy="token", dynamic=True, symmetric=True), torch.float16, 64, 96),
    "w8a8-asym-acts": ("int-quantized", dict(num_bits=8, strategy="channel", symmetric=False),
                       dict(num_bits=8, strategy="token", dynamic=True, symmetric=False), torch.float32, 64, 96),
}


@pytest.mark.parametrize("case", list(CT_CASES))
def test_compressed_tensors_folder_matches_its_dequantization(tmp_path, case):
    fmt, wargs, iargs, dtype, hidden, inter = CT_CASES[case]
    dense = ct_folder(tmp_path, fmt, wargs, iargs, dtype, hidden, inter)
    qc = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert qc["format"] == fmt and qc["version"] == ct.__version__
    back = llmpack.load(tmp_path)
    ref = copy.deepcopy(dense)
    b, abits = wargs["num_bits"], (iargs or {}).get("num_bits", 16)
    for name in linear_names(dense):
        mod = back.get_submodule(name)
        assert isinstance(mod, QuantLinear), name
        assert (mod.wbits, mod.abits) == (b, abits)
        assert mod.act_symmetric == bool(iargs and iargs["symmetric"])
        expect_gs = wargs.get("group_size") if wargs["strategy"] == "group" else -1
        assert mod.group_size == expect_gs
        assert mod.scales.dtype == dtype
        w_ct = ct_dequant(tmp_path, name, fmt, wargs)
        assert w_ct.dtype == dtype
        assert torch.equal(mod.dense_weight(), w_ct), name  # bit-exact
        assert mod.act_order == ("actorder" in wargs), name
        if wargs["symmetric"]:
            assert (mod.zeros == 1 << (b - 1)).all()
        ref.get_submodule(name).weight.data = w_ct
    assert isinstance(back.lm_head, nn.Linear)  # ignored: stays dense
    got, want = logits(back), logits(ref)
    scale = want.abs().max()
    # Loose in half precision and with 8-bit activations (different rounding and accumulation
    # order than a dense fp matmul); the bit-exact check is on the weights above.
    tol = 0.02 if abits != 16 or dtype != torch.float32 else 1e-4
    err = float((got - want).abs().max() / scale)
    print(case, "max logit error / max logit", err)
    assert err <= tol, case


# ---------------------------------------------------------------- >= 0.18 continuous bit stream (own writer)

def stream_pack(codes: torch.Tensor, b: int) -> torch.Tensor:
    """Unsigned codes [R, n] -> int32 [R, ceil(n b / 32)]: each row one little-endian bit stream."""
    n = codes.shape[1]
    nw = -(-n * b // 32)
    rows = []
    for row in codes.tolist():
        acc = 0
        for i, c in enumerate(row):
            acc |= c << (i * b)
        words = [(acc >> (32 * k)) & 0xFFFFFFFF for k in range(nw)]
        rows.append([w - (1 << 32) if w >= 1 << 31 else w for w in words])
    return torch.tensor(rows, dtype=torch.int32).reshape(len(rows), nw)


def words_pack(codes: torch.Tensor, b: int) -> torch.Tensor:
    """The <= 0.17 layout: 32 // b codes per int32 word (code j at bits [j b, j b + b)), high bits 0."""
    per = 32 // b
    n = codes.shape[1]
    padded = torch.nn.functional.pad(codes.to(torch.int64), (0, -n % per)).reshape(codes.shape[0], -1, per)
    w = (padded << (torch.arange(per) * b)).sum(-1)
    return torch.where(w >= 1 << 31, w - (1 << 32), w).to(torch.int32)


def stream_folder(folder, b, strategy="group", group_size=32, symmetric=False, dtype=torch.float16,
                  version="0.18.0", seed=0, inter=96, packer=None, bias=False):
    """A tiny Llama's Linears as a pack-quantized folder written from the spec (the >= 0.18 bit
    stream, or the <= 0.17 words with packer=words_pack); returns {module: (signed codes, signed
    zero points or None, scales)}."""
    packer = packer or stream_pack
    model = tiny_llama(seed, dtype=dtype, intermediate_size=inter)
    if bias:  # Linears with biases (Qwen2-like attention, Llama's mlp_bias)
        from transformers import LlamaForCausalLM

        model.config.attention_bias = model.config.mlp_bias = True
        torch.manual_seed(seed)
        model = LlamaForCausalLM(model.config).to(dtype).eval()
    g = torch.Generator().manual_seed(seed + 1)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    truth = {}
    half = 1 << (b - 1)
    for name in linear_names(model):
        out_f, in_f = tensors.pop(f"{name}.weight").shape
        if bias:  # transformers initialises biases to 0
            tensors[f"{name}.bias"] = (torch.randn(out_f, generator=g) * 0.1).to(dtype)
        groups = -(-in_f // group_size) if strategy == "group" else 1
        q = torch.randint(-half, half, (out_f, in_f), generator=g)
        s = (torch.rand(out_f, groups, generator=g) * 0.05 + 0.001).to(dtype)
        tensors[f"{name}.weight_packed"] = packer(q + half, b)
        tensors[f"{name}.weight_scale"] = s
        tensors[f"{name}.weight_shape"] = torch.tensor([out_f, in_f])
        zp = None
        if not symmetric:
            zp = torch.randint(-half, half, (out_f, groups), generator=g)
            tensors[f"{name}.weight_zero_point"] = packer((zp + half).t(), b).t().contiguous()
        truth[name] = (q, zp, s)
    os.makedirs(folder, exist_ok=True)
    save_file(tensors, os.path.join(folder, "model.safetensors"))
    cfg = model.config.to_dict()
    weights = {"num_bits": b, "type": "int", "symmetric": symmetric, "strategy": strategy,
               "group_size": group_size if strategy == "group" else None, "dynamic": False, "actorder": None}
    cfg["quantization_config"] = {
        "quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
        "version": version, "ignore": ["lm_head"], "kv_cache_scheme": None, "sparsity_config": {},
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None,
                                      "output_activations": None, "format": "pack-quantized"}}}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    set_dtype(folder, dtype)
    return truth


def spec_dequant(q, zp, s, group_size):
    """W = s (q - zp), q and zp cast to the scale's dtype, per group of consecutive inputs."""
    size = q.shape[1] if s.shape[1] == 1 else group_size
    per = lambda t: t.repeat_interleave(size, 1)[:, :q.shape[1]]  # noqa: E731
    z = torch.zeros_like(q) if zp is None else per(zp)
    return (q.to(s.dtype) - z.to(s.dtype)) * per(s)


@pytest.mark.parametrize("b,strategy,gs,symmetric,dtype", [
    (3, "group", 32, False, torch.float16), (5, "group", 32, False, torch.bfloat16),
    (7, "group", 32, True, torch.float16), (6, "channel", None, False, torch.float32),
    (4, "group", 32, False, torch.float16),
    (2, "group", 256, False, torch.float32)])  # one group spans every row: per channel
def test_continuous_stream_packer(tmp_path, b, strategy, gs, symmetric, dtype):
    # intermediate 80: rows of 80 codes end mid-word (3, 5, 7 bits) and in a partial group of 16.
    truth = stream_folder(tmp_path, b, strategy, gs, symmetric, dtype, inter=80, bias=b == 3)
    back = llmpack.load(tmp_path)
    ref = copy.deepcopy(back)  # same dense parts and biases; Linears swapped for the spec's weights below
    for name, (q, zp, s) in truth.items():
        mod = back.get_submodule(name)
        assert isinstance(mod, QuantLinear) and mod.wbits == b
        assert mod.group_size == (gs if gs in (32, 64, 128) else -1)
        half = 1 << (b - 1)
        assert torch.equal(mod.codes(), (q + half).to(torch.uint8))
        w = spec_dequant(q, zp, s, gs)
        assert torch.equal(mod.dense_weight(), w.to(dtype)), name
        assert (mod.bias is not None) == (b == 3)
        lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None, dtype=dtype)
        lin.weight.data = w.to(dtype)
        if mod.bias is not None:
            assert mod.bias.abs().sum() > 0
            lin.bias.data = mod.bias.data.clone()
        parent, _, child = name.rpartition(".")
        setattr(ref.get_submodule(parent), child, lin)
    got, want = logits(back), logits(ref)
    assert (got - want).abs().max() <= (1e-4 if dtype == torch.float32 else 0.05) * want.abs().max()


def test_version_selects_the_packer(tmp_path):
    """The same 3-bit stream under a <= 0.17 version: the word count is that packer's, not the stream's."""
    stream_folder(tmp_path, 3, version="0.17.1")
    with pytest.raises(ValueError, match=r"weight_packed.*shape \[64, 6\].*need \[64, 7\].*continuous"):
        llmpack.load(tmp_path)
    edit_qc(tmp_path, lambda qc: qc.pop("version"))
    with pytest.raises(ValueError, match="3-bit codes and config.json's quantization_config has no version"):
        llmpack.load(tmp_path)
    edit_qc(tmp_path, lambda qc: qc.update(version="banana"))
    with pytest.raises(ValueError, match="version 'banana' is not a compressed-tensors version"):
        llmpack.load(tmp_path)
    edit_qc(tmp_path, lambda qc: qc.update(version="0.18.1.dev3+g0abc"))
    assert isinstance(llmpack.load(tmp_path).get_submodule(Q_PROJ), QuantLinear)


def test_4bit_needs_no_version(tmp_path):
    stream_folder(tmp_path, 4, version=None)
    edit_qc(tmp_path, lambda qc: qc.pop("version"))
    assert isinstance(llmpack.load(tmp_path).get_submodule(Q_PROJ), QuantLinear)


# ---------------------------------------------------------------- bad inputs

def _group0_weights(fn):
    return lambda qc: fn(qc["config_groups"]["group_0"]["weights"])


def _group0(fn):
    return lambda qc: fn(qc["config_groups"]["group_0"])


@pytest.mark.parametrize("edit,match", [
    (_group0_weights(lambda w: w.update(group_size=16)),
     r"'model.layers.0.self_attn.q_proj'.*group_size 16 is not supported"),
    (_group0_weights(lambda w: w.update(num_bits=16)), "num_bits 16 is not supported"),
    (_group0_weights(lambda w: w.update(type="float")), "quantization type 'float'"),
    (_group0_weights(lambda w: w.update(strategy="block")), "weight strategy 'block' is not supported"),
    (_group0_weights(lambda w: w.update(symmetric=False)), "asymmetric weights but .*weight_zero_point is missing"),
    (_group0(lambda g: g.update(input_activations={"num_bits": 8, "type": "int", "dynamic": False,
                                                   "strategy": "tensor", "symmetric": True})),
     "static .*input activation"),
    (_group0(lambda g: g.update(format="nvfp4-pack-quantized")), "format 'nvfp4-pack-quantized'"),
    (_group0(lambda g: g.update(input_activations={"num_bits": 8, "type": "float", "dynamic": True,
                                                   "strategy": "token", "symmetric": True})),
     "input activations of type 'float'"),
    (_group0(lambda g: g.update(output_activations={"num_bits": 8, "type": "int", "dynamic": True,
                                                    "strategy": "token"})), "output activation quantization"),
    (lambda qc: qc.update(quantization_status="frozen"), "quantization_status 'frozen'"),
    (lambda qc: qc.update(kv_cache_scheme={"num_bits": 8, "type": "float"}), "kv_cache_scheme is not supported"),
    (lambda qc: qc.update(transform_config={"config_groups": {"u": {}}}), "transform_config is not supported"),
    (lambda qc: qc.update(sparsity_config={"format": "sparse-24-bitmask"}), "both sparse .* and quantized"),
    (lambda qc: qc.update(ignore=["re:(unclosed"]), "not a valid regular expression"),
    # An exact module name wins over the class name "Linear": q_proj is read as 8-bit.
    (lambda qc: qc["config_groups"].update(exact={"targets": [Q_PROJ], "weights": {
        "num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"}}),
     rf"'{Q_PROJ}.weight_packed': shape \[64, 8\], 64 8-bit codes per row"),
    (lambda qc: qc.update(ignore=["lm_head", Q_PROJ]), rf"tensor '{Q_PROJ}.weight_\w+': quantization tensors"),
])
def test_bad_configs(tmp_path, edit, match):
    stream_folder(tmp_path, 4, symmetric=True)
    edit_qc(tmp_path, edit)
    with pytest.raises(ValueError, match=match):
        llmpack.load(tmp_path)


def test_bad_tensors(tmp_path):
    # <= 0.17 words, 3 bits: 10 codes per word, a row of 64 in 7 words (the last holds 4 codes).
    stream_folder(tmp_path, 3, symmetric=False, version="0.14.0.1", packer=words_pack)
    p = f"{Q_PROJ}.weight_packed"
    cases = [
        (lambda t: t.update({p: t[p].to(torch.int64)}), rf"'{p}': dtype I64, expected int32"),
        (lambda t: t.update({p: torch.nn.functional.pad(t[p], (0, 1))}), rf"'{p}': shape \[64, 8\]"),
        (lambda t: t.update({f"{Q_PROJ}.weight_shape": torch.tensor([64, 32])}), r"dense shape \[64, 32\]"),
        (lambda t: t[p][:, -1].bitwise_or_(1 << 30), rf"'{p}': row 0, int32 word 6 has bits set past the 64 codes"),
        (lambda t: t.update({f"{Q_PROJ}.weight_scale": t[f"{Q_PROJ}.weight_scale"][:, :1]}),
         r"weight_scale': shape \[64, 1\]"),
        (lambda t: t.update({f"{Q_PROJ}.weight_scale": t[f"{Q_PROJ}.weight_scale"].to(torch.int32)}),
         "weight_scale': dtype I32"),
        (lambda t: t.update({f"{Q_PROJ}.weight_zero_point": t[f"{Q_PROJ}.weight_zero_point"][:-1]}),
         r"weight_zero_point': shape \[6, 2\]"),
        (lambda t: t[f"{Q_PROJ}.weight_zero_point"][-1].bitwise_or_(1 << 30),
         "weight_zero_point': row 0, int32 word 6 has bits set past"),
        (lambda t: t.update({f"{Q_PROJ}.weight_g_idx": torch.arange(64) % 3}),
         r"weight_g_idx': \[2\] = 2 is not a group index \(0..1\)"),
        (lambda t: t.update({f"{Q_PROJ}.weight_g_idx": torch.arange(64) // 40}),
         "weight_g_idx': group 0 holds 40 columns, expected 32"),
        (lambda t: t.update({f"{Q_PROJ}.weight_g_idx": torch.zeros(63, dtype=torch.int32)}),
         r"weight_g_idx': shape \[63\], expected \[64\]"),
        (lambda t: t.pop(f"{Q_PROJ}.weight_shape"), "weight_shape is missing"),
    ]
    clean = load_file(os.path.join(tmp_path, "model.safetensors"))
    for fn, match in cases:
        tensors = {k: v.clone() for k, v in clean.items()}
        fn(tensors)
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(tmp_path, "model.safetensors"))
        with pytest.raises(ValueError, match=match):
            llmpack.load(tmp_path)
    # The column-order g_idx (what act-order "weight" leaves) is accepted.
    tensors = dict(clean, **{f"{Q_PROJ}.weight_g_idx": torch.arange(64, dtype=torch.int32) // 32})
    save_file(tensors, os.path.join(tmp_path, "model.safetensors"))
    q = llmpack.load(tmp_path).get_submodule(Q_PROJ)
    assert isinstance(q, QuantLinear) and not q.act_order
    # An act-order one (groups: the second half of the columns, then the first) is held permuted.
    tensors = dict(clean, **{f"{Q_PROJ}.weight_g_idx": torch.arange(64).flip(0) // 32})
    save_file(tensors, os.path.join(tmp_path, "model.safetensors"))
    q2 = llmpack.load(tmp_path).get_submodule(Q_PROJ)
    assert q2.act_order and q2.input_perm.tolist() == list(range(32, 64)) + list(range(32))
    assert torch.equal(q2.codes(), q.codes()[:, q2.input_perm])
    x = torch.randn(3, 64, dtype=q2.dtype)
    torch.testing.assert_close(q2(x), x @ q2.dense_weight().T, rtol=2e-3, atol=2e-3)


def test_stream_bits_past_the_shape(tmp_path):
    # >= 0.18, 3 bits, down_proj rows of 80 codes: 240 bits in 8 words, the last one half used.
    stream_folder(tmp_path, 3, inter=80)
    p = "model.layers.1.mlp.down_proj.weight_packed"
    rewrite(tmp_path, lambda t: t[p][3, -1].bitwise_or_(1 << 16))
    with pytest.raises(ValueError, match=rf"'{p}': row 3, int32 word 7 has bits set past the 80 codes of 3 bits"):
        llmpack.load(tmp_path)


def test_int_quantized_bad_tensors(tmp_path):
    ct_folder(tmp_path, "int-quantized", dict(num_bits=8, strategy="channel", symmetric=True),
              dict(num_bits=8, strategy="token", dynamic=True, symmetric=True))
    w = f"{Q_PROJ}.weight"
    rewrite(tmp_path, lambda t: t.update({w: t[w].to(torch.int32)}))
    with pytest.raises(ValueError, match=rf"'{w}': dtype I32, expected int8"):
        llmpack.load(tmp_path)
    rewrite(tmp_path, lambda t: t.update({w: t[w].to(torch.int8)[:, :32].contiguous()}))
    with pytest.raises(ValueError, match=rf"'{w}': shape \[64, 32\]"):
        llmpack.load(tmp_path)
