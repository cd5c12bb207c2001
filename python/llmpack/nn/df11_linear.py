"""DF11Linear / DF11Embedding: bf16 weights held DFloat11-compressed, and
compress_lossless, which swaps them into a model in one call."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import _ops
from .._progress import progress as _progress
from ..df11 import DF11Tensor, compress
from .formats import register_format
from ._modules import set_module as _set_module


def _positive(spec: dict, key: str, allow_zero: bool = False) -> int:
    v = spec[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < (0 if allow_zero else 1):
        raise ValueError(f"{key} must be a {'non-negative' if allow_zero else 'positive'} integer, got {v!r}")
    return v


class _DF11Weight(nn.Module):
    """The container as buffers (lengths, stream, offsets, sign_mantissa)."""

    def _init_container(self, numel: int, stream_bytes: int, device=None):
        chunks = (numel + _ops.DF11_CHUNK - 1) // _ops.DF11_CHUNK
        self.register_buffer("lengths", torch.zeros(256, dtype=torch.uint8, device=device))
        self.register_buffer("stream", torch.zeros(stream_bytes, dtype=torch.uint8, device=device))
        self.register_buffer("offsets", torch.zeros(chunks + 1, dtype=torch.uint32, device=device))
        self.register_buffer("sign_mantissa", torch.zeros(numel, dtype=torch.uint8, device=device))

    def _set_container(self, c: DF11Tensor):
        self.lengths, self.stream, self.offsets, self.sign_mantissa = c.tensors()

    def container(self) -> tuple[torch.Tensor, ...]:
        return self.lengths, self.stream, self.offsets, self.sign_mantissa

    @property
    def compressed_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.container())

    def dense_weight(self) -> torch.Tensor:
        return _ops.df11_decode(*self.container()).view(self.weight_shape)

    def validate_loaded(self, name: str):
        try:
            _ops.df11_decode(*self.container())
        except RuntimeError as err:
            raise ValueError(f"{name}: {err}") from err


@register_format
class DF11Linear(_DF11Weight):
    """``y = x @ W^T + bias`` with bf16 ``W [out, in]`` held compressed.

    ``mode="decode"`` (default): W is decoded into a fresh bf16 tensor per
    call and multiplied by torch's own ``F.linear``, so outputs are
    bit-identical to the uncompressed Linear's. ``mode="fused"``: the
    ``df11_linear`` op decodes W tile by tile into cache-resident buffers next
    to its dot products (W never exists whole; fp32 accumulation in another
    order than torch's, so not bit-identical at small M)."""

    llmpack_format = "df11"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, stream_bytes: int = 8,
                 device=None, mode: str = "decode"):
        super().__init__()
        self.in_features, self.out_features, self.mode = in_features, out_features, mode
        self._init_container(in_features * out_features, stream_bytes, device)
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=torch.bfloat16, device=device),
                                 requires_grad=False) if bias else None

    @property
    def weight_shape(self) -> tuple[int, int]:
        return self.out_features, self.in_features

    @classmethod
    def from_linear(cls, linear: nn.Linear, mode: str = "decode", compressed: DF11Tensor | None = None) -> "DF11Linear":
        w = linear.weight.detach()
        if w.dtype != torch.bfloat16:
            raise TypeError(f"DF11Linear holds bf16 weights (DFloat11 is lossless only for bf16); got {w.dtype}: "
                            "cast the model to bfloat16 first")
        c = compressed or compress(w)
        mod = cls(linear.in_features, linear.out_features, linear.bias is not None, c.stream.numel(), mode=mode)
        mod._set_container(c.to(w.device))
        if linear.bias is not None:
            mod.bias.data = linear.bias.detach().to(torch.bfloat16).clone()
        return mod

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "fused" and x.dtype == torch.bfloat16:
            return _ops.df11_linear(x, *self.container(), self.out_features, self.bias)
        w = _ops.df11_decode(*self.container()).view(self.out_features, self.in_features)
        return F.linear(x, w.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def llmpack_spec(self) -> dict:
        return {"format": self.llmpack_format, "in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "stream_bytes": self.stream.numel(), "dtype": "bfloat16"}

    @classmethod
    def from_llmpack_spec(cls, spec: dict, dtype=None) -> "DF11Linear":
        if not isinstance(spec.get("bias"), bool):
            raise ValueError(f"bias must be true or false, got {spec.get('bias')!r}")
        return cls(_positive(spec, "in_features"), _positive(spec, "out_features"), spec["bias"],
                   _positive(spec, "stream_bytes"))

    def extra_repr(self) -> str:
        ratio = self.compressed_bytes / max(1, 2 * self.in_features * self.out_features)
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"DFloat11 {100 * ratio:.1f}% of bf16, mode={self.mode}")


@register_format
class DF11Embedding(_DF11Weight):
    """``nn.Embedding`` with its bf16 table held compressed (decoded per call)."""

    llmpack_format = "df11_embedding"

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, stream_bytes: int = 8, device=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self._init_container(num_embeddings * embedding_dim, stream_bytes, device)

    @property
    def weight_shape(self) -> tuple[int, int]:
        return self.num_embeddings, self.embedding_dim

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, compressed: DF11Tensor | None = None) -> "DF11Embedding":
        w = emb.weight.detach()
        if w.dtype != torch.bfloat16:
            raise TypeError(f"DF11Embedding holds bf16 tables; got {w.dtype}")
        c = compressed or compress(w)
        mod = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx, c.stream.numel())
        mod._set_container(c.to(w.device))
        return mod

    # Above this many distinct ids a lookup decodes the whole table.
    ROWS_DECODED_ALONE = 64

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows, inverse = torch.unique(ids, return_inverse=True)
        if rows.numel() > self.ROWS_DECODED_ALONE or ids.device.type != "cpu":
            return F.embedding(ids, self.dense_weight(), self.padding_idx)
        # A generation step looks up a few rows: decode only the chunks holding
        # them. (padding_idx only shapes gradients, and these tables have none.)
        return F.embedding(inverse, self.decode_rows(rows.tolist()))

    def decode_rows(self, rows: list[int]) -> torch.Tensor:
        """Rows ``rows`` of the table, bit-exact, decoding only their chunks."""
        c = DF11Tensor(*self.container(), (self.num_embeddings * self.embedding_dim,))
        d, chunk = self.embedding_dim, _ops.DF11_CHUNK
        out = []
        for r in rows:
            if not 0 <= r < self.num_embeddings:
                raise IndexError(f"index {r} is out of range for an embedding of {self.num_embeddings} rows")
            c0, c1 = r * d // chunk, ((r + 1) * d - 1) // chunk + 1
            span = _ops.df11_decode(*c.chunk_span(c0, c1).tensors())
            out.append(span[r * d - c0 * chunk:(r + 1) * d - c0 * chunk])
        return torch.stack(out)

    def llmpack_spec(self) -> dict:
        return {"format": self.llmpack_format, "num_embeddings": self.num_embeddings,
                "embedding_dim": self.embedding_dim, "padding_idx": self.padding_idx,
                "stream_bytes": self.stream.numel(), "dtype": "bfloat16"}

    @classmethod
    def from_llmpack_spec(cls, spec: dict, dtype=None) -> "DF11Embedding":
        pad = spec.get("padding_idx")
        if pad is not None and (not isinstance(pad, int) or isinstance(pad, bool)):
            raise ValueError(f"padding_idx must be an integer or null, got {pad!r}")
        return cls(_positive(spec, "num_embeddings"), _positive(spec, "embedding_dim"), pad,
                   _positive(spec, "stream_bytes"))


@dataclass
class LosslessReport:
    swapped: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    dense_bytes: int = 0
    compressed_bytes: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        ratio = self.compressed_bytes / self.dense_bytes if self.dense_bytes else 0.0
        lines = [f"compress_lossless: {len(self.swapped)} modules DFloat11, {self.dense_bytes / 2**20:.1f} MiB -> "
                 f"{self.compressed_bytes / 2**20:.1f} MiB ({100 * ratio:.1f}% of bf16) in {self.seconds:.1f}s"]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def compress_lossless(model: nn.Module, embeddings: bool = True, mode: str = "decode",
                      progress: bool = True) -> LosslessReport:
    """Swap every bf16 ``nn.Linear`` (and, with ``embeddings``, every bf16
    ``nn.Embedding``) of ``model`` for its DFloat11 module, in place. A
    weight shared by several modules (tied embedding and output head) is
    compressed once and its container shared. Outputs stay bit-identical in
    the default ``mode="decode"``."""
    start = time.perf_counter()
    report = LosslessReport()
    targets = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) or (embeddings and isinstance(mod, nn.Embedding)):
            if mod.weight.dtype != torch.bfloat16:
                report.skipped[name] = f"weight is {mod.weight.dtype}, DFloat11 needs bfloat16"
            else:
                targets.append((name, mod))
        elif isinstance(mod, nn.Embedding):
            report.skipped[name] = "embedding (embeddings=False)"
    shared: dict[int, DF11Tensor] = {}
    for name, mod in _progress(targets, progress, desc="DFloat11", unit="module"):
        key = id(mod.weight)
        c = shared.get(key)
        if c is None:
            c = shared[key] = compress(mod.weight.detach())
            report.dense_bytes += mod.weight.numel() * 2
            report.compressed_bytes += c.nbytes
        new = (DF11Linear.from_linear(mod, mode=mode, compressed=c) if isinstance(mod, nn.Linear)
               else DF11Embedding.from_embedding(mod, compressed=c))
        _set_module(model, name, new)
        report.swapped.append(name)
    report.seconds = time.perf_counter() - start
    return report
