"""llmpack: smaller, faster LLM inference kernels for PyTorch.

Importing loads the compiled library, which registers ``torch.ops.llmpack.*``.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _pkg_version

from . import _lib, _ops  # noqa: F401  (load library, register fakes)
from ._lib import active_isa, cpu_isa, cuda_archs, set_isa, supported_isas
from . import df11
from .nn import DF11Embedding, DF11Linear, QuantLinear, SparseLinear, compress_lossless, sparsify
from .io.checkpoint import load, save
from .sparse24 import pad_k, sparse24_compress, sparse24_decompress, sparse24_linear

try:
    __version__ = _pkg_version("llmpack")
except PackageNotFoundError:  # running from a build tree
    __version__ = _lib.library_version()

__all__ = [
    "__version__", "active_isa", "cpu_isa", "cuda_archs", "set_isa", "supported_isas",
    "pad_k", "sparse24_compress", "sparse24_decompress", "sparse24_linear",
    "SparseLinear", "sparsify", "prune", "save", "load",
    "df11", "DF11Linear", "DF11Embedding", "compress_lossless", "PagedKVCache",
    "QuantLinear", "quantize",
]


def __getattr__(name):
    # The pruning producers and the KV cache are imported on first use: they
    # are heavier (transformers) and most users of the kernels need neither.
    if name == "prune":
        from .compress.prune import prune
        return prune
    if name == "quantize":
        from .compress.quantize import quantize
        return quantize
    if name == "PagedKVCache":  # needs transformers, which the kernels alone do not
        from .kv import PagedKVCache
        return PagedKVCache
    raise AttributeError(f"module 'llmpack' has no attribute {name!r}")
