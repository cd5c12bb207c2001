"""The registry of llmpack module formats, shared by save/load and the vLLM plugin.

A format is an ``nn.Module`` class standing in for ``nn.Linear`` (SparseLinear
today; QuantLinear and DF11Linear as their families land) that declares:

* ``llmpack_format``: its name in checkpoints (``"sparse24"``);
* ``llmpack_spec(self) -> dict``: the JSON-able facts needed to rebuild an
  empty module (features, bias, dtype, format parameters);
* ``from_llmpack_spec(cls, spec, dtype) -> module``: that empty module, its
  buffers shaped as the checkpoint's tensors must be;
* ``validate_loaded(self, name)``: checks of the loaded packed bytes that the
  kernels would otherwise only catch at the first call.
"""
from __future__ import annotations

from torch import nn

FORMATS: dict[str, type[nn.Module]] = {}


def register_format(cls):
    FORMATS[cls.llmpack_format] = cls
    return cls


def is_llmpack_module(mod: nn.Module) -> bool:
    return type(mod) in FORMATS.values()


def module_from_spec(name: str, spec: dict, dtype) -> nn.Module:
    """An empty module for checkpoint entry ``name``; a bad spec is a
    ValueError naming the module."""
    if not isinstance(spec, dict) or not isinstance(spec.get("format"), str):
        raise ValueError(f"checkpoint module {name!r}: spec must be an object with a 'format' string, got {spec!r}")
    cls = FORMATS.get(spec["format"])
    if cls is None:
        raise ValueError(f"checkpoint module {name!r}: unknown llmpack format {spec['format']!r} "
                         f"(this llmpack knows {sorted(FORMATS)})")
    try:
        return cls.from_llmpack_spec(spec, dtype)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"checkpoint module {name!r}: bad {spec['format']} spec {spec!r}: {err}") from err
