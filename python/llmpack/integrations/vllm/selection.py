"""Which llmpack format serves a vLLM layer (no vLLM import: unit-testable).

vLLM names layers by its own modules: q/k/v become one ``qkv_proj`` and
gate/up one ``gate_up_proj`` (``packed_modules_mapping`` lists the parts).
A merged layer is served by a format only when every part has it; the loader
stacks the parts row-wise, and each part's 2:4 metadata is row-wise too, so
the stacked metadata stays aligned with the stacked values.
"""
from __future__ import annotations

import re

CT_SPARSE24 = "sparse-24-bitmask"


def is_ct_sparse24(qc: dict) -> bool:
    """A compressed-tensors config whose only compression is 2:4 bitmask."""
    sc = qc.get("sparsity_config") or {}
    return (qc.get("quant_method") == "compressed-tensors" and isinstance(sc, dict)
            and sc.get("format") == CT_SPARSE24 and not qc.get("config_groups"))


def parts_of(prefix: str, packed: dict[str, list[str]]) -> list[str]:
    """The checkpoint modules that vLLM layer ``prefix`` stacks (itself, unless merged)."""
    head, _, last = prefix.rpartition(".")
    if last in packed:
        return [f"{head}.{p}" if head else p for p in packed[last]]
    return [prefix]


def _ct_matches(name: str, patterns: list[str], cls_name: str = "Linear") -> bool:
    for pat in patterns or []:
        if pat.startswith("re:"):
            if re.match(pat[3:], name):
                return True
        elif pat == cls_name or pat == name or name.endswith("." + pat):
            return True
    return False


def format_of(qc: dict, prefix: str, packed: dict[str, list[str]]) -> str | None:
    """The llmpack format ("sparse24", "ct-sparse24", ...) serving vLLM layer
    ``prefix``, or None for vLLM's own unquantized path. Raises ValueError
    when the parts of a merged layer disagree."""
    parts = parts_of(prefix, packed)
    if qc.get("quant_method") == "llmpack":
        modules = qc.get("modules") or {}
        fmts = {(modules.get(p) or {}).get("format") for p in parts}
    elif is_ct_sparse24(qc):
        sc = qc["sparsity_config"]
        fmts = {"ct-sparse24" if _ct_matches(p, sc.get("targets")) and not _ct_matches(p, sc.get("ignore"))
                else None for p in parts}
    else:
        return None
    if len(fmts) != 1:
        raise ValueError(f"llmpack vLLM plugin: the parts {parts} of merged layer {prefix!r} have different "
                         f"formats {sorted(map(str, fmts))}; vLLM stacks them into one weight, so they must agree")
    return fmts.pop()


def is_tied(qc: dict, prefix: str) -> bool:
    """Whether ``prefix``'s tensors are aliases of another module's (a tied
    output head): vLLM ties such a head to the embedding and skips its
    tensors, so the head must not expect any."""
    aliases = qc.get("aliases") or {}
    return any(k.startswith(prefix + ".") for k in aliases)
