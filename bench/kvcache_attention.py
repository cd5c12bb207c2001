"""Paged decode attention (llmpack) vs torch's scaled_dot_product_attention
on the same K/V stored contiguously, timed in alternating rounds of one run,
on cold KV (copies rotated past the LLC, as the layers of a real model are).

One row per shape: context length, heads / kv-heads x head_dim, batch, dtype;
time of each, GB/s of K+V read, % of the DRAM read roof measured in the same
process, and the speed-up over SDPA.

    python bench/kvcache_attention.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import Cold, dram_roof_gbps, timeit_interleaved  # noqa: E402

import llmpack  # noqa: E402
from llmpack import _ops  # noqa: E402

PAGE = 64  # PagedKVCache's default page size


def make_paged(b, kv, length, d, dtype, g):
    """K/V of b sequences x kv heads in a pool, pages in shuffled order."""
    per = -(-length // PAGE)
    pages = b * kv * per
    k = torch.randn(pages, PAGE, d, generator=g).to(dtype)
    v = torch.randn(pages, PAGE, d, generator=g).to(dtype)
    tables = torch.randperm(pages, generator=g).to(torch.int32).view(b, kv, per)
    lengths = torch.full((b, kv), length, dtype=torch.int32)
    return k, v, tables, lengths


def contiguous(k, v, tables, length):
    """The same K/V as SDPA wants them: [b, kv, length, d]."""
    b, kv, per = tables.shape
    d = k.shape[-1]
    kc = k[tables.long().flatten()].view(b, kv, per * PAGE, d)[:, :, :length].contiguous()
    vc = v[tables.long().flatten()].view(b, kv, per * PAGE, d)[:, :, :length].contiguous()
    return kc, vc


def row(length, heads, kv, d, b, dtype, roof):
    g = torch.Generator().manual_seed(length + heads + b)
    kv_bytes = 2 * b * kv * length * d * torch.finfo(dtype).bits // 8
    q = torch.randn(b, heads, d, generator=g).to(dtype)
    scale = d ** -0.5

    def make_ours():
        return make_paged(b, kv, length, d, dtype, g)

    ours = Cold(make_ours, kv_bytes)
    theirs = Cold.__new__(Cold)
    theirs.copies, theirs.i = [contiguous(*c[:3], length) for c in ours.copies], 0
    q4 = q.unsqueeze(2)

    def run_ours():
        k, v, t, n = ours.next()
        return _ops.paged_decode_attention(q, k, v, t, n, scale)

    def run_sdpa():
        k, v = theirs.next()
        return F.scaled_dot_product_attention(q4, k, v, scale=scale, enable_gqa=heads != kv)

    # Same answer first (the same K/V in both layouts).
    k, v, t, n = ours.copies[0]
    ref = F.scaled_dot_product_attention(q4, *theirs.copies[0], scale=scale, enable_gqa=heads != kv).squeeze(2)
    got = _ops.paged_decode_attention(q, k, v, t, n, scale)[0]
    assert torch.allclose(got.float(), ref.float(), atol=2e-2 if dtype != torch.float32 else 1e-4), "results differ"
    t_ours, t_sdpa = timeit_interleaved([run_ours, run_sdpa], rounds=5, min_time_s=0.5)
    gbs = kv_bytes / t_ours.median_s / 1e9
    print(f"| {length} | {heads}/{kv} x {d} | {b} | {str(dtype).removeprefix('torch.')} | "
          f"{t_ours.median_s * 1e6:.0f} ({t_ours.min_s * 1e6:.0f}..{t_ours.max_s * 1e6:.0f}) | "
          f"{t_sdpa.median_s * 1e6:.0f} | {gbs:.1f} | {100 * gbs / roof:.0f} | "
          f"{t_sdpa.median_s / t_ours.median_s:.2f}x |", flush=True)
    del ours, theirs


def budget_rows(length: int = 16384, fraction: float = 0.2):
    """What eviction buys at decode: attention over an evicting cache holding
    `fraction` of the context vs the whole context, same shapes, interleaved."""
    print(f"\n# attention per token with a {fraction:.0%} budget vs the full {length}-token cache (cold KV)")
    print("| heads/kv x dim | dtype | full us | budget us | speed-up |")
    print("|---|---|---:|---:|---:|")
    kept = int(length * fraction)
    for heads, kv, d in [(32, 32, 128), (32, 8, 128), (9, 3, 64)]:
        for dtype in (torch.bfloat16, torch.float32):
            g = torch.Generator().manual_seed(heads)
            q = torch.randn(1, heads, d, generator=g).to(dtype)
            runs = []
            for n in (length, kept):
                cold = Cold(lambda n=n: make_paged(1, kv, n, d, dtype, g), 2 * kv * n * d * q.element_size())
                runs.append(lambda cold=cold: _ops.paged_decode_attention(q, *cold.next(), d ** -0.5))
            t_full, t_budget = timeit_interleaved(runs, rounds=5, min_time_s=0.5)
            print(f"| {heads}/{kv} x {d} | {str(dtype).removeprefix('torch.')} | {t_full.median_s * 1e6:.0f} | "
                  f"{t_budget.median_s * 1e6:.0f} | {t_full.median_s / t_budget.median_s:.2f}x |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--budget-only", action="store_true", help="only the eviction-budget rows")
    args = ap.parse_args()
    if args.budget_only:
        budget_rows()
        return
    roof = dram_roof_gbps()
    cpu = open("/proc/cpuinfo").read().split("model name")[1].split(":")[1].splitlines()[0].strip()
    print(f"# paged_decode_attention vs SDPA (contiguous KV), cold KV, page {PAGE}, {time.strftime('%Y-%m-%d')}, "
          f"CPU {cpu}, ISA {llmpack.active_isa()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"DRAM read roof {roof:.1f} GB/s")
    print("| context | heads/kv x dim | batch | dtype | llmpack us (min..max) | SDPA us | llmpack GB/s | % roof | vs SDPA |")
    print("|---:|---|---:|---|---:|---:|---:|---:|---:|")
    shapes = [(32, 32, 128), (32, 8, 128), (9, 3, 64)]
    for length in ([1024, 4096] if args.quick else [1024, 4096, 16384]):
        for heads, kv, d in shapes:
            for b in ((1,) if length == 16384 else (1, 8)):
                for dtype in (torch.bfloat16, torch.float32):
                    if args.quick and dtype == torch.float32:
                        continue
                    row(length, heads, kv, d, b, dtype, roof)
    if not args.quick:
        budget_rows()


if __name__ == "__main__":
    main()
