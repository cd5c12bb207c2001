"""Shared benchmark harness: timer, cold-data rotation, roofline probe, row format.

Every bench script prints one row per shape with time, GB/s, GFLOP/s, % of
this machine's measured roofline and speed-up over a named PyTorch baseline
measured in the same run. The roofline (peak GFLOP/s per dtype, read
bandwidth per working-set size, and the DRAM read bandwidth) is measured once
per machine and cached in ~/.cache/llmpack/roofline.json.

Cold vs hot. A real model's weights (and KV cache) stream from DRAM at decode:
each matrix is read once per token, long after it left the caches. ``Cold``
makes that happen in a benchmark: it holds enough copies of the operands that
one pass over them reads more than ``cold_bytes()`` (several times the last
level cache), and each call uses the next copy. Cold rows are divided by the
DRAM read roof; hot rows (one copy, cache-resident when it fits) by the read
bandwidth at their working-set size, and are labelled as such.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "llmpack", "roofline.json")


@dataclass
class Timing:
    median_s: float
    min_s: float
    max_s: float


def timeit(fn: Callable[[], object], warmup: int = 3, repeats: int = 15, min_time_s: float = 0.2) -> Timing:
    """Median/min/max wall time of ``fn()``. Repeats grow until the samples
    cover at least ``min_time_s`` so short calls are not dominated by noise."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    t_start = time.perf_counter()
    while len(samples) < repeats or (time.perf_counter() - t_start < min_time_s and len(samples) < 10_000):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return Timing(statistics.median(samples), min(samples), max(samples))


def timeit_interleaved(fns: list[Callable[[], object]], rounds: int = 5, min_time_s: float = 0.3) -> list[Timing]:
    """Timings of several functions measured in alternating rounds (A, B, C,
    A, B, C, ...), each round at least ``min_time_s / rounds`` per function.
    A kernel and its baselines then see the same machine state: on a shared
    VM a slow spell hits all of them instead of skewing one speed-up."""
    samples: list[list[float]] = [[] for _ in fns]
    for fn in fns:  # warm: caches, page faults, allocator, clocks (>= 3 calls, >= 50 ms)
        t_start, n = time.perf_counter(), 0
        while n < 3 or time.perf_counter() - t_start < 0.05:
            fn()
            n += 1
    for _ in range(rounds):
        for fn, out in zip(fns, samples):
            t_start = time.perf_counter()
            n = 0
            while n < 3 or (time.perf_counter() - t_start < min_time_s / rounds and n < 2_000):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
                n += 1
    return [Timing(statistics.median(s), min(s), max(s)) for s in samples]


def llc_bytes() -> int:
    """Size of the largest CPU cache (sysfs), 32 MiB if unknown."""
    best = 0
    for index in range(8):
        path = f"/sys/devices/system/cpu/cpu0/cache/index{index}/size"
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        best = max(best, int(text.rstrip("KMG")) * mult)
    return best or 32 << 20


def cold_bytes() -> int:
    """Bytes one rotation through the cold copies reads: 4x the LLC and at
    least 512 MiB (a VM may report less LLC than the host has: the Xeons these
    benches also ran on have ~260 MiB of L3)."""
    return max(4 * llc_bytes(), 512 << 20)


class Cold:
    """``Cold(make, nbytes)``: ``make()`` builds one copy of the operands
    (a tuple) of ``nbytes`` bytes; enough copies are made that a full rotation
    exceeds ``cold_bytes()``. ``next()`` returns the copy to use for a call;
    ``Cold.hot(args)`` is the one-copy (hot) variant with the same interface."""

    def __init__(self, make: Callable[[], tuple], nbytes: int, copies: int | None = None):
        n = copies or max(2, -(-cold_bytes() // max(1, nbytes)))
        self.copies = [make() for _ in range(n)]
        self.i = 0

    @classmethod
    def hot(cls, args: tuple) -> "Cold":
        obj = cls.__new__(cls)
        obj.copies, obj.i = [args], 0
        return obj

    @property
    def is_cold(self) -> bool:
        return len(self.copies) > 1

    def next(self) -> tuple:
        self.i = (self.i + 1) % len(self.copies)
        return self.copies[self.i]


def _machine_key() -> str:
    return f"{platform.node()}|{platform.processor() or platform.machine()}|threads={torch.get_num_threads()}"


def _read_bandwidth(nbytes: int) -> float:
    """Best read bandwidth (GB/s) torch reaches on an fp32 working set of
    ``nbytes``: the faster of a sum reduction and an fp32 GEMV (BLAS sgemv is
    tuned to stream its matrix). Both are timed warm, as the benchmarks are,
    so the working set sits in whichever cache level or DRAM holds it."""
    n = max(nbytes // 4, 4096)
    src = torch.ones(n // 4096 * 4096, dtype=torch.float32)
    mat, vec = src.view(-1, 4096), torch.ones(1, 4096)
    t_sum = timeit(lambda: src.sum(), warmup=2, repeats=7)
    t_gemv = timeit(lambda: torch.nn.functional.linear(vec, mat), warmup=2, repeats=7)
    return src.numel() * 4 / min(t_sum.min_s, t_gemv.min_s) / 1e9


def _size_bucket(nbytes: float) -> int:
    """Power of two >= nbytes, clamped to [1 MiB, 1 GiB]."""
    b = 1 << 20
    while b < nbytes and b < (1 << 30):
        b <<= 1
    return b


def _probe() -> dict:
    """Peak GFLOP/s per dtype (square matmul, torch's BLAS; 1024^3 is enough
    for the BLAS to reach its peak, and a CPU without native bf16 takes
    seconds per 2048^3 bf16 call); memory roofs are measured lazily."""
    peaks = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(1024, 1024, dtype=dtype)
        tm = timeit(lambda: a @ a, warmup=1, repeats=5, min_time_s=0.1)
        peaks[str(dtype).replace("torch.", "")] = 2 * 1024**3 / tm.min_s / 1e9
    return {"key": _machine_key(), "peak_gflops": peaks, "mem_gbps_by_size": {}}


def _save(data: dict):
    os.makedirs(os.path.dirname(CACHE), exist_ok=True)
    with open(CACHE, "w") as f:
        json.dump(data, f)


def roofline() -> dict:
    """Cached machine roofline; re-measured when the machine/thread count changes."""
    try:
        with open(CACHE) as f:
            data = json.load(f)
        if data.get("key") == _machine_key() and "mem_gbps_by_size" in data:
            return data
    except (OSError, ValueError):
        pass
    data = _probe()
    _save(data)
    return data


def mem_roof_gbps(working_set_bytes: float) -> float:
    """Read-bandwidth roof for a working set of this size (bucketed to a
    power of two, measured once and cached): a 2 MiB weight that lives in L2
    and a 200 MiB one that streams from DRAM have different roofs."""
    data = roofline()
    key = str(_size_bucket(working_set_bytes))
    if key not in data["mem_gbps_by_size"]:
        data["mem_gbps_by_size"][key] = _read_bandwidth(int(key))
        _save(data)
    return data["mem_gbps_by_size"][key]


_DRAM_GBPS: list[float] = []


def dram_roof_gbps() -> float:
    """DRAM read roof: torch's best read bandwidth over a working set larger
    than cold_bytes() (every byte comes from memory). Measured once per
    process, not cached on disk: on a shared VM the memory bandwidth drifts
    from minute to minute, and cold rows are divided by the roof of the same run."""
    if not _DRAM_GBPS:
        _DRAM_GBPS.append(_read_bandwidth(max(cold_bytes(), 1 << 30)))
    return _DRAM_GBPS[0]


def pct_of_roofline(bytes_moved: float, flops: float, seconds: float, dtype: str = "float32",
                    cold: bool = False) -> float:
    """Achieved fraction of the roofline bound max(bytes/BW, flops/peak); BW is
    the DRAM roof for cold data, the roof at that working-set size for hot."""
    r = roofline()
    # The compute roof is the faster of the dtype's own GEMM and fp32's: on a
    # CPU without native bf16/fp16 math, 16-bit work runs as fp32 FMAs.
    peak = max(r["peak_gflops"].get(dtype, 0.0), r["peak_gflops"]["float32"])
    bw = dram_roof_gbps() if cold else mem_roof_gbps(bytes_moved)
    bound_s = max(bytes_moved / (bw * 1e9), flops / (peak * 1e9))
    return 100.0 * bound_s / seconds


class Table:
    """Prints a header once and one aligned row per shape."""

    COLS = ("shape", "dtype", "data", "time_us", "min_us", "max_us", "GB/s", "GFLOP/s", "%roof", "baseline", "speedup")
    WIDTHS = (24, 9, 5, 10, 10, 10, 8, 9, 7, 22, 8)

    def __init__(self, title: str):
        self.extra_names: tuple = ()
        self.extra_widths: tuple = ()
        self.title = title
        r = roofline()
        peaks = ", ".join(f"{k} {v:.0f}" for k, v in r["peak_gflops"].items())
        print(f"# {title}")
        print(f"# roofline: peak GFLOP/s {peaks}; memory roof: cold rows (operands rotated through "
              f"{cold_bytes() / 2**20:.0f} MiB, LLC {llc_bytes() / 2**20:.0f} MiB) the DRAM read bandwidth "
              f"{dram_roof_gbps():.1f} GB/s, hot rows the best torch read bandwidth at their working-set size "
              f"(e.g. {mem_roof_gbps(8 * 2**20):.1f} GB/s at 8 MiB); threads {torch.get_num_threads()}")
        self._header_printed = False

    def extra_cols(self, names: tuple, widths: tuple):
        """Add script-specific columns after the standard ones."""
        self.extra_names, self.extra_widths = names, widths

    def row(self, shape: str, dtype: str, t: Timing, bytes_moved: float, flops: float,
            baseline_name: str, baseline: Timing, roof_dtype: str = "float32", extra: tuple = (),
            cold: bool = False):
        if not self._header_printed:
            print("  ".join(c.rjust(w) for c, w in zip(self.COLS + self.extra_names, self.WIDTHS + self.extra_widths)))
            self._header_printed = True
        cells = (
            shape, dtype, "cold" if cold else "hot", f"{t.median_s * 1e6:.1f}", f"{t.min_s * 1e6:.1f}", f"{t.max_s * 1e6:.1f}",
            f"{bytes_moved / t.median_s / 1e9:.1f}", f"{flops / t.median_s / 1e9:.1f}",
            f"{pct_of_roofline(bytes_moved, flops, t.median_s, roof_dtype, cold):.0f}",
            baseline_name, f"{baseline.median_s / t.median_s:.2f}x",
        ) + tuple(extra)
        print("  ".join(str(c).rjust(w) for c, w in zip(cells, self.WIDTHS + self.extra_widths)), flush=True)


def smollm2_and_text(source: str, seq_len: int, calib_chunks: int, eval_chunks: int):
    """SmolLM2 (fp32) with calibration and held-out token chunks of the local text
    ``source``: (model, tokenizer, calib [n, seq], evals [n, seq], description)."""
    from llmpack.data import calibration_and_eval_text, tokenize_chunks
    from llmpack.models import load_smollm2

    model, tok = load_smollm2(torch.float32)
    calib_text, eval_text, text_desc = calibration_and_eval_text(source)
    calib = tokenize_chunks(tok, calib_text, seq_len, calib_chunks)
    evals = tokenize_chunks(tok, eval_text, seq_len, eval_chunks)
    desc = (f"SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to fp32); {text_desc}; calibration "
            f"{calib_chunks}x{seq_len} tokens, evaluation {eval_chunks}x{seq_len} tokens")
    return model, tok, calib, evals, desc
