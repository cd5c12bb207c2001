"""QuantLinear: an nn.Linear whose weight is held as BTC bit planes (1..8 bits,
per-group scales and zero points or float offsets), multiplied by the
``btc_linear`` op with float activations (``abits=16``, weight-only) or with
activations quantized per token to 1..8 bits. Layout: csrc/btc/btc.h.

On the CPU the ``planes`` buffer holds the same bytes in the fields layout
(uint8, ``btc_to_fields``), which the CPU kernels expand several times
faster; the state_dict, checkpoints and every other device see bit planes.

Act-order checkpoints (GPTQ's dynamic groups, compressed-tensors' ``g_idx``)
group input columns that are not consecutive. The kernels' groups are runs of
consecutive inputs, so such a module holds its columns permuted
(``act_order=True``, buffer ``input_perm``: column i of the held weight is
input ``input_perm[i]``) and gathers ``x`` the same way before the kernel."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import _ops
from .formats import register_format

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_NAMES = {v: k for k, v in _DTYPES.items()}


def _int_in(spec: dict, key: str, allowed) -> int:
    v = spec[key]
    if not isinstance(v, int) or isinstance(v, bool) or v not in allowed:
        raise ValueError(f"{key} must be one of {sorted(allowed)}, got {v!r}")
    return v


def check_quant_args(who: str, wbits: int, abits: int, group_size: int):
    """The bit widths and group sizes the kernels take (a ValueError naming ``who`` otherwise)."""
    if wbits not in range(1, 9):
        raise ValueError(f"{who}: wbits must be in 1..8, got {wbits}")
    if abits != 16 and abits not in range(1, 9):
        raise ValueError(f"{who}: abits must be in 1..8 or 16 (weight-only), got {abits}")
    if group_size not in (32, 64, 128, -1):
        raise ValueError(f"{who}: group_size must be 32, 64, 128 or -1 (per channel), got {group_size}")


def check_permutation(perm: torch.Tensor, n: int, what: str) -> torch.Tensor:
    """``perm`` as int64, checked to hold each of 0 .. n - 1 exactly once (a ValueError naming ``what``
    and the first bad entry otherwise): a repeated input would be read twice and another never."""
    if perm.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8) or perm.shape != (n,):
        raise ValueError(f"{what}: expected an integer tensor of shape [{n}], got {perm.dtype} {list(perm.shape)}")
    p = perm.to(torch.int64)
    out = ((p < 0) | (p >= n)).nonzero()
    if len(out):
        i = int(out[0])
        raise ValueError(f"{what}[{i}] = {int(p[i])} is not an input index (0..{n - 1})")
    seen = torch.zeros(n, dtype=torch.int64, device=p.device).index_add_(0, p, torch.ones_like(p))
    if (seen != 1).any():
        j = int((seen > 1).nonzero()[0])
        first, again = (p == j).nonzero()[:2, 0].tolist()
        raise ValueError(f"{what}[{again}] = {j} repeats entry [{first}]: not a permutation")
    return p


@register_format
class QuantLinear(nn.Module):
    """``y = x @ W^T + bias`` with ``W [out, in]`` quantized to ``wbits``.

    The weight is ``s (q - z)`` (integer zero points, ``zeros``) or
    ``s q + m`` (float offsets, ``offsets``) per (row, group of
    ``group_size`` inputs; -1 = per channel). ``abits=16`` keeps the
    activations in their float dtype; ``abits`` 1..8 quantizes them per token
    (asymmetric, or symmetric with ``act_symmetric``) and runs the exact
    integer core."""

    llmpack_format = "btc"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, wbits: int = 4,
                 abits: int = 16, group_size: int = 128, zero_point: bool = True, act_symmetric: bool = False,
                 scale_dtype: torch.dtype = torch.float16, dtype: torch.dtype = torch.float32, act_order: bool = False,
                 device=None):
        super().__init__()
        check_quant_args("QuantLinear", wbits, abits, group_size)
        self.in_features, self.out_features = in_features, out_features
        self.wbits, self.abits, self.group_size = wbits, abits, group_size
        self.zero_point, self.act_symmetric, self.dtype = zero_point, act_symmetric, dtype
        self.act_order = act_order
        if act_order:
            self.register_buffer("input_perm", torch.arange(in_features, device=device))
        else:
            self.input_perm = None
        g = _ops.btc_num_groups(group_size, in_features)
        kw = _ops.btc_k_words(in_features)
        self.register_buffer("planes", torch.zeros(out_features, kw, wbits, dtype=torch.int32, device=device))
        self.register_buffer("scales", torch.zeros(out_features, g, dtype=scale_dtype, device=device))
        if zero_point:
            self.register_buffer("zeros", torch.zeros(out_features, g, dtype=torch.uint8, device=device))
            self.offsets = None
        else:
            self.register_buffer("offsets", torch.zeros(out_features, g, dtype=scale_dtype, device=device))
            self.zeros = None
        self.register_buffer("code_sums", torch.zeros(out_features, g, dtype=torch.int32, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device),
                                 requires_grad=False) if bias else None

    # ---- construction ---------------------------------------------------------
    @classmethod
    def from_codes(cls, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None = None,
                   offsets: torch.Tensor | None = None, *, wbits: int, group_size: int, bias=None,
                   abits: int = 16, act_symmetric: bool = False, dtype: torch.dtype = torch.float32,
                   input_perm: torch.Tensor | None = None) -> "QuantLinear":
        """From unsigned codes uint8 ``[out, in]`` and per-(row, group) ``scales`` with ``zeros``
        (W = s (q - z)) or ``offsets`` (W = s q + m). With ``input_perm`` (act order) the codes' column i
        is input ``input_perm[i]``, and groups are consecutive in that order."""
        if (zeros is None) == (offsets is None):
            raise ValueError("QuantLinear.from_codes: give exactly one of zeros and offsets")
        out_f, in_f = codes.shape
        mod = cls(in_f, out_f, bias is not None, wbits=wbits, abits=abits, group_size=group_size,
                  zero_point=zeros is not None, act_symmetric=act_symmetric, scale_dtype=scales.dtype, dtype=dtype,
                  act_order=input_perm is not None)
        if input_perm is not None:
            mod.input_perm = check_permutation(input_perm, in_f, "QuantLinear.from_codes: input_perm")
        mod.planes, mod.code_sums = _ops.btc_pack(codes.cpu(), wbits, group_size)
        mod.scales = scales.detach().clone()
        if zeros is not None:
            mod.zeros = zeros.detach().to(torch.uint8).clone()
        else:
            mod.offsets = offsets.detach().to(scales.dtype).clone()
        if bias is not None:
            mod.bias.data = bias.detach().to(dtype).clone()
        mod._hold_native_layout()
        return mod

    @classmethod
    def from_linear(cls, linear: nn.Linear, wbits: int = 4, abits: int = 16, group_size: int = 128,
                    symmetric: bool = False, act_symmetric: bool = False,
                    scale_dtype: torch.dtype = torch.float16) -> "QuantLinear":
        """Round-to-nearest quantization of ``linear``'s weight (see :func:`llmpack.compress.quantize.rtn`)."""
        from ..compress.quantize import rtn

        codes, scales, zeros = rtn(linear.weight.detach(), wbits, group_size, symmetric, scale_dtype)
        return cls.from_codes(codes, scales, zeros, wbits=wbits, group_size=group_size, bias=linear.bias,
                              abits=abits, act_symmetric=act_symmetric, dtype=linear.weight.dtype)

    # ---- the two layouts of the codes ---------------------------------------------
    def bit_planes(self) -> torch.Tensor:
        """The codes as bit planes int32 ``[out, k_words, wbits]``, whichever layout is held."""
        if self.planes.dtype == torch.uint8:
            return _ops.btc_to_planes(self.planes.cpu(), self.wbits).to(self.planes.device)
        return self.planes

    def _hold_native_layout(self):
        """Fields on the CPU, planes elsewhere (the CUDA kernel reads planes only)."""
        cpu = self.planes.device.type == "cpu"
        if cpu and self.planes.dtype == torch.int32:
            self.planes = _ops.btc_to_fields(self.planes, self.wbits)
        elif not cpu and self.planes.dtype == torch.uint8 and self.planes.device.type != "meta":
            self.planes = self.bit_planes()

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self._hold_native_layout()
        return out

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.planes.dtype == torch.uint8:
            destination[prefix + "planes"] = self.bit_planes()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints hold planes: load them over a planes buffer, then convert
        # (a state_dict without them, as a converter's partial load, leaves the buffer alone).
        if self.planes.dtype == torch.uint8 and prefix + "planes" in state_dict:
            self.planes = torch.empty(self.planes.shape[0], self.planes.shape[1], self.wbits, dtype=torch.int32,
                                      device=self.planes.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._hold_native_layout()

    # ---- use --------------------------------------------------------------------
    def codes(self) -> torch.Tensor:
        return _ops.btc_unpack(self.bit_planes().cpu(), self.wbits, self.in_features)

    def dense_weight(self) -> torch.Tensor:
        """The weight the kernel multiplies by, ``[out, in]`` in the module's dtype (fp32 math)."""
        from ..compress.quantize import in_input_order, per_column

        q = self.codes().float()
        per = lambda t: per_column(t.cpu(), self.group_size, self.in_features)  # noqa: E731
        s = per(self.scales)
        w = s * (q - per(self.zeros)) if self.zero_point else s * q + per(self.offsets)
        return in_input_order(w, self.input_perm).to(self.dtype)

    def _scaled_sums(self) -> torch.Tensor | None:
        """``btc_scaled_sums`` of the held scales and code sums, cached for the CPU integer kernels (which
        otherwise form it every call: ~1.05-1.25x at M = 1). The cache is keyed on those two tensors and
        their in-place version counters, so replacing or editing either recomputes it; inference-mode
        tensors (no version counter) and traced code skip it and let the kernel form it."""
        if self.abits == 16 or self.planes.device.type != "cpu" or torch.compiler.is_compiling():
            return None
        try:
            key = (self.scales._version, self.code_sums._version)
        except RuntimeError:
            return None
        cached = getattr(self, "_scaled_sums_cache", None)
        if cached is None or cached[0] is not self.scales or cached[1] is not self.code_sums or cached[2] != key:
            cached = (self.scales, self.code_sums, key, _ops.btc_scaled_sums(self.scales, self.code_sums))
            self._scaled_sums_cache = cached
        return cached[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if x.device.type not in ("cpu", "cuda"):
            return F.linear(x, self.dense_weight().to(x), bias)
        if self.input_perm is not None:
            x = x.index_select(-1, self.input_perm)
        return _ops.btc_linear(x, self.planes, self.scales, self.zeros, self.offsets, self.code_sums, self.wbits,
                               self.abits, self.group_size, bias, self.act_symmetric, self._scaled_sums())

    @property
    def packed_bytes(self) -> int:
        ts = [self.planes, self.scales, self.zeros if self.zero_point else self.offsets, self.code_sums]
        ts += [self.input_perm] if self.input_perm is not None else []
        return sum(t.numel() * t.element_size() for t in ts)

    # ---- checkpoint format ---------------------------------------------------------
    def llmpack_spec(self) -> dict:
        return {"format": self.llmpack_format, "in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "wbits": self.wbits, "abits": self.abits,
                "group_size": self.group_size, "zero_point": self.zero_point,
                "act_symmetric": self.act_symmetric, "scale_dtype": _NAMES[self.scales.dtype],
                "dtype": _NAMES.get(self.dtype, "float32"), "act_order": self.act_order}

    @classmethod
    def from_llmpack_spec(cls, spec: dict, dtype=None) -> "QuantLinear":
        for key in ("bias", "zero_point", "act_symmetric"):
            if not isinstance(spec.get(key), bool):
                raise ValueError(f"{key} must be true or false, got {spec.get(key)!r}")
        if not isinstance(spec.get("act_order", False), bool):   # absent in checkpoints before act order
            raise ValueError(f"act_order must be true or false, got {spec.get('act_order')!r}")
        if spec.get("scale_dtype") not in _DTYPES:
            raise ValueError(f"scale_dtype must be one of {sorted(_DTYPES)}, got {spec.get('scale_dtype')!r}")
        for key in ("in_features", "out_features"):
            v = spec[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{key} must be a positive integer, got {v!r}")
        return cls(spec["in_features"], spec["out_features"], spec["bias"],
                   wbits=_int_in(spec, "wbits", range(1, 9)), abits=_int_in(spec, "abits", [*range(1, 9), 16]),
                   group_size=_int_in(spec, "group_size", (32, 64, 128, -1)), zero_point=spec["zero_point"],
                   act_symmetric=spec["act_symmetric"], scale_dtype=_DTYPES[spec["scale_dtype"]],
                   dtype=dtype or _DTYPES.get(spec.get("dtype"), torch.float32),
                   act_order=spec.get("act_order", False))

    def validate_loaded(self, name: str):
        """The packed bytes as the kernels trust them: no bits past in_features, code sums that
        match the codes, zero points that fit wbits, an input_perm that is a permutation."""
        if self.input_perm is not None:
            self.input_perm = check_permutation(self.input_perm, self.in_features, f"{name}: input_perm")
        try:
            codes = self.codes()
        except RuntimeError as err:
            raise ValueError(f"{name}: {err}") from err
        sums = _ops.btc_pack(codes, self.wbits, self.group_size)[1]
        bad = (sums != self.code_sums.cpu()).nonzero()
        if len(bad):
            r, g = bad[0].tolist()
            raise ValueError(f"{name}: code_sums[{r}, {g}] = {int(self.code_sums[r, g])} but the codes of that "
                             f"group sum to {int(sums[r, g])} (corrupted checkpoint)")
        if self.zero_point:
            over = (self.zeros.cpu() >= 2 ** self.wbits).nonzero()
            if len(over):
                r, g = over[0].tolist()
                raise ValueError(f"{name}: zeros[{r}, {g}] = {int(self.zeros[r, g])} does not fit {self.wbits} bits")

    def extra_repr(self) -> str:
        dense = 2 * self.in_features * self.out_features
        form = "zero points" if self.zero_point else "offsets"
        acts = "float activations" if self.abits == 16 else f"A{self.abits}{' sym' if self.act_symmetric else ''}"
        order = ", act order" if self.act_order else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"W{self.wbits} group {self.group_size} ({form}{order}), {acts}, "
                f"{100 * self.packed_bytes / dense:.1f}% of bf16")
