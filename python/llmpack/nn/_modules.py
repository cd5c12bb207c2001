"""Module-tree helpers shared by every swap (sparsify, quantize, compress_lossless, the loaders)."""
from __future__ import annotations

from torch import nn


def set_module(root: nn.Module, name: str, new: nn.Module):
    """Replace the submodule ``name`` (dotted path) of ``root`` with ``new``."""
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)
