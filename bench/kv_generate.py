"""End to end: SmolLM2-135M ``generate`` with each PagedKVCache policy over
a long generation, next to transformers' DynamicCache (sdpa) in the same run.

Per policy: decode tokens/s (prefill excluded), KV bytes held at the end,
pool bytes allocated, the tokens kept per (sequence, kv-head), and the
process's peak resident memory during the generation (sampled every 5 ms),
also as growth over the resident memory just before it. Each policy runs in
its own process, so no policy inherits another's freed-but-retained heap.
The prompt is a passage of Austen; generation is forced to the full length.

    python bench/kv_generate.py [--new 4096] [--budget 256] [--prompt 256] [--rounds 3] [--policies sink,window]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llmpack  # noqa: E402,F401
from llmpack._progress import step  # noqa: E402
from llmpack.data import corpus  # noqa: E402
from llmpack.kv import PagedKVCache, attach  # noqa: E402
from llmpack.models import load_smollm2  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed_generate(model, ids, new: int, cache):
    """(decode seconds, total seconds, PeakRSS of the full run): prefill timed
    apart with one token."""
    kw = dict(do_sample=False, min_new_tokens=new, max_new_tokens=new, eos_token_id=None, pad_token_id=0)
    start = time.perf_counter()
    model.generate(ids, attention_mask=torch.ones_like(ids), cache=cache, **{**kw, "min_new_tokens": 1,
                                                                             "max_new_tokens": 1})
    prefill = time.perf_counter() - start
    cache.reset() if cache is not None else None
    with PeakRSS() as mem:
        start = time.perf_counter()
        model.generate(ids, attention_mask=torch.ones_like(ids), cache=cache, **kw)
        total = time.perf_counter() - start
    return total - prefill, total, mem


class PeakRSS:
    """Peak resident set size of this process while the block runs (MiB)."""

    def __init__(self, period_s: float = 0.005):
        self.period_s, self.peak, self.base = period_s, 0, 0

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.wait(self.period_s):
            self.peak = max(self.peak, self.rss())

    def __enter__(self):
        self.base = self.peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def run_one(args, name: str, kw) -> dict:
    """One configuration in this process (the child's side)."""
    torch.set_num_threads(args.threads)
    with step("loading SmolLM2-135M (fp32)"):
        model, tok = load_smollm2(torch.float32)
    text = corpus.load_austen()["Persuasion"]
    ids = torch.tensor([corpus._encode(tok, text)[: args.prompt]])
    with torch.inference_mode():
        if kw is None:
            model.set_attn_implementation("sdpa")
            cache = None
        else:
            attach(model)
            cache = PagedKVCache(name, **kw)
        with step(f"{name}: {args.new} new tokens"):
            decode_s, total_s, mem = timed_generate(model, ids, args.new, cache)
    row = dict(policy=name, budget=kw.get("budget") if kw else None,
               decode_tok_s=round((args.new - 1) / decode_s, 2), total_s=round(total_s, 1),
               peak_rss_mib=round(mem.peak / 2**20, 1), rss_growth_mib=round((mem.peak - mem.base) / 2**20, 1))
    if cache is not None:
        row.update(kv_mib=round(cache.kv_bytes() / 2**20, 2),
                   pool_mib=round(sum(2 * lay.k_pages.numel() * lay.k_pages.element_size()
                                      for lay in cache.layers) / 2**20, 2),
                   kept_per_head=int(cache.num_kept_tokens(0).max()))
    else:
        ctx = args.prompt + args.new - 1
        cfg = model.config
        row.update(kv_mib=round(2 * cfg.num_hidden_layers * cfg.num_key_value_heads * ctx
                                * (cfg.hidden_size // cfg.num_attention_heads) * 4 / 2**20, 2))
    return row


def summarize(runs: list[dict], baseline: list[dict] | None) -> dict:
    """One row per cache over the rounds: the first run's fields, decode
    tok/s as the median with min and max, and the speed-up over DynamicCache
    as the median (min, max) of the per-round ratios (each ratio from two
    runs of the same round, minutes apart rather than a whole sweep)."""
    speeds = sorted(r["decode_tok_s"] for r in runs)
    row = dict(runs[0], decode_tok_s=speeds[len(speeds) // 2], decode_tok_s_min=speeds[0],
               decode_tok_s_max=speeds[-1], peak_rss_mib=max(r["peak_rss_mib"] for r in runs))
    if baseline:
        ratios = sorted(r["decode_tok_s"] / b["decode_tok_s"] for r, b in zip(runs, baseline))
        row.update(vs_dynamic=round(ratios[len(ratios) // 2], 3), vs_dynamic_min=round(ratios[0], 3),
                   vs_dynamic_max=round(ratios[-1], 3))
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=4096)
    ap.add_argument("--budget", type=int, default=256)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="interleaved repeats (median and min-max per cache)")
    ap.add_argument("--policies", help="comma-separated subset of the caches, e.g. 'dynamic (sdpa),sink'")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "kv_generate.json"))
    ap.add_argument("--only", help=argparse.SUPPRESS)  # child: run this one configuration, print its row
    args = ap.parse_args()
    configs = [("dynamic (sdpa)", None), ("full", {}), ("window", dict(budget=args.budget)),
               ("sink", dict(budget=args.budget)), ("h2o", dict(budget=args.budget)),
               ("sink+h2o", dict(budget=args.budget))]
    if args.only:
        print("ROW " + json.dumps(run_one(args, args.only, dict(configs)[args.only])), flush=True)
        return
    names = args.policies.split(",") if args.policies else [n for n, _ in configs]
    unknown = sorted(set(names) - set(dict(configs)))
    if unknown:
        ap.error(f"unknown --policies {unknown}; choose from {[n for n, _ in configs]}")
    runs = {n: [] for n in names}
    for r in range(args.rounds):               # interleaved: each round runs every cache once, in turn
        for name in names:
            cmd = [sys.executable, os.path.abspath(__file__), "--only", name, "--new", str(args.new), "--budget",
                   str(args.budget), "--prompt", str(args.prompt), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
            row = json.loads(next(line[4:] for line in proc.stdout.splitlines() if line.startswith("ROW ")))
            print(f"round {r + 1}/{args.rounds}: " + json.dumps(row), flush=True)
            runs[name].append(row)
    rows = [summarize(runs[n], runs.get("dynamic (sdpa)")) for n in names]
    for row in rows:
        print(json.dumps(row), flush=True)
    result = dict(model="SmolLM2-135M-Instruct (fp32)", prompt_tokens=args.prompt, new_tokens=args.new,
                  threads=args.threads, rounds=args.rounds, date=time.strftime("%Y-%m-%d"), cpu=llmpack.cpu_isa(),
                  rows=rows)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
