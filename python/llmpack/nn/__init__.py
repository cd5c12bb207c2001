"""Drop-in modules backed by llmpack's kernels."""
from .convert import SparsifyReport, sparsify, swap_linears
from .df11_linear import DF11Embedding, DF11Linear, LosslessReport, compress_lossless
from .quant_linear import QuantLinear
from .sparse_linear import SparseLinear

__all__ = ["SparseLinear", "SparsifyReport", "sparsify", "swap_linears", "DF11Linear", "DF11Embedding",
           "LosslessReport", "compress_lossless", "QuantLinear"]
