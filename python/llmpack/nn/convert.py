"""sparsify: prune a model to 2:4 and swap its Linears for SparseLinear in one call."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .sparse_linear import SparseLinear
from ._modules import set_module as _set_module


@dataclass
class SparsifyReport:
    method: str
    swapped: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why
    dense_bytes: int = 0    # weight bytes of the swapped Linears before
    packed_bytes: int = 0   # ... and after (values + meta)

    def __str__(self) -> str:
        ratio = self.dense_bytes / self.packed_bytes if self.packed_bytes else 0.0
        lines = [f"sparsify ({self.method}): swapped {len(self.swapped)} Linears for SparseLinear, "
                 f"weights {self.dense_bytes / 2**20:.1f} MiB -> {self.packed_bytes / 2**20:.1f} MiB "
                 f"({ratio:.2f}x smaller); skipped {len(self.skipped)}"]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def swap_linears(model: nn.Module, names: list[str], report: SparsifyReport) -> SparsifyReport:
    """Replace the named (already 2:4) nn.Linear modules with SparseLinear."""
    for name in names:
        lin = model.get_submodule(name)
        if not isinstance(lin, nn.Linear):
            report.skipped[name] = f"not an nn.Linear ({type(lin).__name__})"
            continue
        try:
            sparse = SparseLinear.from_linear(lin)
        except RuntimeError as e:  # not 2:4 (e.g. pruned to another pattern)
            report.skipped[name] = f"weight is not 2:4: {e}"
            continue
        report.dense_bytes += lin.weight.numel() * lin.weight.element_size()
        report.packed_bytes += sparse.values.numel() * sparse.values.element_size() + sparse.meta.numel()
        _set_module(model, name, sparse)
        report.swapped.append(name)
    return report


def sparsify(model: nn.Module, method: str = "magnitude", calibration: torch.Tensor | None = None,
             skip=None, progress: bool = True, **prune_kwargs) -> SparsifyReport:
    """Prune every eligible nn.Linear of ``model`` to 2:4 with ``method``
    (magnitude | wanda | sparsegpt, see :func:`llmpack.prune`) and swap it for
    a :class:`SparseLinear`, in place. Linears that cannot be 2:4 (the output
    head, embedding-tied weights, ``skip`` matches) stay dense and are listed
    in the report with the reason."""
    from ..compress.prune import prune

    pr = prune(model, method=method, pattern="2:4", calibration=calibration, skip=skip,
               progress=progress, **prune_kwargs)
    report = SparsifyReport(method=method, skipped=dict(pr.skipped))
    return swap_linears(model, pr.pruned, report)
