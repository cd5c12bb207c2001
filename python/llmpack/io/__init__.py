"""Conversions between llmpack's packed formats and other libraries' formats."""
from .compressed_tensors import from_sparse24_bitmask, to_sparse24_bitmask

__all__ = ["from_sparse24_bitmask", "to_sparse24_bitmask"]
