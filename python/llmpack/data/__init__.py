"""Calibration/evaluation text from locally installed packages (no downloads)."""

from .corpus import (
    CorpusNotInstalled,
    austen_available,
    calibration_and_eval_text,
    load_austen,
    load_python_docs,
    tokenize_chunks,
)

__all__ = [
    "CorpusNotInstalled",
    "austen_available",
    "calibration_and_eval_text",
    "load_austen",
    "load_python_docs",
    "tokenize_chunks",
]
