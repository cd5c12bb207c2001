"""Language-model quality and speed measurements."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from .._progress import progress as _progress
from ..models import forward_no_cache


def _logits(out):
    return out.logits if hasattr(out, "logits") else out


@torch.no_grad()
def perplexity(model, token_chunks: torch.Tensor, batch_size: int = 4, progress: bool = False) -> float:
    """exp(mean next-token NLL) over every predicted token of `token_chunks`
    (LongTensor [n, seq]); each chunk is scored independently from its start."""
    if token_chunks.ndim != 2 or token_chunks.shape[1] < 2:
        raise ValueError("token_chunks must be a LongTensor [n, seq] with seq >= 2")
    nll, count = 0.0, 0
    for batch in _progress(token_chunks.split(batch_size), progress, desc="perplexity", unit="batch", leave=False):
        logits = _logits(forward_no_cache(model, batch))[:, :-1]
        targets = batch[:, 1:]
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                               reduction="sum").item()
        count += targets.numel()
    return math.exp(nll / count)


@torch.no_grad()
def greedy_tokens_per_s(model, tokenizer, prompt: str, new_tokens: int = 64) -> float:
    """Decode `new_tokens` tokens greedily after `prompt`; return tokens per second
    (prompt prefill included). HF models decode with their KV cache after one
    untimed warm-up call; other modules map ids -> logits and recompute the prefix."""
    ids = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)
    if hasattr(model, "generate"):
        kw = dict(do_sample=False, attention_mask=torch.ones_like(ids),
                  pad_token_id=getattr(tokenizer, "eos_token_id", None))
        model.generate(ids, max_new_tokens=1, **kw)
        start = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kw)
    else:
        start = time.perf_counter()
        out = ids
        for _ in range(new_tokens):
            nxt = _logits(model(out))[:, -1].argmax(-1, keepdim=True)
            out = torch.cat([out, nxt], dim=1)
    return (out.shape[1] - ids.shape[1]) / (time.perf_counter() - start)
