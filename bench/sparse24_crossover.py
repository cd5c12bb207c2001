"""Where should sparse24_linear (CPU) switch from streaming the packed weight
to "unpack W once + torch's dense GEMM"? Times both paths per (M, dtype) on
the same shapes, in child processes (the switch, LLMPACK_SPARSE24_DENSE_M, is
read once per process), and prints the measured crossover per dtype.

    python bench/sparse24_crossover.py [--k 4096 --n 4096]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, torch, llmpack
sys.path.insert(0, sys.argv[1])
from _harness import timeit
k, n, dtype = int(sys.argv[2]), int(sys.argv[3]), getattr(torch, sys.argv[4])
w = torch.randn(n, k, dtype=dtype).view(n, k // 4, 4)
keep = w.abs().float().topk(2, -1).indices
W = torch.where(torch.zeros_like(w, dtype=torch.bool).scatter_(-1, keep, True), w, torch.zeros((), dtype=dtype)).view(n, k)
v, meta = llmpack.sparse24_compress(W)
out = {}
for m in [int(s) for s in sys.argv[5].split(",")]:
    x = torch.randn(m, k, dtype=dtype)
    out[m] = timeit(lambda: llmpack.sparse24_linear(x, v, meta)).median_s
print(json.dumps(out))
"""


def run(path_m: int, k: int, n: int, dtype: str, ms: list[int]) -> dict:
    env = {**os.environ, "LLMPACK_SPARSE24_DENSE_M": str(path_m)}
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", CHILD, here, str(k), str(n), dtype, ",".join(map(str, ms))],
                         env=env, capture_output=True, text=True, check=True).stdout
    return {int(a): b for a, b in json.loads(out.strip().splitlines()[-1]).items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--m", default="1,2,4,8,16,32,64")
    args = ap.parse_args()
    ms = [int(v) for v in args.m.split(",")]
    print(f"# K={args.k} N={args.n}: median us, packed-stream kernel vs unpack+dense GEMM")
    print(f"{'dtype':>9} {'M':>4} {'stream_us':>10} {'dense_us':>10} {'faster':>8}")
    for dtype in ("bfloat16", "float32", "float16"):
        stream = run(1 << 30, args.k, args.n, dtype, ms)
        dense = run(0, args.k, args.n, dtype, ms)
        cross = None
        for m in ms:
            faster = "stream" if stream[m] <= dense[m] else "dense"
            if faster == "dense" and cross is None:
                cross = m
            print(f"{dtype:>9} {m:>4} {stream[m] * 1e6:>10.1f} {dense[m] * 1e6:>10.1f} {faster:>8}")
        print(f"# {dtype}: dense path first faster at M={cross}")


if __name__ == "__main__":
    main()
