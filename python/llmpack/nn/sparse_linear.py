"""SparseLinear: an nn.Linear whose weight is stored packed 2:4."""
from __future__ import annotations

import torch
from torch import nn

from .. import _ops
from ..sparse24 import pad_k
from .formats import register_format

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _positive_int(spec: dict, key: str) -> int:
    v = spec[key]
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"{key} must be a positive integer, got {v!r}")
    return v


@register_format
class SparseLinear(nn.Module):
    """``y = x @ W^T + bias`` with ``W [out, in]`` stored as 2:4 ``values`` +
    ``meta`` (layout: csrc/sparse24/sparse24.h), half the weight bytes plus
    1/16 for metadata. Runs ``torch.ops.llmpack.sparse24_linear``.

    The state_dict holds the compressed tensors (``values``, ``meta``,
    ``bias``). When ``in_features`` is not a multiple of 4 the weight is
    stored zero-padded and inputs are padded to match.
    """

    # The op takes inputs of the weights' dtype only (the loader checks).
    computes_in_weight_dtype = True

    @property
    def weight_dtype(self) -> torch.dtype:
        return self.values.dtype

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        dtype = dtype or torch.get_default_dtype()
        self.in_features, self.out_features = in_features, out_features
        k = in_features + (-in_features) % 4
        self.register_buffer("values", torch.zeros(out_features, k // 2, device=device, dtype=dtype))
        # An all-zero weight: nibble 0x4 = positions (0, 1) in every group.
        self.register_buffer("meta", torch.full((out_features, (k // 4 + 1) // 2), 0x44,
                                                dtype=torch.uint8, device=device))
        if (k // 4) % 2:
            self.meta[:, -1] = 0x04  # the padding nibble must be 0
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype),
                                 requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "SparseLinear":
        """Pack an nn.Linear whose weight is already 2:4 (prune it first, e.g.
        with :func:`llmpack.prune`). Keeps bias, dtype and device. Raises if
        the weight is not 2:4, naming the first bad group."""
        w = linear.weight.detach()
        mod = cls(linear.in_features, linear.out_features, linear.bias is not None,
                  device=w.device, dtype=w.dtype)
        values, meta = _ops.sparse24_compress(pad_k(w))
        mod.values.copy_(values)
        mod.meta.copy_(meta)
        if linear.bias is not None:
            mod.bias.data.copy_(linear.bias.detach())
        return mod

    llmpack_format = "sparse24"

    def llmpack_spec(self) -> dict:
        return {"format": self.llmpack_format, "in_features": self.in_features,
                "out_features": self.out_features, "bias": self.bias is not None,
                "dtype": str(self.values.dtype).removeprefix("torch.")}

    @classmethod
    def from_llmpack_spec(cls, spec: dict, dtype=None) -> "SparseLinear":
        if spec.get("dtype") not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {spec.get('dtype')!r}")
        if not isinstance(spec.get("bias"), bool):
            raise ValueError(f"bias must be true or false, got {spec.get('bias')!r}")
        return cls(_positive_int(spec, "in_features"), _positive_int(spec, "out_features"), spec["bias"],
                   dtype=dtype or _DTYPES[spec["dtype"]])

    def validate_loaded(self, name: str):
        """Every metadata nibble valid (and a padding nibble 0), checked once at
        load so a corrupted file fails there, naming the tensor and row. The
        decompress kernel validates; rows go in slices to bound the memory."""
        step = max(1, (1 << 24) // max(1, self.values.shape[1] * 2))
        for r0 in range(0, self.values.shape[0], step):
            try:
                _ops.sparse24_decompress(self.values[r0:r0 + step], self.meta[r0:r0 + step])
            except RuntimeError as err:
                raise ValueError(f"{name}.meta (rows from {r0}): {err}") from err

    def dense_weight(self) -> torch.Tensor:
        """The weight as a dense [out, in] tensor (exact)."""
        return _ops.sparse24_decompress(self.values, self.meta)[:, : self.in_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_features % 4:
            x = pad_k(x)
        return _ops.sparse24_linear(x, self.values, self.meta, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, dtype={self.values.dtype}, pattern=2:4")
