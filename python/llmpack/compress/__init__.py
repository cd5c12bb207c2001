"""Weight compression producers (pure PyTorch; no compiled code needed)."""

from .prune import (
    METHODS,
    PruneReport,
    default_skip,
    find_decoder_layers,
    nm_mask_from_scores,
    parse_pattern,
    prune,
    sparsegpt_prune_weight,
)

__all__ = [
    "METHODS",
    "PruneReport",
    "default_skip",
    "find_decoder_layers",
    "nm_mask_from_scores",
    "parse_pattern",
    "prune",
    "sparsegpt_prune_weight",
]
