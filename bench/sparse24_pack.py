"""2:4 pack/unpack throughput vs the best plain-PyTorch way to do the same.

Baseline: llmpack.reference.sparse24 (vectorised torch ops), same inputs,
same run. Bytes = bytes read + written by the op.

    python bench/sparse24_pack.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import Table, timeit  # noqa: E402

import llmpack  # noqa: E402
from llmpack.reference import sparse24 as ref  # noqa: E402


def make_24(n, k, dtype):
    w = torch.randn(n, k, dtype=dtype)
    g = w.view(n, k // 4, 4)
    keep = g.abs().topk(2, -1).indices
    return torch.where(torch.zeros_like(g, dtype=torch.bool).scatter_(-1, keep, True), g, 0).view(n, k)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one small shape (smoke test)")
    args = ap.parse_args()
    shapes = [(576, 576)] if args.quick else [(576, 1536), (4096, 4096), (11008, 4096)]
    tab = Table(f"sparse24 pack/unpack, ISA {llmpack.active_isa()}")
    for n, k in shapes:
        for dtype in (torch.bfloat16, torch.float32):
            w = make_24(n, k, dtype)
            es = w.element_size()
            packed = n * k // 2 * es + n * ((k // 4 + 1) // 2)
            dense = n * k * es
            v, m = llmpack.sparse24_compress(w)
            dt = str(dtype).replace("torch.", "")
            t = timeit(lambda: llmpack.sparse24_compress(w))
            tb = timeit(lambda: ref.sparse24_compress(w), repeats=3)
            tab.row(f"compress {n}x{k}", dt, t, dense + packed, 0, "reference(torch)", tb)
            t = timeit(lambda: llmpack.sparse24_decompress(v, m))
            tb = timeit(lambda: ref.sparse24_decompress(v, m), repeats=3)
            tab.row(f"decompress {n}x{k}", dt, t, dense + packed, 0, "reference(torch)", tb)


if __name__ == "__main__":
    main()
