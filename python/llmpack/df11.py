"""DFloat11: lossless compression of bf16 tensors (Huffman-coded exponents,
raw sign + mantissa; layout: csrc/df11/df11.h).

    c = llmpack.df11.compress(w)          # any shape, bf16 -> DF11Tensor (~2/3 of the bytes)
    w2 = llmpack.df11.decompress(c)       # bit-identical to w
    llmpack.df11.decompress(c, out=buf)   # into a caller's buffer
    weights = llmpack.df11.load_official(folder)  # official DFloat11 checkpoints, decoded on the CPU
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from . import _ops


@dataclass
class DF11Tensor:
    """A DFloat11-compressed bf16 tensor: the four container tensors and the shape."""

    lengths: torch.Tensor     # uint8 [256]
    stream: torch.Tensor      # uint8
    offsets: torch.Tensor     # uint32 [chunks + 1]
    sign_mantissa: torch.Tensor  # uint8 [numel]
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return self.sign_mantissa.numel()

    @property
    def nbytes(self) -> int:
        """Compressed bytes, index and code table included."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    @property
    def ratio(self) -> float:
        """Compressed bytes / bf16 bytes."""
        return self.nbytes / max(1, 2 * self.numel)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.lengths, self.stream, self.offsets, self.sign_mantissa

    def chunk_span(self, c0: int, c1: int) -> "DF11Tensor":
        """Chunks ``[c0, c1)`` (values ``c0 * 2048 ..``) as a container of their
        own, flat: views of the stream and sign+mantissa bytes, offsets rebased.
        The stream view runs 16 bytes past the span's last code, as every
        container's must; those are the next chunks' bytes (or the real guard),
        which the decoders read but never use."""
        chunks = self.offsets.numel() - 1
        if not 0 <= c0 < c1 <= chunks:
            raise IndexError(f"chunk span [{c0}, {c1}) outside the container's {chunks} chunks")
        offs = self.offsets[c0:c1 + 1].to(torch.int64)
        o0, o1 = int(offs[0]), int(offs[-1])
        stream = self.stream[o0:o1 + _ops.DF11_GUARD_BYTES]
        sm = self.sign_mantissa[c0 * _ops.DF11_CHUNK:min(self.numel, c1 * _ops.DF11_CHUNK)]
        return DF11Tensor(self.lengths, stream, (offs - o0).to(torch.uint32), sm, (sm.numel(),))

    def to(self, device) -> "DF11Tensor":
        return DF11Tensor(*(t.to(device) for t in self.tensors()), self.shape)


def compress(tensor: torch.Tensor) -> DF11Tensor:
    """Compress a bf16 tensor of any shape (encoded on the CPU, in parallel)."""
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.bfloat16:
        raise TypeError(f"llmpack.df11.compress takes a bfloat16 tensor, got "
                        f"{getattr(tensor, 'dtype', type(tensor).__name__)}")
    parts = _ops.df11_encode(tensor.detach().cpu())
    return DF11Tensor(*parts, tuple(tensor.shape))


def decompress(c: DF11Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """The original bf16 tensor (bit-exact), new or written into ``out``
    (contiguous bf16 with as many elements; any shape)."""
    if out is None:
        return _ops.df11_decode(*c.tensors()).view(c.shape)
    _ops.df11_decode_into(*c.tensors(), out)
    return out


# ------------------------------------------------------------------ official checkpoints

OFFICIAL_TENSORS = ("luts", "encoded_exponent", "sign_mantissa", "output_positions", "gaps", "split_positions")


def decode_official_module(tensors: dict[str, torch.Tensor], bytes_per_thread: int,
                           threads_per_block: int) -> torch.Tensor:
    """One official module's tensors -> its weights concatenated (flat bf16)."""
    missing = [k for k in OFFICIAL_TENSORS[:5] if k not in tensors]
    if missing:
        raise ValueError(f"official DFloat11 module lacks {missing}")
    return _ops.df11_decode_official(tensors["luts"], tensors["encoded_exponent"], tensors["sign_mantissa"],
                                     tensors["output_positions"], tensors["gaps"], bytes_per_thread,
                                     threads_per_block)


def load_official(folder: str, model=None) -> dict[str, torch.Tensor]:
    """Decode every compressed module of an official DFloat11 folder
    (config.json -> dfloat11_config, ``<module>.safetensors`` per module) on
    the CPU. Returns {parameter name: bf16 tensor}, e.g.
    ``encoder.layer.0.attention.self.query.weight``. The shapes come from
    ``model`` (a module with the original architecture, e.g. built from the
    folder's config) when given; otherwise each module's weights are split by
    its ``split_positions`` and returned flat."""
    from safetensors import safe_open

    from .io.checkpoint import read_config

    cfg = read_config(folder).get("dfloat11_config")
    if not isinstance(cfg, dict):
        raise ValueError(f"{folder}/config.json: no dfloat11_config (not an official DFloat11 folder)")
    try:
        bpt, tpb = int(cfg["bytes_per_thread"]), int(cfg["threads_per_block"][0])
        patterns = dict(cfg["pattern_dict"])
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ValueError(f"{folder}/config.json: dfloat11_config needs bytes_per_thread, threads_per_block, "
                         f"pattern_dict: {err}") from err
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for fname in sorted(os.listdir(folder)):
        if not fname.endswith(".safetensors"):
            continue
        with safe_open(os.path.join(folder, fname), framework="pt") as f:
            for key in f.keys():
                module, _, leaf = key.rpartition(".")
                if leaf in OFFICIAL_TENSORS:
                    grouped.setdefault(module, {})[leaf] = f.get_tensor(key)
    if not grouped:
        raise ValueError(f"{folder}: no DFloat11-compressed tensors found")
    params = dict(model.named_parameters()) if model is not None else {}
    out: dict[str, torch.Tensor] = {}
    for module, tensors in grouped.items():
        flat = decode_official_module(tensors, bpt, tpb)
        subs = next((v for pat, v in patterns.items() if re.fullmatch(pat, module)), [])
        names = [f"{module}.{s}.weight" for s in subs] if subs else [f"{module}.weight"]
        split = tensors.get("split_positions")
        cuts = split.to(torch.int64).tolist() if split is not None and split.numel() else []
        pieces = torch.tensor_split(flat, cuts) if cuts else (flat,)
        if len(pieces) != len(names):
            raise ValueError(f"official module {module!r}: {len(pieces)} weights in the file, pattern_dict names "
                             f"{len(names)}")
        for name, piece in zip(names, pieces):
            if name in params:
                if params[name].numel() != piece.numel():
                    raise ValueError(f"official module {module!r}: {name} has {piece.numel()} values, the model "
                                     f"expects {params[name].numel()}")
                piece = piece.view(params[name].shape)
            out[name] = piece
    return out
