"""llmpack.save / llmpack.load: round trips bit-exact, compressed-tensors
sparse-24-bitmask folders (written by the real compressed-tensors 0.14
library) load and match, and bad files fail with errors naming the tensor."""
from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from torch import nn

import llmpack
from llmpack.nn import SparseLinear, SparsifyReport, swap_linears

pytest.importorskip("transformers")
pytest.importorskip("safetensors")
from safetensors.torch import load_file, save_file  # noqa: E402


def sparse_tiny(seed=0, dtype=torch.float32, method="magnitude"):
    from llmpack.models import tiny_llama

    model = tiny_llama(seed, dtype=dtype)
    calib = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(seed))
    llmpack.sparsify(model, method=method, calibration=calib, progress=False)
    return model


def logits(model, seed=1):
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_is_bit_identical(tmp_path, dtype):
    model = sparse_tiny(dtype=dtype, method="wanda")
    llmpack.save(model, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "llmpack" and qc["format_version"] == 1
    assert len(qc["modules"]) == 14 and all(s["format"] == "sparse24" for s in qc["modules"].values())
    assert qc["aliases"] == {"lm_head.weight": "model.embed_tokens.weight"}  # tied, written once
    back = llmpack.load(tmp_path)
    kinds = {name: type(m) for name, m in back.named_modules() if isinstance(m, (SparseLinear, nn.Linear))}
    assert sum(k is SparseLinear for k in kinds.values()) == 14
    assert back.lm_head.weight.data_ptr() == back.model.embed_tokens.weight.data_ptr()
    assert torch.equal(logits(back), logits(model))
    for (n1, t1), (n2, t2) in zip(model.state_dict().items(), back.state_dict().items()):
        assert n1 == n2 and t1.dtype == t2.dtype and torch.equal(t1, t2), n1


def test_sharded_save_and_tokenizer(tmp_path):
    model = sparse_tiny()
    llmpack.save(model, tmp_path, max_shard_bytes=20_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    assert torch.equal(logits(llmpack.load(tmp_path)), logits(model))


def test_dense_model_saves_with_no_modules(tmp_path):
    from llmpack.models import tiny_llama

    model = tiny_llama(3)
    llmpack.save(model, tmp_path)
    assert torch.equal(logits(llmpack.load(tmp_path)), logits(model))


# ---------------------------------------------------------------- bad files

@pytest.fixture
def saved(tmp_path):
    llmpack.save(sparse_tiny(), tmp_path)
    return tmp_path


def rewrite(folder, fn):
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path)


def edit_config(folder, fn):
    path = os.path.join(folder, "config.json")
    cfg = json.loads(open(path).read())
    fn(cfg)
    open(path, "w").write(json.dumps(cfg))


def test_corrupted_meta_names_tensor_and_row(saved):
    def corrupt(t):
        t["model.layers.1.mlp.up_proj.meta"][5, 2] = 0xFF
    rewrite(saved, corrupt)
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.meta.*row 5"):
        llmpack.load(saved)


def test_wrong_shape_and_dtype_name_the_tensor(saved):
    rewrite(saved, lambda t: t.__setitem__("model.layers.0.self_attn.q_proj.values",
                                           t["model.layers.0.self_attn.q_proj.values"][:, :-2].contiguous()))
    with pytest.raises(ValueError, match=r"q_proj\.values.*shape"):
        llmpack.load(saved)


def test_meta_of_wrong_dtype(saved):
    rewrite(saved, lambda t: t.__setitem__("model.layers.0.mlp.down_proj.meta",
                                           t["model.layers.0.mlp.down_proj.meta"].to(torch.int16)))
    with pytest.raises(ValueError, match=r"down_proj\.meta.*dtype I16"):
        llmpack.load(saved)


def test_missing_and_unexpected_tensors(saved, tmp_path_factory):
    rewrite(saved, lambda t: t.pop("model.layers.0.mlp.down_proj.meta"))
    with pytest.raises(ValueError, match=r"lacks tensors.*down_proj\.meta"):
        llmpack.load(saved)
    other = tmp_path_factory.mktemp("extra")
    llmpack.save(sparse_tiny(), other)
    rewrite(other, lambda t: t.__setitem__("model.layers.0.evil", torch.zeros(3)))
    with pytest.raises(ValueError, match=r"does not.*model\.layers\.0\.evil"):
        llmpack.load(other)


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["quantization_config"].__setitem__("format_version", 99), "format_version 99"),
    (lambda c: c["quantization_config"]["modules"]["model.layers.0.mlp.up_proj"].__setitem__("format", "zip"),
     "up_proj.*unknown llmpack format 'zip'"),
    (lambda c: c["quantization_config"]["modules"]["model.layers.0.mlp.up_proj"].__setitem__("in_features", -3),
     "up_proj.*in_features must be a positive integer"),
    (lambda c: c["quantization_config"]["modules"].__setitem__("model.nothing", {"format": "sparse24"}),
     "module 'model.nothing' does not exist"),
    (lambda c: c["quantization_config"].__setitem__("quant_method", "gptq"), "neither 'llmpack'"),
    (lambda c: c.pop("quantization_config"), "no quantization_config"),
])
def test_bad_config_is_a_clear_error(saved, edit, match):
    edit_config(saved, edit)
    with pytest.raises(ValueError, match=match):
        llmpack.load(saved)


def test_not_json_and_not_safetensors(saved):
    (saved / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        llmpack.load(saved)
    (saved / "config.json").write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        llmpack.load(saved)


# ---------------------------------------------------------------- compressed-tensors

def test_compressed_tensors_sparse24_bitmask_folder_loads(tmp_path):
    """Written by compressed-tensors' own compressor (0.14.x, the last with
    the 2:4 bitmask format), loaded as SparseLinear, same logits as the
    pruned dense model."""
    ct = pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.config import SparsityCompressionConfig
    from llmpack.compress.prune import prune
    from llmpack.models import tiny_llama

    model = tiny_llama(5)
    prune(model, "magnitude", "2:4", progress=False)
    dense_logits = logits(model)
    ours = copy.deepcopy(model)
    swap_linears(ours, [n for n, m in ours.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"],
                 SparsifyReport("magnitude"))
    expected = logits(ours)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]
    cfg = SparsityCompressionConfig.load_from_registry("sparse-24-bitmask", targets=names, ignore=["lm_head"])
    comp = ModelCompressor(sparsity_config=cfg)
    comp.compress_model(model)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    model.config.to_json_file(str(tmp_path / "config.json"))
    comp.update_config(str(tmp_path))
    qc = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["sparsity_config"]["format"] == "sparse-24-bitmask"
    assert "model.layers.0.self_attn.q_proj.bitmask" in tensors, ct.__version__
    back = llmpack.load(tmp_path)
    assert isinstance(back.model.layers[1].mlp.down_proj, SparseLinear)
    assert torch.equal(logits(back), expected)  # the same packed weights as our own packer's
    torch.testing.assert_close(logits(back), dense_logits, rtol=1e-4, atol=1e-5)
