"""Weight quantization producers for QuantLinear (the BTC family): RTN and GPTQ.

Both produce unsigned codes q in 0 .. 2^b - 1 with per-(row, group) scales
and integer zero points, W ~ s (q - z):

* ``rtn``: round to nearest on each group's own range (asymmetric: min..max;
  symmetric: +-max|W|, z = 2^(b-1)). Needs no data.
* ``gptq`` (Frantar et al. 2022): columns are quantized left to right and
  each column's error is pushed onto the columns not yet quantized through
  the inverse Hessian of the layer's least-squares problem (H = X^T X of the
  Linear's calibration inputs), in blocks with lazy updates, with relative
  dampening. ``act_order`` visits columns by decreasing diag(H). Groups are
  then runs of the visit order, their parameters set when GPTQ reaches them
  (its dynamic groups: the codes come back in visit order with the
  permutation, which QuantLinear holds as ``input_perm``), or, with
  ``static_groups``, fixed up front from the original weight in column order.

Scales are rounded to their storage dtype *before* the codes are chosen, so
the stored (codes, scales, zeros) are exactly what was optimised. With
calibration data the model is processed one decoder layer at a time (the
loop pruning uses), so later layers see the already quantized earlier ones.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .._progress import progress as _progress
from ..nn._modules import set_module as _set_module

METHODS = ("rtn", "gptq")


def _group_view(w: torch.Tensor, group_size: int):
    n, k = w.shape
    size = k if group_size <= 0 else group_size
    g = -(-k // size)
    pad = torch.full((n, g * size), float("nan"), dtype=torch.float32, device=w.device)
    pad[:, :k] = w.float()
    return pad.view(n, g, size), size


def group_params(w: torch.Tensor, wbits: int, group_size: int, symmetric: bool = False,
                 scale_dtype: torch.dtype = torch.float16):
    """Per-(row, group) ``(scales [N, G] in scale_dtype, zeros uint8 [N, G])`` covering each group's range."""
    if symmetric and wbits < 2:
        raise ValueError("symmetric weights need wbits >= 2")
    g, _ = _group_view(w, group_size)
    top = 2**wbits - 1
    if symmetric:
        amax = torch.nan_to_num(g.abs(), nan=0.0).amax(-1)
        scale = amax / (2 ** (wbits - 1) - 1)
        zero = torch.full_like(scale, float(2 ** (wbits - 1)))
    else:
        lo = torch.nan_to_num(g, nan=float("inf")).amin(-1).clamp(max=0.0)
        hi = torch.nan_to_num(g, nan=float("-inf")).amax(-1).clamp(min=0.0)
        scale = (hi - lo) / top
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).to(scale_dtype)
    if not symmetric:
        zero = torch.clamp(torch.round(-lo / scale.float()), 0, top)
    return scale, zero.to(torch.uint8)


def in_input_order(w: torch.Tensor, input_perm: torch.Tensor | None) -> torch.Tensor:
    """``w [N, K]`` whose column i is input ``input_perm[i]`` (act order), put back in input order."""
    return w if input_perm is None else torch.empty_like(w).index_copy_(1, input_perm.to(w.device), w)


def per_column(t: torch.Tensor, group_size: int, k: int) -> torch.Tensor:
    """A per-(row, group) tensor ``[N, G]`` widened to fp32 per column ``[N, K]``."""
    return t.float().repeat_interleave(k if group_size <= 0 else group_size, 1)[:, :k]


def quantize_codes(w: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, wbits: int, group_size: int):
    """Codes uint8 [N, K] of ``w`` under the given group parameters (round to nearest, clamped)."""
    k = w.shape[1]
    s, z = per_column(scales, group_size, k), per_column(zeros, group_size, k)
    return torch.clamp(torch.round(w.float() / s) + z, 0, 2**wbits - 1).to(torch.uint8)


def rtn(w: torch.Tensor, wbits: int, group_size: int = 128, symmetric: bool = False,
        scale_dtype: torch.dtype = torch.float16):
    """Round-to-nearest: ``(codes uint8 [N, K], scales [N, G], zeros uint8 [N, G])``."""
    scales, zeros = group_params(w, wbits, group_size, symmetric, scale_dtype)
    return quantize_codes(w, scales, zeros, wbits, group_size), scales, zeros


def gptq(w: torch.Tensor, H: torch.Tensor, wbits: int, group_size: int = 128, symmetric: bool = False,
         scale_dtype: torch.dtype = torch.float16, blocksize: int = 128, percdamp: float = 0.01,
         act_order: bool = False, static_groups: bool = False):
    """GPTQ of one weight ``[N, K]`` given ``H ~ X^T X [K, K]`` -> ``(codes, scales, zeros, input_perm)``.

    ``input_perm`` is None and the codes are in column order, except with ``act_order`` and dynamic groups
    (``static_groups=False``): then the codes' column i is input ``input_perm[i]`` (the visit order) and
    group g is columns ``[g * group_size, (g + 1) * group_size)`` of that order."""
    from .prune import _inverse_hessian_cholesky

    W = w.detach().float().clone()
    n, k = W.shape
    H = H.detach().float().clone()
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    size = k if group_size <= 0 else group_size
    g = -(-k // size)
    static = static_groups or group_size <= 0
    scales = torch.empty(n, g, dtype=scale_dtype)
    zeros = torch.empty(n, g, dtype=torch.uint8)
    if static:
        scales, zeros = group_params(W, wbits, group_size, symmetric, scale_dtype)
    perm = torch.argsort(H.diagonal(), descending=True, stable=True) if act_order else torch.arange(k)
    W, H = W[:, perm], H[perm][:, perm]
    Hinv = _inverse_hessian_cholesky(H, percdamp).float()
    Q = torch.empty(n, k, dtype=torch.uint8)
    top = 2**wbits - 1
    for i1 in range(0, k, blocksize):
        i2 = min(i1 + blocksize, k)
        W1, Err1, Hinv1 = W[:, i1:i2].clone(), torch.zeros(n, i2 - i1), Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            pos = i1 + i
            grp = int(perm[pos]) // size if static else pos // size   # dynamic: runs of the visit order
            if not static and pos % size == 0:
                # Parameters of this group from the weight as updated so far (plain GPTQ).
                rest = torch.cat([W1[:, i:], W[:, i2:]], 1)[:, :min(size, k - pos)]
                scales[:, grp:grp + 1], zeros[:, grp:grp + 1] = group_params(rest, wbits, -1, symmetric,
                                                                             scale_dtype)
            s, z = scales[:, grp].float(), zeros[:, grp].float()
            q = torch.clamp(torch.round(W1[:, i] / s) + z, 0, top)
            Q[:, pos] = q.to(torch.uint8)
            err = (W1[:, i] - s * (q - z)) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    if act_order and not static:
        return Q, scales, zeros, perm
    codes = torch.empty_like(Q)
    codes[:, perm] = Q
    return codes, scales, zeros, None


def dequantize_codes(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
                     input_perm: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 ``s (q - z)`` ``[N, K]`` in input-column order (codes in ``input_perm`` order when given)."""
    k = codes.shape[1]
    wq = per_column(scales, group_size, k) * (codes.float() - per_column(zeros, group_size, k))
    return in_input_order(wq, input_perm)


@dataclass
class QuantizeReport:
    method: str
    wbits: int
    abits: int
    group_size: int
    swapped: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)   # relative error per Linear
    dense_bytes: int = 0
    packed_bytes: int = 0
    seconds: float = 0.0
    smooth: float | None = None   # SmoothQuant's alpha, when the activations were smoothed first
    smoothed: int = 0             # Linears whose inputs were smoothed

    def __str__(self) -> str:
        ratio = self.packed_bytes / self.dense_bytes if self.dense_bytes else 0.0
        what = "||(W - Wq) X|| / ||W X|| on calibration inputs" if self.method == "gptq" else "||W - Wq|| / ||W||"
        lines = [f"quantize ({self.method}, W{self.wbits}A{self.abits}, group {self.group_size}): "
                 f"{len(self.swapped)} Linears, {self.dense_bytes / 2**20:.1f} MiB bf16 -> "
                 f"{self.packed_bytes / 2**20:.1f} MiB ({100 * ratio:.1f}%) in {self.seconds:.1f}s"]
        if self.smooth is not None:
            lines.append(f"  smoothed the inputs of {self.smoothed} Linears (SmoothQuant, alpha {self.smooth})")
        if self.errors:
            errs = sorted(self.errors.values())
            lines.append(f"  error ({what}): median {errs[len(errs) // 2]:.4f}, max {errs[-1]:.4f} "
                         f"({max(self.errors, key=self.errors.get)})")
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def quantize(model: nn.Module, wbits: int = 4, abits: int = 16, group_size: int = 128, method: str = "rtn",
             calibration: torch.Tensor | None = None, symmetric: bool = False, act_symmetric: bool = False,
             skip=None, scale_dtype: torch.dtype = torch.float16, blocksize: int = 128, percdamp: float = 0.01,
             act_order: bool = False, static_groups: bool = False, batch_size: int = 8,
             smooth: float | None = None, progress: bool = True) -> QuantizeReport:
    """Quantize every eligible nn.Linear of ``model`` to ``wbits`` and swap it
    for a :class:`~llmpack.nn.QuantLinear` running with ``abits`` activations
    (16 = weight-only), in place. ``method="gptq"`` needs ``calibration``
    (token ids ``[n, seq]``, split into batches of ``batch_size``), as does
    ``smooth=alpha`` (SmoothQuant's activation smoothing, folded into the
    norms and up_proj before quantizing; :mod:`llmpack.compress.smooth`). The output
    head and embedding-tied Linears stay dense (``skip`` overrides, as in
    :func:`llmpack.prune`)."""
    from ..nn.quant_linear import QuantLinear, check_quant_args
    from .prune import _batches, _select, default_skip, find_decoder_layers, layerwise

    if method not in METHODS:
        raise ValueError(f"unknown quantization method {method!r}; choose one of {METHODS}")
    if method == "gptq" and calibration is None:
        raise ValueError("method 'gptq' needs calibration inputs")
    if smooth is not None and calibration is None:
        raise ValueError("smooth= needs calibration inputs (the activation ranges it balances)")
    check_quant_args("quantize", wbits, abits, group_size)   # before any calibration work
    start = time.perf_counter()
    targets, skipped = _select(model, 1, skip or default_skip(model))
    report = QuantizeReport(method, wbits, abits, group_size, skipped=skipped)
    params: dict[str, tuple] = {}

    def quantize_one(name: str, lin: nn.Linear, H=None):
        w = lin.weight.detach()
        if H is None:
            q = (*rtn(w, wbits, group_size, symmetric, scale_dtype), None)
        else:
            q = gptq(w, H, wbits, group_size, symmetric, scale_dtype, blocksize, percdamp, act_order, static_groups)
        params[name] = q
        wq = dequantize_codes(*q[:3], group_size, q[3])
        if H is None:
            report.errors[name] = float((w.float() - wq).norm() / w.float().norm().clamp_min(1e-30))
        else:  # output error on the calibration inputs: tr(D H D^T) / tr(W H W^T)
            d = (w.float() - wq)
            report.errors[name] = float(((d @ H) * d).sum().clamp_min(0) /
                                        ((w.float() @ H) * w.float()).sum().clamp_min(1e-30)) ** 0.5
        lin.weight.copy_(wq.to(lin.weight.dtype))   # the next layers see the quantized weight

    was_training = model.training
    model.eval()
    with torch.no_grad():
        if smooth is not None:
            from .smooth import smooth as smooth_model

            layers = find_decoder_layers(model)
            if layers is None:
                raise ValueError("smooth= needs a model with a decoder layer stack (model.layers, transformer.h, ...)")
            report.smoothed = smooth_model(model, layers, _batches(calibration, batch_size), smooth, progress)
            report.smooth = smooth
        if method == "rtn":
            for name, lin in _progress(list(targets.items()), progress, desc=f"rtn W{wbits}", unit="linear"):
                quantize_one(name, lin)
        else:
            batches = _batches(calibration, batch_size)
            layers = find_decoder_layers(model)

            def apply(mods, stats):
                for name, lin in mods.items():
                    quantize_one(name, lin, stats[name].H)

            if layers is None:
                raise ValueError("gptq needs a model with a decoder layer stack (model.layers, transformer.h, ...)")
            layerwise(model, layers, targets, skipped, batches, "sparsegpt", progress, apply, f"gptq W{wbits}")
        for name, lin in targets.items():
            if name not in params:
                continue
            codes, scales, zeros, perm = params[name]
            report.dense_bytes += 2 * lin.weight.numel()
            mod = QuantLinear.from_codes(codes, scales, zeros, wbits=wbits, group_size=group_size, bias=lin.bias,
                                         abits=abits, act_symmetric=act_symmetric, dtype=lin.weight.dtype,
                                         input_perm=perm)
            mod.to(lin.weight.device)
            report.packed_bytes += mod.packed_bytes
            _set_module(model, name, mod)
            report.swapped.append(name)
    model.train(was_training)
    report.seconds = time.perf_counter() - start
    return report
