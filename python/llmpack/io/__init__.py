"""Conversions between llmpack's packed formats and other libraries' formats."""
from .compressed_tensors import from_sparse24_bitmask, to_sparse24_bitmask
from .torch_semi_structured import from_torch_semi_structured, to_torch_semi_structured

__all__ = ["from_sparse24_bitmask", "to_sparse24_bitmask", "from_torch_semi_structured",
           "to_torch_semi_structured"]
