"""BTC (arbitrary-bit quantized matmul): btc_linear at W{2,3,4,8} x A{4,8,16}
next to torch's CPU baselines, timed in interleaved rounds of one run.

Baselines, per shape and M, in the same rounds:
  * dense bf16 F.linear, and dense fp32 (the faster dense dtype on CPUs without native bf16);
  * torch's int4 weight-only op (_weight_int4pack_mm_for_cpu, bf16 x, group 32);
  * torch's int8 weight-only op (_weight_int8pack_mm, bf16 x, per-channel);
  * torch._int_mm (W8A8 int8 x int8 -> int32, the integer core alone);
  * the 2:4 kernel (sparse24_linear, bf16).
Decode shapes (M <= 16) rotate every operand through more bytes than the LLC
(bench/_harness.py ``Cold``); "% roof" is the packed weight bytes read per
second over the DRAM read bandwidth measured on this machine.

    python bench/btc.py [--quick] [--m 1,4,16,64] [--shapes 4096x4096,...] [--configs W4A16,W4A8,...]
                        [--layout fields|planes|both]
    LLMPACK_BTC_DOT=bitserial|madd16 python bench/btc.py ...   (force a core method: crossover table)

"W4A8~core" runs without the row sums QuantLinear caches (btc_scaled_sums), so
the core forms them itself: next to "W4A8" it times what the cache saves.
A config may name the ISA level it runs at, "W4A8@avx512" next to "W4A8": the
two alternate in the same rounds (every BTC call sets its level first), which
is how a new level's kernels are measured against the one below.

The weights are timed in the fields layout by default, the one QuantLinear
holds on the CPU (btc_to_fields); ``--layout planes`` times the bit planes
as stored, ``both`` puts the two side by side (planes rows end in "/p").
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import Cold, dram_roof_gbps, timeit_interleaved  # noqa: E402

import llmpack  # noqa: E402
from llmpack import _ops  # noqa: E402

SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (576, 576), (576, 1536), (1536, 576)]
CONFIGS = ["W4A16", "W4A8", "W2A8", "W3A8", "W8A8", "W4A4", "W2A16", "W8A16"]
GROUP = 32
BASELINES = ("dense", "dense32", "int4", "int8", "int_mm", "2:4")


def packed_btc(n, k, wbits, dtype=torch.bfloat16):
    codes = torch.randint(0, 2**wbits, (n, k), dtype=torch.uint8)
    planes, sums = _ops.btc_pack(codes, wbits, GROUP)
    g = sums.shape[1]
    scales = (torch.rand(n, g) * 0.01).half()
    offsets = (torch.randn(n, g) * 0.01).half()
    return planes, scales, offsets, sums, _ops.btc_scaled_sums(scales, sums)


def bits_of(config):
    """"W4A8", "W4A8/p", "W4A8~core" or "W4A8@avx512" -> (4, 8)."""
    c = config.split("@")[0].split("/")[0].split("~")[0]
    return int(c[1:c.index("A")]), int(c[c.index("A") + 1:])


def isa_of(config, default):
    """The ISA level a config runs at: its "@level" suffix, else the default."""
    return config.split("@")[1] if "@" in config else default


def at_isa(level, default, fn, *args):
    """fn(*args) at ISA level ``level``, the default level restored after it
    (so the baselines timed next run at the default)."""
    llmpack.set_isa(level)
    try:
        return fn(*args)
    finally:
        llmpack.set_isa(default)


def nbytes(ts):
    return sum(t.numel() * t.element_size() for t in ts if isinstance(t, torch.Tensor))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--m", default="1,4,16,64")
    ap.add_argument("--shapes", default=None)
    ap.add_argument("--configs", default=None)
    ap.add_argument("--layout", default="fields", choices=["fields", "planes", "both"])
    args = ap.parse_args()
    ms = [1] if args.quick else [int(v) for v in args.m.split(",")]
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")] if args.shapes else \
        (SHAPES[3:4] if args.quick else SHAPES)
    configs = args.configs.split(",") if args.configs else CONFIGS
    if args.layout == "planes":
        configs = [c + "/p" for c in configs]
    elif args.layout == "both":
        configs = [v for c in configs for v in (c, c + "/p")]
    default_isa = llmpack.active_isa()
    roof = dram_roof_gbps()
    print(f"btc_linear vs torch, ISA {llmpack.active_isa()}, threads {torch.get_num_threads()}, "
          f"method {os.environ.get('LLMPACK_BTC_DOT', 'auto')}, layout {args.layout}, DRAM read roof {roof:.1f} GB/s, group {GROUP}")
    print(f"{'shape':>22} {'data':>4} {'op':>10} {'us':>9} {'min':>8} {'max':>8} {'GB/s':>6} {'%roof':>5}  "
          "speed-up vs: dense-bf16 dense-fp32 int4(W4) int8(W8) _int_mm 2:4-bf16")
    for k, n in shapes:
        w = torch.randn(n, k, dtype=torch.bfloat16)
        wq4 = torch.randint(0, 16, (n, k), dtype=torch.int32)
        int4 = torch.ops.aten._convert_weight_to_int4pack_for_cpu(wq4, 2)
        sz4 = torch.rand(k // GROUP, n, 2, dtype=torch.bfloat16)
        w8 = torch.randint(-128, 127, (n, k), dtype=torch.int8)
        s8 = torch.rand(n, dtype=torch.bfloat16)
        W24, v24, m24 = None, None, None
        w24 = w.view(n, k // 4, 4)
        keep = w24.abs().float().topk(2, -1).indices
        W24 = torch.where(torch.zeros_like(w24, dtype=torch.bool).scatter_(-1, keep, True), w24,
                          torch.zeros((), dtype=torch.bfloat16)).view(n, k)
        v24, m24 = llmpack.sparse24_compress(W24)
        base = {"dense": (w,), "dense32": (w.float(),), "int4": (int4, sz4), "int8": (w8, s8), "int_mm": (w8.t().contiguous().t(),),
                "2:4": (v24, m24)}
        ours = {}
        for c in configs:
            planes, *rest = packed_btc(n, k, bits_of(c)[0])
            ours[c] = (planes if "/p" in c.split("@")[0] else _ops.btc_to_fields(planes, bits_of(c)[0]), *rest)
        for m in ms:
            cold = m <= 16
            mk = (lambda a: Cold(lambda a=a: tuple(t.clone() for t in a), nbytes(a))) if cold else Cold.hot
            ops = {name: mk(a) for name, a in {**base, **ours}.items()}
            x = torch.randn(m, k, dtype=torch.bfloat16)
            x32 = x.float()
            x8 = torch.randint(-128, 127, (max(m, 17), k), dtype=torch.int8)   # _int_mm wants M > 16
            fns = {
                "dense": lambda: F.linear(x, *ops["dense"].next()),
                "dense32": lambda: F.linear(x32, *ops["dense32"].next()),
                "int4": lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(x, ops["int4"].next()[0], GROUP,
                                                                           ops["int4"].copies[ops["int4"].i][1]),
                "int8": lambda: torch.ops.aten._weight_int8pack_mm(x, *ops["int8"].next()),
                "int_mm": lambda: torch._int_mm(x8, ops["int_mm"].next()[0].t()),
                "2:4": lambda: llmpack.sparse24_linear(x, *ops["2:4"].next()),
            }
            for c in configs:
                wb, ab = bits_of(c)
                lvl = isa_of(c, default_isa)
                # With the row sums QuantLinear caches (btc_scaled_sums), as a user's model runs.
                fns[c] = lambda c=c, wb=wb, ab=ab, lvl=lvl: at_isa(
                    lvl, default_isa, _ops.btc_linear, x, ops[c].next()[0], ops[c].copies[ops[c].i][1], None,
                    ops[c].copies[ops[c].i][2], ops[c].copies[ops[c].i][3], wb, ab, GROUP, None, False,
                    ops[c].copies[ops[c].i][4] if ab != 16 and "~core" not in c else None)
            res = dict(zip(fns, timeit_interleaved(list(fns.values()), rounds=5)))
            for c in configs:
                t = res[c]
                streamed = nbytes(ours[c][:3])          # planes + scales + offsets
                if bits_of(c)[1] != 16 and "~core" not in c:  # the integer cores read the row sums, not the code sums
                    streamed += nbytes(ours[c][4:])
                gbs = streamed / t.median_s / 1e9
                ups = " ".join(f"{res[b].median_s / t.median_s:9.2f}x" for b in BASELINES)
                print(f"{f'M={m} K={k} N={n}':>22} {'cold' if cold else 'hot':>4} {c:>10} {t.median_s * 1e6:9.1f} "
                      f"{t.min_s * 1e6:8.1f} {t.max_s * 1e6:8.1f} {gbs:6.1f} {100 * gbs / roof:5.0f}  {ups}",
                      flush=True)
            for b in BASELINES:
                t = res[b]
                print(f"{f'M={m} K={k} N={n}':>22} {'cold' if cold else 'hot':>4} {b:>10} {t.median_s * 1e6:9.1f} "
                      f"{t.min_s * 1e6:8.1f} {t.max_s * 1e6:8.1f}", flush=True)
            del ops


if __name__ == "__main__":
    main()
