"""Eviction policies of the paged KV cache, as per-row parameters.

Every policy is the same rule with different numbers, so one vectorised victim
choice serves them all (and one batch can hold rows with different policies,
which is how bench/kv_perplexity.py compares them in a single pass):

* a token is *protected* when it is a sink (one of the first ``sink_tokens``
  real tokens of its sequence) or recent (among the last ``recent`` tokens,
  the incoming one included);
* when a (sequence, kv-head) holds ``budget`` tokens and one more arrives, the
  unprotected token with the lowest priority leaves: its accumulated attention
  for ``h2o`` / ``sink+h2o``, its age for ``window`` / ``sink`` (the oldest).

``budget >= sink_tokens + recent`` guarantees an unprotected token exists, so
a sink or a recent token is never evicted.
"""
from __future__ import annotations

from dataclasses import dataclass

POLICIES = ("full", "window", "sink", "h2o", "sink+h2o")


@dataclass(frozen=True)
class Policy:
    name: str
    budget: int | None      # kept tokens per (sequence, kv-head); None = unbounded
    sink_tokens: int        # 0 unless the policy keeps sinks
    recent: int             # the protected recent window, incoming token included
    heavy_hitters: bool     # evict by accumulated attention instead of age
    reposition: bool        # keys re-rotated to their positions inside the cache

    @property
    def evicts(self) -> bool:
        return self.budget is not None


def make_policy(name: str = "full", budget: int | None = None, sink_tokens: int = 4,
                recent: int | None = None, reposition: bool | None = None) -> Policy:
    """Check and complete one policy's parameters (defaults follow the papers:
    StreamingLLM keeps 4 sinks and re-positions, H2O splits its budget evenly
    between heavy hitters and the recent window and keeps absolute positions)."""
    if name not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {name!r}")
    if name == "full":
        if budget is not None:
            raise ValueError("policy 'full' keeps every token: pass budget=None (or choose 'window', 'sink', ...)")
        return Policy("full", None, 0, 0, False, False)
    if budget is None or int(budget) < 1:
        raise ValueError(f"policy {name!r} needs a token budget >= 1, got {budget!r}")
    budget = int(budget)
    sinks = int(sink_tokens) if name.startswith("sink") else 0
    if sinks < 0:
        raise ValueError(f"sink_tokens must be >= 0, got {sink_tokens}")
    heavy = name.endswith("h2o")
    if recent is None:
        recent = budget - sinks if not heavy else max(1, (budget - sinks) // 2)
    recent = int(recent)
    if recent < 1:
        raise ValueError(f"recent must be >= 1 (the incoming token is always kept), got {recent}")
    if sinks + recent > budget:
        raise ValueError(f"policy {name!r}: sink_tokens ({sinks}) + recent ({recent}) exceed the budget ({budget}); "
                         "a protected token would have to be evicted")
    if reposition is None:
        reposition = name == "sink"
    return Policy(name, budget, sinks, recent, heavy, bool(reposition))
