"""N:M semi-structured pruning of nn.Linear weights (producers for 2:4 sparsity).

Weights are pruned in place and stay dense tensors: every group of M
consecutive input columns (dim 1 of a weight [out, in]) keeps N non-zeros,
which is what the sparse kernels compress. Three ways to choose the N:

* ``magnitude``: largest |W|. Needs no data.
* ``wanda`` (Sun et al. 2023): largest |W_ij| * ||X_j||_2, X = calibration
  inputs of that Linear. One forward pass, no weight update.
* ``sparsegpt`` (Frantar & Alistarh 2023): OBS-style reconstruction. Columns
  are pruned left to right; the error of each pruned column is pushed onto the
  columns not yet visited through the inverse Hessian of the layer's
  least-squares problem, so W'X stays close to WX.

With calibration data the model is processed one decoder layer at a time
(as SparseGPT does): the inputs of layer i are the outputs of the already
pruned layers < i, so later layers learn to compensate earlier errors and only
one layer's statistics are in memory at once.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .._progress import progress as _progress
from ..models import forward_no_cache

METHODS = ("magnitude", "wanda", "sparsegpt")
_LAYER_PATHS = ("model.layers", "model.decoder.layers", "model.language_model.layers",
                "transformer.h", "gpt_neox.layers")


@dataclass
class PruneReport:
    method: str
    pattern: str
    pruned: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> reason
    sparsity: float = 0.0  # fraction of zeros over the pruned weights
    seconds: float = 0.0

    def __str__(self) -> str:
        lines = [f"{self.method} {self.pattern}: pruned {len(self.pruned)} Linears "
                 f"(sparsity {self.sparsity:.3f}) in {self.seconds:.1f}s"]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def parse_pattern(pattern: str) -> tuple[int, int]:
    """'N:M' -> (N, M) with 0 < N < M."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", pattern) if isinstance(pattern, str) else None
    if match:
        n, m = int(match[1]), int(match[2])
        if 0 < n < m:
            return n, m
    raise ValueError(f"sparsity pattern must be a string 'N:M' with 0 < N < M, e.g. '2:4'; got {pattern!r}")


def nm_mask_from_scores(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean keep-mask with exactly `n` True per group of `m` consecutive
    entries along the last dim: the `n` highest scores of each group."""
    if scores.shape[-1] % m:
        raise ValueError(f"last dimension {scores.shape[-1]} is not a multiple of M={m}")
    groups = scores.reshape(*scores.shape[:-1], -1, m)
    keep = torch.zeros(groups.shape, dtype=torch.bool, device=scores.device)
    keep.scatter_(-1, groups.topk(n, dim=-1).indices, True)
    return keep.reshape(scores.shape)


# ---------------------------------------------------------------- statistics

class _WandaStats:
    """Accumulates ||X_j||^2 per input feature."""

    def __init__(self, lin: nn.Linear, shared: dict):
        self.sq = torch.zeros(lin.in_features, dtype=torch.float64, device=lin.weight.device)

    def add(self, x: torch.Tensor):
        x = x.reshape(-1, x.shape[-1]).to(torch.float64)
        self.sq += (x * x).sum(0)

    def pruned_weight(self, w: torch.Tensor, n: int, m: int, **_) -> torch.Tensor:
        scores = w.abs().to(torch.float64) * self.sq.sqrt()
        return w * nm_mask_from_scores(scores, n, m)


class _HessianStats:
    """Accumulates X^T X (SparseGPT's H = 2 X^T X; the constant factor cancels
    in both the mask choice and the update, and damping is relative to diag H)."""

    def __init__(self, lin: nn.Linear, shared: dict):
        k = lin.in_features
        self.H = torch.zeros(k, k, dtype=torch.float32, device=lin.weight.device)
        # q/k/v (and gate/up) see the very same input tensor: compute X^T X once per call.
        self.shared = shared

    def add(self, x: torch.Tensor):
        hit = self.shared.get(id(x))
        if hit is None or hit[0] is not x:
            x2 = x.reshape(-1, x.shape[-1]).float()
            hit = self.shared[id(x)] = (x, x2.T @ x2)
        self.H += hit[1]

    def pruned_weight(self, w, n, m, blocksize=128, percdamp=0.01, **_):
        return sparsegpt_prune_weight(w, self.H, n, m, blocksize=blocksize, percdamp=percdamp)


_STATS = {"wanda": _WandaStats, "sparsegpt": _HessianStats}


def _inverse_hessian_cholesky(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp*I)^-1, in fp64 for stability; damping
    is raised tenfold until H is numerically positive definite."""
    H = H.to(torch.float64)
    mean_diag = H.diagonal().mean().clamp_min(1e-12)
    for attempt in range(6):
        damped = H.clone()
        damped.diagonal().add_(percdamp * (10**attempt) * mean_diag)
        L, info = torch.linalg.cholesky_ex(damped)
        if info == 0:
            return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    raise RuntimeError("SparseGPT: Hessian is not positive definite even with heavy damping")


def sparsegpt_prune_weight(weight: torch.Tensor, H: torch.Tensor, n: int, m: int,
                           blocksize: int = 128, percdamp: float = 0.01) -> torch.Tensor:
    """SparseGPT N:M pruning of one weight [out, in] given H ~ X^T X [in, in].
    Returns the new weight (same dtype); does not modify its inputs."""
    W = weight.detach().to(torch.float32).clone()
    H = H.detach().clone()
    cols = W.shape[1]
    # Dead inputs (always zero in calibration) carry no information: any weight
    # there is free, so zero it and make H invertible on that coordinate.
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    Hinv = _inverse_hessian_cholesky(H, percdamp).to(torch.float32)

    bs = max(m, blocksize // m * m)  # an M-group must never straddle two blocks
    for i1 in range(0, cols, bs):
        i2 = min(i1 + bs, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        d = Hinv1.diagonal()
        err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            if i % m == 0:  # choose the group's mask with the weights as updated so far
                keep = nm_mask_from_scores(W1[:, i:i + m] ** 2 / d[i:i + m] ** 2, n, m)
            w = W1[:, i]
            q = w * keep[:, i % m]
            err = (w - q) / d[i]
            W1[:, i:] -= torch.outer(err, Hinv1[i, i:])
            W1[:, i] = q  # exact zeros, not w - err*d rounding residue
            err1[:, i] = err
        W[:, i1:i2] = W1
        W[:, i2:] -= err1 @ Hinv[i1:i2, i2:]  # lazy batch update of the later columns
    return W.to(weight.dtype)


# ---------------------------------------------------------------- model walking

def _get_path(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def find_decoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """The repeated block stack of a Hugging Face style LM, or None."""
    for path in _LAYER_PATHS:
        layers = _get_path(model, path)
        if isinstance(layers, nn.ModuleList) and len(layers):
            return layers
    return None


def default_skip(model: nn.Module) -> Callable[[str, nn.Linear], bool | str]:
    """Skip the output head (lm_head) and any Linear tied to an embedding:
    their rows are vocabulary entries, pruning them hurts most and saves little."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    emb_weights = {id(mod.weight) for mod in model.modules() if isinstance(mod, nn.Embedding)}

    def skip(name: str, lin: nn.Linear):
        if lin is head or name.rsplit(".", 1)[-1] in ("lm_head", "embed_out"):
            return "output head"
        if id(lin.weight) in emb_weights:
            return "weight tied to an embedding"
        return False

    return skip


def _select(model, m, skip):
    targets, skipped = {}, {}
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        why = skip(name, mod)
        if why:
            skipped[name] = why if isinstance(why, str) else "skip() returned True"
        elif mod.in_features % m:
            skipped[name] = f"in_features={mod.in_features} is not a multiple of M={m}"
        else:
            targets[name] = mod
    return targets, skipped


def _batches(calibration: torch.Tensor, batch_size: int):
    return list(calibration.split(batch_size)) if isinstance(calibration, torch.Tensor) else list(calibration)


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


class _StopForward(Exception):
    pass


def _capture_layer_inputs(model, layers, batches, progress=False):
    """Run the model once per batch, dense, and record what every decoder layer
    is called with besides its hidden states (masks, rotary embeddings, ...):
    models whose layers differ (``layer_types``: sliding vs full attention with
    their own masks and rotary tables) pass each layer its own. Returns
    (hidden states entering layer 0 per batch, [per layer: [(args, kwargs) per
    batch]]). The forward stops at the last layer's input; the arguments are
    references to the model's own tensors (layers of one type share them)."""
    hidden0: list = []
    calls: list[list] = [[] for _ in layers]
    last = len(layers) - 1

    def make_hook(i):
        def hook(mod, args, kwargs):
            kwargs = dict(kwargs)
            hidden = args[0] if args else kwargs.pop("hidden_states")
            if i == 0:
                hidden0.append(hidden)
            calls[i].append((tuple(args[1:]), kwargs))
            if i == last:
                raise _StopForward
        return hook

    handles = [layer.register_forward_pre_hook(make_hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        for batch in _progress(batches, progress, desc="calibration inputs", unit="batch", leave=False):
            try:
                forward_no_cache(model, batch)
            except _StopForward:
                pass
    finally:
        for h in handles:
            h.remove()
    if len(hidden0) != len(batches) or any(len(c) != len(batches) for c in calls):
        raise RuntimeError("could not capture the inputs of every decoder layer "
                           f"({len(hidden0)} of {len(batches)} batches reached layer 0)")
    return hidden0, calls


def _collect(run_forward, modules: dict, method: str, n_calls: int):
    """Hook `modules` {name: Linear}, call run_forward(i) for i < n_calls, return stats."""
    shared: dict = {}
    stats = {name: _STATS[method](lin, shared) for name, lin in modules.items()}
    handles = [lin.register_forward_hook(lambda mod, inp, out, s=stats[name]: s.add(inp[0]))
               for name, lin in modules.items()]
    try:
        for i in range(n_calls):
            run_forward(i)
            shared.clear()
    finally:
        for h in handles:
            h.remove()
    return stats


def _apply(modules: dict, stats: dict, n, m, **kw):
    for name, lin in modules.items():
        lin.weight.copy_(stats[name].pruned_weight(lin.weight, n, m, **kw))


def layerwise(model, layers, targets, skipped, batches, stats_kind, progress, apply, desc):
    """Process the decoder layers one at a time: collect `stats_kind`
    statistics ("wanda" | "sparsegpt" = X^T X) of each layer's target Linears
    from that layer's real inputs, call apply({name: linear}, stats), then
    feed the next layer what the modified layer produces. Targets outside the
    layer stack move to `skipped`. Shared by pruning and GPTQ."""
    by_layer = [{} for _ in layers]
    layer_index = {id(layer): i for i, layer in enumerate(layers)}
    for lname, mod in model.named_modules():
        if id(mod) in layer_index:
            i = layer_index[id(mod)]
            for sub, lin in mod.named_modules():
                full = f"{lname}.{sub}" if sub else lname
                if full in targets:
                    by_layer[i][full] = lin
    inside = {name for d in by_layer for name in d}
    for name in list(targets):
        if name not in inside:  # no per-layer inputs to compute its statistics from
            skipped[name] = "outside the decoder layer stack"
            del targets[name]

    hidden, calls = _capture_layer_inputs(model, layers, batches, progress)
    for i, layer in enumerate(_progress(layers, progress, desc=desc, unit="layer")):

        def run(j, layer=layer, inputs=calls[i]):
            args, kwargs = inputs[j]
            return _first(layer(hidden[j], *args, **kwargs))

        if by_layer[i]:
            stats = _collect(run, by_layer[i], stats_kind, len(hidden))
            apply(by_layer[i], stats)
            del stats
        # Feed the next layer what the *modified* layer produces.
        hidden = [run(j) for j in range(len(hidden))]
        calls[i] = None  # this layer's arguments are no longer needed


def prune(model: nn.Module, method: str = "magnitude", pattern: str = "2:4",
          calibration: torch.Tensor | None = None, skip: Callable | None = None,
          blocksize: int = 128, percdamp: float = 0.01, progress: bool = True,
          batch_size: int = 8) -> PruneReport:
    """Prune the model's nn.Linear weights in place to an N:M pattern.

    calibration: inputs for the model, e.g. LongTensor [n, seq] of token ids,
        split into mini-batches of `batch_size` along dim 0 (required for wanda
        and sparsegpt).
    skip: callable (name, linear) -> bool or a reason string; None means
        :func:`default_skip` (lm_head and embedding-tied Linears). Linears whose
        in_features is not a multiple of M are always skipped.
    blocksize, percdamp: SparseGPT's lazy-update block width and Hessian damping
        (fraction of mean diag H).
    """
    n, m = parse_pattern(pattern)
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {METHODS}")
    if method != "magnitude" and calibration is None:
        raise ValueError(f"method {method!r} needs calibration inputs")
    start = time.perf_counter()
    targets, skipped = _select(model, m, skip or default_skip(model))
    kw = {"blocksize": blocksize, "percdamp": percdamp}

    was_training = model.training
    model.eval()
    with torch.no_grad():
        if method == "magnitude":
            for lin in _progress(list(targets.values()), progress, desc=f"magnitude {pattern}"):
                lin.weight.mul_(nm_mask_from_scores(lin.weight.abs(), n, m))
        else:
            batches = _batches(calibration, batch_size)
            layers = find_decoder_layers(model)
            if layers is not None:
                layerwise(model, layers, targets, skipped, batches, method, progress,
                          lambda mods, stats: _apply(mods, stats, n, m, **kw), f"{method} {n}:{m}")
            else:
                # Unknown architecture: statistics of all Linears from one dense forward pass.
                stats = _collect(lambda j: forward_no_cache(model, batches[j]), targets, method, len(batches))
                _apply(targets, stats, n, m, **kw)
    model.train(was_training)

    zeros = sum(int((lin.weight == 0).sum()) for lin in targets.values())
    total = sum(lin.weight.numel() for lin in targets.values())
    return PruneReport(method, f"{n}:{m}", list(targets), skipped,
                       zeros / total if total else 0.0, time.perf_counter() - start)
