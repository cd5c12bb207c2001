"""2:4 sparse linear vs dense F.linear, same shapes, same run.

One row per (M, K, N, dtype): time of llmpack.sparse24_linear (median, min,
max), GB/s over the bytes it must move (packed values + meta + x + y),
GFLOP/s counting the useful MACs (2*M*N*K/2: half the weights are zero),
% of the machine's roofline for that traffic/work, and speed-up over dense
F.linear in the same dtype and over the fastest dense option (fp32 or bf16).

Decode shapes (M <= 16) time cold weights by default: every operand is
rotated through more bytes than the last-level cache (bench/_harness.py,
``Cold``), as a model's weights are at decode, and % roof is then against the
DRAM read bandwidth. Larger M, and every row with --data hot, reuse one copy
(hot, labelled).

    python bench/sparse24.py [--quick] [--m 1,4,16] [--dtypes bfloat16,float32] [--data auto|cold|hot]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import Cold, Table, timeit_interleaved  # noqa: E402

import llmpack  # noqa: E402

# (K, N): Llama-7B-like projections, then SmolLM2-135M's (hidden 576, MLP 1536, KV 192).
SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (576, 576), (576, 192), (576, 1536), (1536, 576)]


def make_packed(n, k, dtype):
    w = torch.randn(n, k, dtype=dtype).view(n, k // 4, 4)
    keep = w.abs().float().topk(2, -1).indices
    W = torch.where(torch.zeros_like(w, dtype=torch.bool).scatter_(-1, keep, True), w,
                    torch.zeros((), dtype=dtype)).view(n, k)
    return W, *llmpack.sparse24_compress(W)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="two shapes, M=1 only (smoke test)")
    ap.add_argument("--m", default="1,4,16,64,256")
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--data", default="auto", choices=["auto", "cold", "hot"],
                    help="auto: cold weights for M <= 16, hot above")
    args = ap.parse_args()
    ms = [1] if args.quick else [int(v) for v in args.m.split(",")]
    shapes = SHAPES[3:5] if args.quick else SHAPES
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    tab = Table(f"sparse24_linear vs dense F.linear, ISA {llmpack.active_isa()}, "
                f"threads {torch.get_num_threads()}")
    tab.extra_cols(("vs_best_dense",), (13,))
    for k, n in shapes:
        for dtype in dtypes:
            W, v, meta = make_packed(n, k, dtype)
            es = W.element_size()
            weights = {"sparse": (v, meta), "same": (W,)}
            if dtype != torch.float32:
                weights["f32"] = (W.float(),)
            if dtype != torch.bfloat16:
                weights["b16"] = (W.bfloat16(),)
            sets = {}
            for m in ms:
                cold = args.data == "cold" or (args.data == "auto" and m <= 16)
                if cold and not sets:
                    # One rotation of copies per operand set, built once per shape.
                    sets = {name: Cold(lambda a=args_: tuple(t.clone() for t in a),
                                       sum(t.numel() * t.element_size() for t in args_))
                            for name, args_ in weights.items()}
                ops = sets if cold else {name: Cold.hot(a) for name, a in weights.items()}
                x = torch.randn(m, k, dtype=dtype)
                xs = {"f32": x.float(), "b16": x.bfloat16()}
                fns = {"sparse": lambda: llmpack.sparse24_linear(x, *ops["sparse"].next()),
                       "same": lambda: F.linear(x, *ops["same"].next())}
                for name in ("f32", "b16"):
                    if name in ops:
                        fns[name] = lambda name=name: F.linear(xs[name], *ops[name].next())
                res = dict(zip(fns, timeit_interleaved(list(fns.values()))))
                t, t_same = res["sparse"], res["same"]
                best = min(res.get("f32", t_same), res.get("b16", t_same), key=lambda r: r.median_s)
                bytes_moved = v.numel() * es + meta.numel() + (m * k + m * n) * es
                flops = 2 * m * n * k / 2
                dt = str(dtype).replace("torch.", "")
                tab.row(f"M={m} K={k} N={n}", dt, t, bytes_moved, flops, f"F.linear {dt}", t_same,
                        roof_dtype=dt, extra=(f"{best.median_s / t.median_s:.2f}x",), cold=cold)
            del sets


if __name__ == "__main__":
    main()
