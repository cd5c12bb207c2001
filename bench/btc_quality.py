"""BTC quality and speed on SmolLM2-135M: perplexity on held-out text for
W{8,4,3,2} x A{16,8,6,4} (RTN and GPTQ, groups 128 and 32, W4 straight from
the shipped GGUF's Q4_1 blocks, and low-bit activations with and without
SmoothQuant smoothing), then greedy tokens/s of QuantLinear next to
dense and 2:4, same run.

SmolLM2's weights were already 4-bit (Q4_1) in the shipped file: "dense" is
that file dequantized to fp32, W4 from the GGUF is lossless against it, and
lower bit widths requantize the dequantized weights.

    python bench/btc_quality.py [--eval-chunks 16] [--seq-len 512] [--configs ...] [--json PATH] [--speed]
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

import llmpack
from llmpack.eval import perplexity
from llmpack.eval.perplexity import greedy_tokens_per_s
from llmpack.io.gguf import quantize_from_gguf
from llmpack.models import smollm2_gguf_path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import smollm2_and_text  # noqa: E402

# name: (method, wbits, abits, group_size[, smooth alpha[, more llmpack.quantize arguments]]); method
# "gguf" = the file's own blocks; "sq<alpha>" rows smooth the activations first (SmoothQuant,
# llmpack.compress.smooth); "act-order" rows visit columns by decreasing diag(H), with GPTQ's dynamic
# groups (held as an input permutation) or "static" groups in column order.
CONFIGS = {
    "W4A16 gguf": ("gguf", 4, 16, 32),
    "W4A8 gguf": ("gguf", 4, 8, 32),
    "W8A8 rtn g128": ("rtn", 8, 8, 128),
    "W8A16 rtn g128": ("rtn", 8, 16, 128),
    "W3A16 gptq g32": ("gptq", 3, 16, 32),
    "W3A8 rtn g128": ("rtn", 3, 8, 128),
    "W3A8 gptq g128": ("gptq", 3, 8, 128),
    "W3A8 rtn g32": ("rtn", 3, 8, 32),
    "W3A8 gptq g32": ("gptq", 3, 8, 32),
    "W2A16 gptq g32": ("gptq", 2, 16, 32),
    "W2A8 rtn g128": ("rtn", 2, 8, 128),
    "W2A8 gptq g128": ("gptq", 2, 8, 128),
    "W2A8 rtn g32": ("rtn", 2, 8, 32),
    "W2A8 gptq g32": ("gptq", 2, 8, 32),
    "W8A8 rtn g128 sq0.5": ("rtn", 8, 8, 128, 0.5),
    "W8A6 rtn g128": ("rtn", 8, 6, 128),
    "W8A6 rtn g128 sq0.5": ("rtn", 8, 6, 128, 0.5),
    "W8A4 rtn g128": ("rtn", 8, 4, 128),
    "W8A4 rtn g128 sq0.5": ("rtn", 8, 4, 128, 0.5),
    "W8A4 rtn g128 sq0.8": ("rtn", 8, 4, 128, 0.8),
    "W4A8 rtn g32": ("rtn", 4, 8, 32),
    "W4A8 rtn g32 sq0.5": ("rtn", 4, 8, 32, 0.5),
    "W4A6 rtn g32": ("rtn", 4, 6, 32),
    "W4A6 rtn g32 sq0.5": ("rtn", 4, 6, 32, 0.5),
    "W3A16 gptq g128": ("gptq", 3, 16, 128),
    "W3A16 gptq g128 act-order static": ("gptq", 3, 16, 128, None, dict(act_order=True, static_groups=True)),
    "W3A16 gptq g128 act-order": ("gptq", 3, 16, 128, None, dict(act_order=True)),
    "W4A16 gptq g128": ("gptq", 4, 16, 128),
    "W4A16 gptq g128 act-order static": ("gptq", 4, 16, 128, None, dict(act_order=True, static_groups=True)),
    "W4A16 gptq g128 act-order": ("gptq", 4, 16, 128, None, dict(act_order=True)),
}


def build(dense, name, calib):
    method, wbits, abits, group, *more = CONFIGS[name]
    alpha = more[0] if more else None
    extra = more[1] if len(more) > 1 else {}
    model = copy.deepcopy(dense)
    t0 = time.perf_counter()
    if method == "gguf":
        report = quantize_from_gguf(model, smollm2_gguf_path(), abits=abits, progress=False)
    else:
        report = llmpack.quantize(model, wbits=wbits, abits=abits, group_size=group, method=method,
                                  calibration=calib if method == "gptq" or alpha is not None else None,
                                  smooth=alpha, progress=False, **extra)
    return model, report, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calib-chunks", type=int, default=32)
    ap.add_argument("--eval-chunks", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--speed", action="store_true", help="also greedy tokens/s (dense bf16, 2:4, W4A16, W4A8)")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--no-bf16-baseline", action="store_true",
                    help="skip the dense bf16 row (its evaluation alone takes ~3.5 min on an AVX2 CPU)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    dense, tok, calib, evals, desc = smollm2_and_text("austen", args.seq_len, args.calib_chunks, args.eval_chunks)
    desc += f"; 'dense' is the shipped Q4_1 file dequantized; ISA {llmpack.active_isa()}, {torch.get_num_threads()} threads"
    print(desc, flush=True)
    rows = []

    def evaluate(name, model, build_s=0.0, report=None):
        t0 = time.perf_counter()
        row = {"config": name, "perplexity": perplexity(model, evals), "eval_s": time.perf_counter() - t0,
               "build_s": build_s}
        if report is not None:
            row.update(packed_mib=report.packed_bytes / 2**20, dense_bf16_mib=report.dense_bytes / 2**20,
                       linears=len(report.swapped))
        rows.append(row)
        print(f"{name}: ppl {row['perplexity']:.2f} (build {build_s:.0f}s, eval {row['eval_s']:.0f}s)", flush=True)

    evaluate("dense fp32", dense)
    bf16 = copy.deepcopy(dense).to(torch.bfloat16)
    if not args.no_bf16_baseline:
        evaluate("dense bf16", bf16)
    for name in args.configs.split(","):
        model, report, build_s = build(dense, name, calib)
        evaluate(name, model, build_s, report)
        del model
    base = rows[0]["perplexity"]
    print(f"\n{desc}\n\n| config | perplexity | vs dense | packed MiB (bf16 MiB) | build s |\n| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        size = f"{r['packed_mib']:.1f} ({r['dense_bf16_mib']:.1f})" if "packed_mib" in r else "-"
        print(f"| {r['config']} | {r['perplexity']:.2f} | {r['perplexity'] / base:.2f}x | {size} | {r['build_s']:.0f} |")

    speed = []
    if args.speed:
        prompt = "It is a truth universally acknowledged, that a single man in possession of a good fortune"
        models = {"dense bf16": bf16}
        sparse = copy.deepcopy(bf16)
        llmpack.sparsify(sparse, method="magnitude", progress=False)
        models["2:4 bf16"] = sparse
        for name in ("W4A16 gguf", "W4A8 gguf"):
            m, _, _ = build(dense, name, calib)
            models[name + " (fp32 acts)"] = m
            mb = copy.deepcopy(m)
            for prm in mb.parameters():   # the dense parts; QuantLinear's packed buffers stay as they are
                prm.data = prm.data.to(torch.bfloat16)
            models[name + " (bf16 acts)"] = mb
            mp = copy.deepcopy(mb)
            for q in mp.modules():   # the bit planes as stored, not the CPU's fields layout
                if isinstance(q, llmpack.QuantLinear):
                    q.planes = q.bit_planes()
            models[name + " (bf16 acts, planes)"] = mp
        for rnd in range(3):   # interleaved rounds: the VM drifts
            for name, m in models.items():
                tps = greedy_tokens_per_s(m, tok, prompt, new_tokens=64)
                speed.append({"model": name, "round": rnd, "tokens_per_s": tps})
                print(f"round {rnd} {name}: {tps:.1f} tok/s", flush=True)
        print("\n| model | greedy tok/s (median of 3 rounds, min-max) |\n| --- | ---: |")
        for name in models:
            v = sorted(s["tokens_per_s"] for s in speed if s["model"] == name)
            print(f"| {name} | {v[1]:.1f} ({v[0]:.1f}-{v[2]:.1f}) |")
    total = time.perf_counter() - t_start
    print(f"total {total:.0f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"description": desc, "rows": rows, "speed": speed, "total_s": total,
                       "machine": platform.machine(), "torch": torch.__version__,
                       "date": time.strftime("%Y-%m-%d")}, f, indent=2)


if __name__ == "__main__":
    main()
