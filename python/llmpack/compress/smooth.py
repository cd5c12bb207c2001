"""SmoothQuant-style activation smoothing (Xiao et al. 2023) for low-bit
activations: per input channel j, divide the activations by s_j and multiply
the weight's column j by s_j, with

    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)

so outlier channels (a few channels of an LLM's activations are 10-100x the
rest, and per-token quantization spends its whole range on them) hand part of
their range to the weights. The division is folded into the op that produces
X, so the smoothed model computes exactly what the original did (up to fp32
rounding) and nothing is added at run time:

* ``input_layernorm`` -> q / k / v projections and ``post_attention_layernorm``
  -> gate / up projections (the norm's weight, and bias if any, divided by
  s; the Linears sharing an input share one s, from the largest of their
  column maxima);
* ``up_proj`` -> ``down_proj`` (the MLP's product act(gate) * up is linear in
  up's output rows, so up's rows are divided by s).

``o_proj`` is left alone: its input channels are V's output rows, shared by
every query head of a kv-head under GQA, so one channel cannot be scaled
alone. Llama-style decoder layers only; anything else is a clear error.
"""
from __future__ import annotations

import torch
from torch import nn

from .._progress import progress as _progress
from ..models import forward_no_cache

# (producer of the input, the Linears that read it): paths inside one decoder layer.
_GROUPS = (("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
           ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
           ("mlp.up_proj", ("mlp.down_proj",)))


def _groups_of(layers: nn.ModuleList):
    """[(producer module, [Linear, ...], name)] for every layer, or a clear error."""
    out = []
    for i, layer in enumerate(layers):
        for prod_path, lin_paths in _GROUPS:
            try:
                prod = layer.get_submodule(prod_path)
                lins = [layer.get_submodule(p) for p in lin_paths]
            except AttributeError as err:
                raise ValueError(f"smooth= supports Llama-style decoder layers (input_layernorm -> q/k/v_proj, "
                                 f"post_attention_layernorm -> gate/up_proj, up_proj -> down_proj); layer {i} "
                                 f"has no {err}") from None
            width = lins[0].in_features
            if not all(isinstance(m, nn.Linear) and m.in_features == width for m in lins):
                raise ValueError(f"smooth=: layer {i}'s {', '.join(lin_paths)} must be nn.Linear reading "
                                 f"{width} features (smooth before any other compression)")
            size = prod.out_features if isinstance(prod, nn.Linear) else getattr(prod, "weight", torch.empty(0)).numel()
            if size != width:
                raise ValueError(f"smooth=: layer {i}'s {prod_path} does not produce the {width} features "
                                 f"{lin_paths[0]} reads")
            if not isinstance(prod, nn.Linear) and not _scales_with_its_weight(prod, width):
                raise ValueError(f"smooth=: layer {i}'s {prod_path} ({type(prod).__name__}) does not scale its "
                                 "output with its weight (y = w * norm(x) [+ b]), so s cannot be folded into it")
            out.append((prod, lins, f"layers.{i}.{prod_path}"))
    return out


@torch.no_grad()
def _scales_with_its_weight(norm: nn.Module, width: int) -> bool:
    """Whether doubling the norm's weight (and bias) doubles its output, as
    in LayerNorm / Llama's RMSNorm but not in a (1 + w) * norm(x) variant."""
    params = [t for t in (getattr(norm, "weight", None), getattr(norm, "bias", None)) if t is not None]
    if not params:
        return False
    x = torch.randn(3, width, generator=torch.Generator().manual_seed(0)).to(params[0])
    y = norm(x).float()
    for t in params:
        t.mul_(2)
    try:
        y2 = norm(x).float()
    finally:
        for t in params:
            t.div_(2)
    return bool(torch.allclose(y2, 2 * y, rtol=1e-3, atol=1e-6 * float(y.abs().max())))


@torch.no_grad()
def activation_absmax(model: nn.Module, linears: list[nn.Linear], batches, progress: bool = True):
    """max |x_j| per input channel of each Linear over the calibration batches
    (token ids), from forward hooks on the unmodified model."""
    stats = {id(m): torch.zeros(m.in_features) for m in linears}

    def hook(mod, args):
        x = args[0].detach().reshape(-1, mod.in_features).abs().amax(0).float().cpu()
        torch.maximum(stats[id(mod)], x, out=stats[id(mod)])

    handles = [m.register_forward_pre_hook(hook) for m in linears]
    try:
        device = next(model.parameters()).device
        for ids in _progress(batches, progress, desc="smooth: activation ranges", unit="batch"):
            forward_no_cache(model, ids.to(device))
    finally:
        for h in handles:
            h.remove()
    return stats


@torch.no_grad()
def smooth(model: nn.Module, layers: nn.ModuleList, batches, alpha: float = 0.5, progress: bool = True) -> int:
    """Smooths every Llama-style group of ``layers`` in place (see the module
    docstring); returns the number of Linears whose inputs were smoothed."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"smooth= (SmoothQuant's alpha) must be in [0, 1], got {alpha!r}")
    groups = _groups_of(layers)
    amax = activation_absmax(model, [m for _, lins, _ in groups for m in lins], batches, progress)
    for prod, lins, _ in groups:
        a = amax[id(lins[0])]
        w = torch.stack([m.weight.detach().abs().amax(0).float().cpu() for m in lins]).amax(0)
        # Channels never active (a == 0) or with an all-zero column keep s = 1.
        s = (a.pow(alpha) / w.pow(1.0 - alpha)).where((a > 0) & (w > 0), torch.ones(())).clamp(1e-5, 1e5)
        if isinstance(prod, nn.Linear):
            prod.weight.div_(s.to(prod.weight)[:, None])
        else:
            prod.weight.div_(s.to(prod.weight))
        if getattr(prod, "bias", None) is not None:
            prod.bias.div_(s.to(prod.bias))
        for m in lins:
            m.weight.mul_(s.to(m.weight)[None, :])
    return sum(len(lins) for _, lins, _ in groups)
