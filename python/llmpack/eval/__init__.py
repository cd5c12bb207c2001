"""Model quality and speed measurements (pure PyTorch)."""

from .perplexity import greedy_tokens_per_s, perplexity

__all__ = ["greedy_tokens_per_s", "perplexity"]
