"""Paged decode attention: llmpack vs vLLM's CPU paged-attention op vs torch
SDPA, on the same K/V, timed in alternating rounds of one run on cold KV
(copies rotated past the LLC, as the layers of a real model are).

The three read the same values in their own layouts:
  llmpack  torch.ops.llmpack.paged_decode_attention: pools [pages, PAGE, D],
           one (sequence, kv-head) per page, tables int32 [B, Hkv, pages],
           lengths int32 [B, Hkv] (csrc/kvcache/kvcache.h).
  vLLM     torch.ops._C.cpu_attention_with_kv_cache, the op of vLLM's CPU_ATTN
           backend: one cache tensor [blocks, Hkv, BLOCK, 2 * D] per layer
           (per (block, kv-head): BLOCK rows of K, then BLOCK rows of V),
           written by vLLM's own cache writer torch.ops._C.cpu_attn_reshape_and_cache
           from [tokens, Hkv, D] K/V and a slot mapping; block table int32
           [B, blocks], seq_lens int32 [B], query_start_loc int32 [B + 1]
           (pure decode: one query token per sequence) and the scheduler
           metadata of torch.ops._C.get_scheduler_metadata. The ISA is the one
           vLLM's backend picks (_get_attn_isa: "amx" for bf16 on an AMX CPU,
           else "vec" for a block size that is a multiple of 32, "vec16" for one
           of 16), the block size vLLM's CPU default (128).
  SDPA     torch.nn.functional.scaled_dot_product_attention on contiguous
           [B, Hkv, L, D] K/V (enable_gqa for grouped heads).
Metadata that vLLM builds once per decode step and shares across layers (the
scheduler metadata, block table, seq lens) is built outside the timed call;
llmpack has none besides its tables and lengths.

One row per shape: context length, heads / kv-heads x head_dim, batch, dtype;
time of each, llmpack's GB/s of K+V read and % of the DRAM read roof measured
in the same process, and llmpack's speed-up over vLLM and over SDPA. Outputs
are checked against each other before a shape is timed.

Run with the vLLM venv's python (vLLM is not in the project venv):

    /work/vllm-venv/bin/python bench/kvcache_vllm.py [--quick | --tiny] [--threads N]

--quick: 1k/4k context, bf16 only. --tiny: a correctness sweep on small and
ragged shapes, then a few small rows timed on cache-resident data (the
timings mean little; it is a check that everything runs).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import Cold, dram_roof_gbps, timeit_interleaved  # noqa: E402

PAGE = 64  # llmpack's page size (its default in llmpack.kv; --page changes it)
BLOCK = 128  # vLLM's block size (the CPU platform's default block_size)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def short(dtype) -> str:
    return str(dtype).removeprefix("torch.")


# --------------------------------------------------------------------------
# vLLM: kernels, ISA choice
# --------------------------------------------------------------------------
class Vllm:
    """vLLM's CPU attention ops (torch.ops._C.*), loaded the way vLLM's CPU
    platform loads them (it picks _C, _C_AVX512 or _C_AVX2 for this CPU)."""

    def __init__(self):
        import vllm
        from vllm.platforms import current_platform

        self.version = vllm.__version__
        current_platform.import_kernels()
        ops = torch.ops._C
        for name in ("cpu_attention_with_kv_cache", "cpu_attn_reshape_and_cache", "get_scheduler_metadata"):
            if not hasattr(ops, name):
                raise ImportError(f"torch.ops._C.{name} is missing (not a CPU build of vLLM?)")
        self.attend, self.write, self.schedule = (
            ops.cpu_attention_with_kv_cache, ops.cpu_attn_reshape_and_cache, ops.get_scheduler_metadata)
        try:
            from vllm.v1.attention.backends.cpu_attn import _get_attn_isa
            self._isa, self.isa_source = _get_attn_isa, "vLLM's _get_attn_isa"
        except Exception:  # the backend module moved: the same rule for x86
            self._isa, self.isa_source = self._x86_isa, "x86 fallback rule (_get_attn_isa not importable)"
        try:
            from vllm import envs
            self.split_kv = bool(envs.VLLM_CPU_ATTN_SPLIT_KV)
        except Exception:
            self.split_kv = True

    @staticmethod
    def _x86_isa(dtype, block_size, head_size=None, kv_cache_dtype=None):
        if head_size is not None and head_size % 32 and head_size % 16 == 0:
            return "vec16"
        if torch.cpu._is_amx_tile_supported() and dtype == torch.bfloat16 and block_size % 32 == 0:
            return "amx"
        return "vec" if block_size % 32 == 0 else "vec16"

    def isa(self, dtype, head_dim, block=BLOCK) -> str:
        return self._isa(dtype, block, head_dim, "auto")


def load_vllm():
    try:
        return Vllm(), None
    except Exception as e:  # ImportError, or a vLLM that fails to initialize
        return None, f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------
# One shape's K/V in the three layouts
# --------------------------------------------------------------------------
def make_case(vl: Vllm, b, heads, kv, d, lens, dtype, g, page=None, block=BLOCK):
    """Random K/V of b sequences (lens[i] tokens each) x kv heads, as
    (llmpack args, SDPA args, vLLM args); pages and blocks in shuffled order."""
    page = page or PAGE
    lmax = max(lens)
    kc = torch.randn(b, kv, lmax, d, generator=g).to(dtype)
    vc = torch.randn(b, kv, lmax, d, generator=g).to(dtype)
    for i, n in enumerate(lens):  # slots past a sequence's length: never read
        kc[i, :, n:] = float("nan")
        vc[i, :, n:] = float("nan")

    # llmpack: page p of (i, h) holds slots p*page .. of that sequence and head.
    per = -(-lmax // page)
    tables = torch.randperm(b * kv * per, generator=g).to(torch.int32).view(b, kv, per)
    rows = tables.flatten().long()

    def pool(x):
        x = F.pad(x, (0, 0, 0, per * page - lmax)).reshape(b * kv * per, page, d)
        out = torch.empty_like(x)
        out[rows] = x
        return out

    lengths = torch.tensor(lens, dtype=torch.int32)[:, None].expand(b, kv).contiguous()
    ours = (pool(kc), pool(vc), tables, lengths)

    # vLLM: block j of sequence i holds its tokens j*block .., all kv heads.
    nblk = -(-lmax // block)
    block_table = torch.randperm(b * nblk, generator=g).to(torch.int32).view(b, nblk)
    cache = torch.zeros(b * nblk, kv, block, 2 * d, dtype=dtype)
    key_cache, value_cache = cache.view(b * nblk, kv, 2 * block, d).chunk(2, dim=2)
    key = torch.cat([kc[i, :, :n].transpose(0, 1) for i, n in enumerate(lens)]).contiguous()  # [tokens, Hkv, D]
    value = torch.cat([vc[i, :, :n].transpose(0, 1) for i, n in enumerate(lens)]).contiguous()
    slots = torch.cat([block_table[i].long().repeat_interleave(block)[:n] * block + torch.arange(n) % block
                       for i, n in enumerate(lens)])
    vl.write(key, value, key_cache, value_cache, slots, vl.isa(dtype, d, block), 1.0, 1.0, "auto")
    theirs = (key_cache, value_cache, block_table)
    return ours, (kc, vc), theirs


def vllm_metadata(vl: Vllm, b, heads, kv, d, lens, dtype, block=BLOCK):
    """What vLLM's CPU backend builds once per decode step: query_start_loc,
    seq_lens and the scheduler metadata (it sizes per-thread work and
    scratch, so it is built after the thread count is set)."""
    qsl = torch.arange(b + 1, dtype=torch.int32)
    seq_lens = torch.tensor(lens, dtype=torch.int32)
    sched = vl.schedule(b, heads, kv, d, seq_lens, dtype, qsl, True, -1, vl.isa(dtype, d, block),
                        vl.split_kv, None, "auto")
    return qsl, seq_lens, sched


def call_vllm(vl: Vllm, q, out, theirs, meta, scale):
    key_cache, value_cache, block_table = theirs
    qsl, seq_lens, sched = meta
    # query [tokens, Hq, D]; causal with one query token per sequence = that
    # token attends the whole sequence; no alibi, window, softcap or sinks.
    vl.attend(q, key_cache, value_cache, out, qsl, seq_lens, scale, True, None, -1, block_table, 0.0, sched,
              None, None, 1.0, 1.0, "auto")
    return out


def call_llmpack(q, ours, scale):
    return torch.ops.llmpack.paged_decode_attention(q, *ours, scale, False)[0]


def reference(q, sdpa, lens, scale):
    """fp32 SDPA per sequence (each over its own length)."""
    kc, vc = sdpa
    heads, kv = q.shape[1], kc.shape[1]
    outs = [F.scaled_dot_product_attention(q[i:i + 1, :, None].float(), kc[i:i + 1, :, :n].float(),
                                           vc[i:i + 1, :, :n].float(), scale=scale, enable_gqa=heads != kv)
            for i, n in enumerate(lens)]
    return torch.cat(outs).squeeze(2)


def max_err(got, ref) -> float:
    return (got.float() - ref).abs().max().item()


# --------------------------------------------------------------------------
# Correctness sweep (--tiny) and dtype support probe
# --------------------------------------------------------------------------
def vllm_supports(vl: Vllm, dtype) -> str | None:
    """None when vLLM's op runs this dtype (a 1-sequence, 40-token call),
    else why not."""
    g = torch.Generator().manual_seed(0)
    try:
        _, sdpa, theirs = make_case(vl, 1, 2, 2, 64, [40], dtype, g)
        q = torch.randn(1, 2, 64, generator=g).to(dtype)
        call_vllm(vl, q, torch.empty_like(q), theirs, vllm_metadata(vl, 1, 2, 2, 64, [40], dtype), 0.125)
    except Exception as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return None


def check_sweep(vl: Vllm, dtypes) -> bool:
    """llmpack and vLLM vs fp32 SDPA on small, ragged shapes (lengths not
    multiples of the page or block, one token, several blocks, GQA/MQA)."""
    cases = [  # (heads, kv, d, lens)
        (4, 4, 64, [1]), (4, 4, 64, [37]), (8, 2, 128, [200, 129, 5]), (9, 3, 64, [300, 128, 257]),
        (8, 1, 128, [96, 33]), (4, 2, 32, [513]), (32, 8, 128, [160, 64]), (6, 3, 96, [70, 140]),
    ]
    print("# correctness: max |out - fp32 SDPA| (per-sequence lengths; tolerance: bf16 2e-2, fp16 5e-3, fp32 1e-4)")
    print("| heads/kv x dim | lengths | dtype | vLLM ISA | llmpack err | vLLM err | llmpack vs vLLM | ok |")
    print("|---|---|---|---|---:|---:|---:|---|")
    all_ok = True
    for heads, kv, d, lens in cases:
        for dtype in dtypes:
            g = torch.Generator().manual_seed(heads * 1000 + d + len(lens))
            ours, sdpa, theirs = make_case(vl, len(lens), heads, kv, d, lens, dtype, g)
            q = torch.randn(len(lens), heads, d, generator=g).to(dtype)
            scale = d ** -0.5
            ref = reference(q, sdpa, lens, scale)
            a = call_llmpack(q, ours, scale)
            v = call_vllm(vl, q, torch.empty_like(q), theirs, vllm_metadata(vl, len(lens), heads, kv, d, lens, dtype),
                          scale)
            ea, ev, eav = max_err(a, ref), max_err(v, ref), max_err(a, v.float())
            ok = ea <= TOL[dtype] and ev <= TOL[dtype] and torch.isfinite(v).all().item()
            all_ok &= ok
            print(f"| {heads}/{kv} x {d} | {','.join(map(str, lens))} | {short(dtype)} | {vl.isa(dtype, d)} | "
                  f"{ea:.2e} | {ev:.2e} | {eav:.2e} | {'yes' if ok else 'NO'} |", flush=True)
    return all_ok


# --------------------------------------------------------------------------
# Timed rows
# --------------------------------------------------------------------------
class Rotation:
    """The i-th layout of each of a Cold's copies, with its own cursor."""

    def __init__(self, cold: Cold, index: int):
        self.copies, self.i = [c[index] for c in cold.copies], 0

    def next(self):
        self.i = (self.i + 1) % len(self.copies)
        return self.copies[self.i]


def row(vl: Vllm, length, heads, kv, d, b, dtype, roof, copies=None, vllm_ok=True):
    g = torch.Generator().manual_seed(length + heads + b)
    lens = [length] * b
    kv_bytes = 2 * b * kv * length * d * torch.finfo(dtype).bits // 8
    q = torch.randn(b, heads, d, generator=g).to(dtype)
    q4 = q.unsqueeze(2)
    scale = d ** -0.5
    cold = Cold(lambda: make_case(vl, b, heads, kv, d, lens, dtype, g), kv_bytes, copies=copies)
    ours, sdpa, theirs = Rotation(cold, 0), Rotation(cold, 1), Rotation(cold, 2)
    meta = vllm_metadata(vl, b, heads, kv, d, lens, dtype) if vllm_ok else None
    out = torch.empty_like(q)

    def run_ours():
        return call_llmpack(q, ours.next(), scale)

    def run_vllm():
        return call_vllm(vl, q, out, theirs.next(), meta, scale)

    def run_sdpa():
        k, v = sdpa.next()
        return F.scaled_dot_product_attention(q4, k, v, scale=scale, enable_gqa=heads != kv)

    # Same answer first (the same K/V in all layouts).
    c0 = cold.copies[0]
    ref = reference(q, c0[1], lens, scale)
    tol = TOL[dtype]
    err = {"llmpack": max_err(call_llmpack(q, c0[0], scale), ref),
           "SDPA": max_err(F.scaled_dot_product_attention(q4, *c0[1], scale=scale, enable_gqa=heads != kv).squeeze(2),
                           ref)}
    if vllm_ok:
        err["vLLM"] = max_err(call_vllm(vl, q, torch.empty_like(q), c0[2], meta, scale), ref)
    bad = {k: e for k, e in err.items() if not e <= tol}
    assert not bad, f"results differ from fp32 SDPA by {bad} (tolerance {tol})"

    fns = [run_ours, run_vllm, run_sdpa] if vllm_ok else [run_ours, run_sdpa]
    rounds, min_time = (3, 0.06) if copies else (5, 0.75)
    times = timeit_interleaved(fns, rounds=rounds, min_time_s=min_time)
    t_ours, t_sdpa = times[0], times[-1]
    t_vllm = times[1] if vllm_ok else None
    gbs = kv_bytes / t_ours.median_s / 1e9
    vllm_us = f"{t_vllm.median_s * 1e6:.0f}" if t_vllm else "n/a"
    vs_vllm = f"{t_vllm.median_s / t_ours.median_s:.2f}x" if t_vllm else "n/a"
    print(f"| {length} | {heads}/{kv} x {d} | {b} | {short(dtype)} | "
          f"{t_ours.median_s * 1e6:.0f} ({t_ours.min_s * 1e6:.0f}..{t_ours.max_s * 1e6:.0f}) | "
          f"{vllm_us} | {t_sdpa.median_s * 1e6:.0f} | {gbs:.1f} | {100 * gbs / roof:.0f} | "
          f"{vs_vllm} | {t_sdpa.median_s / t_ours.median_s:.2f}x |", flush=True)
    del cold, ours, sdpa, theirs


def main():
    global PAGE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1k/4k context, bf16 only")
    ap.add_argument("--tiny", action="store_true",
                    help="correctness sweep + a few small rows on cache-resident data (seconds)")
    ap.add_argument("--threads", type=int, default=0, help="torch/OpenMP threads (default: torch's)")
    ap.add_argument("--page", type=int, default=PAGE,
                    help="llmpack's page size (slots per page; 128 = vLLM's CPU block size)")
    args = ap.parse_args()
    PAGE = args.page

    vl, why = load_vllm()
    if vl is None:
        print(f"# kvcache_vllm: vLLM is not importable here ({why}); run it with the vLLM venv's python, "
              f"e.g. /work/vllm-venv/bin/python bench/kvcache_vllm.py. Skipping.")
        return 0
    import llmpack  # noqa: F401  (loads the library: torch.ops.llmpack.*)

    if args.threads:
        torch.set_num_threads(args.threads)

    dtypes = [torch.bfloat16] if args.quick else [torch.bfloat16, torch.float32]
    unsupported = {dt: vllm_supports(vl, dt) for dt in (dtypes + [torch.float16] if args.tiny else dtypes)}
    unsupported = {dt: why for dt, why in unsupported.items() if why}

    cpu = open("/proc/cpuinfo").read().split("model name")[1].split(":")[1].splitlines()[0].strip()
    isas = ", ".join(f"{short(dt)} {vl.isa(dt, 128)}" for dt in dtypes)
    if args.tiny:
        ok = check_sweep(vl, [dt for dt in (dtypes + [torch.float16]) if dt not in unsupported])
        print()
    roof = dram_roof_gbps()
    data = ("TINY: 4 copies of each shape's K/V, cache-resident, short timings (a smoke test, not a measurement)"
            if args.tiny else "cold KV")
    print(f"# paged decode attention: llmpack vs vLLM CPU ({vl.isa_source}) vs SDPA (contiguous KV), {data}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}, CPU {cpu}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, "
          f"vllm {vl.version}, llmpack ISA {llmpack.active_isa()}, page {PAGE}; vLLM block {BLOCK}, ISA {isas}, "
          f"split-KV {'on' if vl.split_kv else 'off'}; DRAM read roof {roof:.1f} GB/s")
    for dt, why in unsupported.items():
        print(f"# vLLM CPU does not run {short(dt)} here: {why}")
    print("| context | heads/kv x dim | batch | dtype | llmpack us (min..max) | vLLM us | SDPA us | llmpack GB/s "
          "| % roof | vs vLLM | vs SDPA |")
    print("|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    if args.tiny:
        lengths, shapes, copies = [256, 1000], [(4, 4, 64), (8, 2, 128), (9, 3, 64)], 4
    else:
        lengths = [1024, 4096] if args.quick else [1024, 4096, 16384]
        shapes, copies = [(32, 32, 128), (32, 8, 128), (9, 3, 64)], None
    for length in lengths:
        for heads, kv, d in shapes:
            for b in ((1,) if length == 16384 else (1, 8) if not args.tiny else (1, 3)):
                for dtype in dtypes:
                    row(vl, length, heads, kv, d, b, dtype, roof, copies=copies, vllm_ok=dtype not in unsupported)
    if args.tiny and not ok:
        print("# correctness sweep FAILED (see the table above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
