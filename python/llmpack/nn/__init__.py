"""Drop-in modules backed by llmpack's kernels."""
from .convert import SparsifyReport, sparsify, swap_linears
from .sparse_linear import SparseLinear

__all__ = ["SparseLinear", "SparsifyReport", "sparsify", "swap_linears"]
