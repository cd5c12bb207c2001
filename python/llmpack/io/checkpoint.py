"""llmpack.save / llmpack.load: compressed models as Hugging Face style folders.

Folder layout (what ``save`` writes, what ``load`` and the vLLM plugin read)::

    config.json              the model's transformers config, plus
                             "quantization_config": {
                               "quant_method": "llmpack",
                               "format_version": 1,
                               "llmpack_version": "<version that wrote it>",
                               "modules": {"<module name>": {"format": "sparse24", ...spec}},
                               "aliases": {"<dropped tensor>": "<kept tensor>"}}
    model.safetensors        every tensor of the state_dict, by state_dict name
                             (an llmpack module's packed tensors under its
                             module name: q_proj.values, q_proj.meta, q_proj.bias);
                             sharded as model-0000i-of-0000n.safetensors +
                             model.safetensors.index.json above max_shard_bytes
    generation_config.json   when the model has one
    tokenizer files          when a tokenizer is given

Tensors that share storage (tied embeddings) are written once; ``aliases``
records the dropped names. Only JSON and safetensors are read, never pickle;
every tensor's shape and dtype is checked against the module it belongs to
before its bytes are read, and packed metadata is validated after loading, so
a corrupt or hostile file is a ``ValueError`` naming the tensor.

``load`` also reads compressed-tensors ``sparse-24-bitmask`` folders (the 2:4
format of compressed-tensors <= 0.14: per Linear ``compressed``, ``bitmask``,
``shape`` tensors; ``quant_method: compressed-tensors``,
``sparsity_config.format: sparse-24-bitmask``).
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict

import torch
from torch import nn

from ..nn.formats import FORMATS, is_llmpack_module, module_from_spec
from ..nn._modules import set_module as _set_module

QUANT_METHOD = "llmpack"
FORMAT_VERSION = 1
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------- save

def llmpack_quantization_config(model: nn.Module, aliases: dict | None = None) -> dict:
    from .. import __version__

    modules = {name: mod.llmpack_spec() for name, mod in model.named_modules() if is_llmpack_module(mod)}
    return {"quant_method": QUANT_METHOD, "format_version": FORMAT_VERSION, "llmpack_version": __version__,
            "modules": modules, "aliases": dict(aliases or {})}


def _dedup_state(model: nn.Module) -> tuple[OrderedDict, dict]:
    """state_dict with shared-storage tensors kept once: (tensors, aliases)."""
    seen: dict[tuple, str] = {}
    out, aliases = OrderedDict(), {}
    for name, t in model.state_dict().items():
        key = (t.device.type, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if t.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        out[name] = t.detach().to("cpu").contiguous()
    return out, aliases


def _shards(tensors: OrderedDict, max_bytes: int) -> list[OrderedDict]:
    shards, cur, size = [], OrderedDict(), 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if cur and size + nbytes > max_bytes:
            shards.append(cur)
            cur, size = OrderedDict(), 0
        cur[name] = t
        size += nbytes
    shards.append(cur)
    return shards


def save(model: nn.Module, out_dir: str, tokenizer=None, max_shard_bytes: int = 4 << 30) -> str:
    """Write ``model`` (a transformers model holding llmpack modules, e.g.
    after :func:`llmpack.sparsify`) to the folder ``out_dir`` (layout above):
    reloadable with :func:`load`, servable by vLLM with llmpack installed."""
    from safetensors.torch import save_file

    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise TypeError("llmpack.save needs a transformers model (one with a .config); "
                        f"got {type(model).__name__}")
    os.makedirs(out_dir, exist_ok=True)
    tensors, aliases = _dedup_state(model)
    shards = _shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        save_file(shards[0], os.path.join(out_dir, SINGLE_FILE), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(out_dir, fname), metadata={"format": "pt"})
            weight_map.update({name: fname for name in shard})
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        with open(os.path.join(out_dir, INDEX_FILE), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    cfg = config.to_dict()
    # The dense parts' dtype: the parameters' (weighted by size), not the packed
    # buffers' (a QuantLinear's fp16 scales must not make a float32 model fp16).
    sizes: dict = {}
    for p in model.parameters():
        if p.is_floating_point():
            sizes[p.dtype] = sizes.get(p.dtype, 0) + p.numel()
    if sizes:
        cfg["dtype"] = str(max(sizes, key=sizes.get)).removeprefix("torch.")
    cfg["quantization_config"] = llmpack_quantization_config(model, aliases)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    gen = getattr(model, "generation_config", None)
    if gen is not None and hasattr(gen, "save_pretrained"):
        gen.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir


# ---------------------------------------------------------------- reading files

def read_config(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder}: no config.json (not a saved model folder)")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: must hold a JSON object")
    return cfg


def tensor_files(folder: str) -> dict[str, str]:
    """{tensor name: safetensors file path} from the index or the single file."""
    index = os.path.join(folder, INDEX_FILE)
    if os.path.isfile(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{index}: not a safetensors index (weight_map): {err}") from err
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: weight_map must be an object")
        out = {}
        for name, fname in weight_map.items():
            if not isinstance(fname, str) or os.path.basename(fname) != fname:
                raise ValueError(f"{index}: tensor {name!r} maps to {fname!r}, not a file name in the folder")
            out[name] = os.path.join(folder, fname)
        return out
    single = os.path.join(folder, SINGLE_FILE)
    if not os.path.isfile(single):
        raise FileNotFoundError(f"{folder}: neither {SINGLE_FILE} nor {INDEX_FILE}")
    from safetensors import safe_open

    with _open(single) as f:
        return {name: single for name in f.keys()}


def _open(path: str):
    from safetensors import safe_open

    try:
        return safe_open(path, framework="pt")
    except Exception as err:  # the safetensors parser names no tensor: name the file
        raise ValueError(f"{path}: not a valid safetensors file: {err}") from err


class _Reader:
    """Lazy access to a folder's tensors: names, shapes and dtypes from the
    headers; data only on request."""

    def __init__(self, folder: str):
        self.files = tensor_files(folder)
        self._handles: dict[str, object] = {}

    def _h(self, name: str):
        path = self.files[name]
        if path not in self._handles:
            self._handles[path] = _open(path)
        return self._handles[path]

    def names(self) -> list[str]:
        return list(self.files)

    def nbytes(self) -> int:
        return sum(os.path.getsize(p) for p in set(self.files.values()))

    def shape_dtype(self, name: str) -> tuple[tuple, str]:
        sl = self._h(name).get_slice(name)
        return tuple(sl.get_shape()), sl.get_dtype()

    def get(self, name: str) -> torch.Tensor:
        try:
            return self._h(name).get_tensor(name)
        except Exception as err:
            raise ValueError(f"tensor {name!r} in {self.files[name]}: cannot be read: {err}") from err


_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "U8": torch.uint8, "U32": torch.uint32,
              "I8": torch.int8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64, "F64": torch.float64,
              "BOOL": torch.bool}


def _check_like(reader: _Reader, name: str, expected: torch.Tensor, float_ok: bool = False):
    """The file's header for ``name`` matches ``expected``'s shape and dtype
    (any float dtype when float_ok: it is cast on load)."""
    shape, st_dtype = reader.shape_dtype(name)
    dtype = _ST_DTYPES.get(st_dtype)
    if shape != tuple(expected.shape):
        raise ValueError(f"tensor {name!r}: shape {list(shape)} in the file, the model expects "
                         f"{list(expected.shape)}")
    if dtype is None or (dtype != expected.dtype and not (float_ok and dtype.is_floating_point
                                                          and expected.dtype.is_floating_point)):
        raise ValueError(f"tensor {name!r}: dtype {st_dtype} in the file, the model expects "
                         f"{str(expected.dtype).removeprefix('torch.')}")


# ---------------------------------------------------------------- load

def _skeleton(cfg: dict, dtype: torch.dtype, file_bytes: int | None = None):
    """The transformers model for ``cfg`` with uninitialised weights: no
    random init, and the pages of weights we replace are never touched. A
    config transformers rejects, or one describing a model far larger than
    the checkpoint's files (a hostile config.json asking for terabytes), is a
    ValueError before any real allocation: the model is built on the meta
    device first."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    plain = {k: v for k, v in cfg.items() if k not in ("quantization_config", "transformers_version")}
    model_type = plain.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ValueError("config.json has no model_type: cannot tell which transformers model to build")
    try:
        config = AutoConfig.for_model(model_type, **plain)
        with torch.device("meta"):
            meta_model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    except Exception as err:  # transformers' own validation: any error type
        raise ValueError(f"config.json: transformers cannot build a {model_type!r} model from it: "
                         f"{type(err).__name__}: {err}") from err
    need = sum(t.numel() * t.element_size() for t in meta_model.state_dict().values())
    del meta_model
    if file_bytes is not None and need > 4 * file_bytes + (256 << 20):
        raise ValueError(f"config.json describes a model of {need / 2**30:.2f} GiB of dense tensors, but the "
                         f"checkpoint files hold {file_bytes / 2**30:.2f} GiB: refusing to allocate it")
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval().requires_grad_(False)


def _resolve_dtype(cfg: dict, dtype) -> torch.dtype:
    if dtype is not None:
        return dtype
    name = cfg.get("dtype", cfg.get("torch_dtype", "float32"))
    if name not in _DTYPES:
        raise ValueError(f"config.json: dtype {name!r} is not one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def load(folder: str, dtype: torch.dtype | None = None):
    """The model saved in ``folder`` by :func:`save` (same llmpack modules,
    bit-identical outputs), or a compressed-tensors folder: sparse-24-bitmask
    (its 2:4 Linears become SparseLinear), pack-quantized or int-quantized
    (its quantized Linears become QuantLinear, bit-exactly). ``dtype`` overrides the saved one
    for the dense parts. Tokenizer: ``AutoTokenizer.from_pretrained(folder)``."""
    cfg = read_config(folder)
    qc = cfg.get("quantization_config")
    if not isinstance(qc, dict):
        raise ValueError(f"{folder}/config.json: no quantization_config: not an llmpack or compressed-tensors "
                         "checkpoint (load a dense model with transformers)")
    method = qc.get("quant_method")
    reader = _Reader(folder)
    if method == QUANT_METHOD:
        return _load_llmpack(cfg, qc, reader, dtype)
    if method == "compressed-tensors":
        from .compressed_tensors import load_compressed_tensors

        return load_compressed_tensors(cfg, qc, reader, _skeleton(cfg, _resolve_dtype(cfg, dtype), reader.nbytes()))
    raise ValueError(f"{folder}/config.json: quant_method {method!r} is neither 'llmpack' nor "
                     "'compressed-tensors'")


def _load_llmpack(cfg: dict, qc: dict, reader: _Reader, dtype):
    version = qc.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"config.json: llmpack format_version {version!r}; this llmpack reads {FORMAT_VERSION}")
    specs, aliases = qc.get("modules", {}), qc.get("aliases", {})
    if not isinstance(specs, dict) or not isinstance(aliases, dict):
        raise ValueError("config.json: quantization_config.modules and .aliases must be objects")
    model_dtype = _resolve_dtype(cfg, dtype)
    model = _skeleton(cfg, model_dtype, reader.nbytes())
    for name, spec in specs.items():
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"config.json: module {name!r} does not exist in this {cfg.get('model_type')} model") from None
        new = module_from_spec(name, spec, dtype)
        # A SparseLinear computes in its weights' dtype and takes inputs of that
        # dtype only: one that disagrees with the model around it would load and
        # then fail at the first forward (found by fuzzing the config).
        if getattr(new, "computes_in_weight_dtype", False) and new.weight_dtype != model_dtype:
            raise ValueError(f"config.json: module {name!r} is {str(new.weight_dtype).removeprefix('torch.')} in "
                             f"its spec, the model is {str(model_dtype).removeprefix('torch.')}; they must match "
                             "(load(..., dtype=) casts both)")
        if isinstance(old, nn.Linear) and (old.in_features, old.out_features) != (new.in_features, new.out_features):
            raise ValueError(f"config.json: module {name!r} is {new.in_features}->{new.out_features} in the spec, "
                             f"{old.in_features}->{old.out_features} in the model config")
        _set_module(model, name, new)
    fill_from_files(model, reader, aliases)
    for name, spec in specs.items():
        model.get_submodule(name).validate_loaded(name)
    return model


def fill_from_files(model: nn.Module, reader: _Reader, aliases: dict, done: set[str] = frozenset(),
                    consumed: set[str] = frozenset()):
    """Load every persistent tensor of ``model`` from ``reader`` (shape and
    dtype checked against the model before the bytes are read), except the
    keys in ``done`` (filled by a converter, which read the file tensors in
    ``consumed``); tie what ``aliases`` or the config ties; refuse files with
    tensors the model does not have and models left with tensors unfilled."""
    expected = model.state_dict()
    names = set(reader.names())
    for key, target in aliases.items():
        if key not in expected or target not in expected:
            raise ValueError(f"config.json: alias {key!r} -> {target!r} names a tensor the model does not have")
    # Old checkpoints carry the rotary tables transformers now recomputes.
    unexpected = {n for n in names - set(expected) - set(consumed) if not n.endswith("rotary_emb.inv_freq")}
    if unexpected:
        raise ValueError(f"the checkpoint has tensors this model does not: {sorted(unexpected)[:8]}")
    state = {}
    for key, ref in expected.items():
        if key in done or key not in names:
            continue
        _check_like(reader, key, ref, float_ok=True)
        t = reader.get(key)
        state[key] = t.to(ref.dtype) if t.dtype != ref.dtype else t
    model.load_state_dict(state, strict=False, assign=True)
    for key, target in aliases.items():
        _tie(model, key, target)
    if hasattr(model, "tie_weights"):
        try:
            model.tie_weights()
        except AttributeError:
            # The tied parameters were replaced by llmpack modules (a DFloat11
            # embedding and head share one container): `aliases` tied them.
            pass
    loaded = set(state) | set(done)
    missing = [k for k in expected if k not in loaded and k not in aliases and not _is_tied(model, k, loaded)]
    if missing:
        raise ValueError(f"the checkpoint lacks tensors the model needs: {missing[:8]}")
    return model


def _is_tied(model: nn.Module, key: str, loaded: set[str]) -> bool:
    """True when ``key`` now shares its storage with a loaded tensor (tied embeddings)."""
    sd = model.state_dict()
    ptr = sd[key].data_ptr()
    return bool(sd[key].numel()) and any(sd[o].data_ptr() == ptr for o in loaded if o != key and o in sd)


def _tie(model: nn.Module, key: str, target: str):
    mod_name, _, attr = key.rpartition(".")
    tmod_name, _, tattr = target.rpartition(".")
    mod = model.get_submodule(mod_name) if mod_name else model
    tmod = model.get_submodule(tmod_name) if tmod_name else model
    setattr(mod, attr, getattr(tmod, tattr))
