"""vLLM offline decode with and without llmpack's sinks + window eviction
(SmolLM2-135M, bf16, CPU): decode throughput over a long generation and the
capacity vLLM computes for the same KV pool. Each policy runs in its own
process (one engine per process), alternating full / sink for ``--rounds``
rounds so a slow spell of this shared VM hits both.

Needs the vLLM venv and the checkpoints of tests/vllm/make_checkpoints.py
(scripts/test_vllm.sh makes both):

    .vllm-venv/bin/python bench/vllm_kv_eviction.py $PWD/build/vllm-data [--batch 8] [--prompt 512] [--new 2048] \
        [--blocks N] [--max-batched N] [--eager]

(the data folder as an absolute path: vLLM takes a relative one for a hub id).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys

CHILD = r"""
import json, os, sys, time
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
from vllm import LLM, SamplingParams
folder, kv, engine = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
batch, prompt_len, new = map(int, sys.argv[4:7])
if kv:
    engine["additional_config"] = {"llmpack_kv": kv}
llm = LLM(model=folder, dtype="bfloat16", seed=0, enable_prefix_caching=False, **engine)
base = [1, 504, 3458, 282, 253, 2756, 4193, 2689, 28, 338]
prompts = [{"prompt_token_ids": [base[(i + j) % 10] + 7 * i for j in range(prompt_len)]} for i in range(batch)]
params = SamplingParams(temperature=0.0, max_tokens=new, ignore_eos=True)
llm.generate(prompts[:1], SamplingParams(temperature=0.0, max_tokens=8), use_tqdm=False)  # warm-up
t0 = time.perf_counter()
outs = llm.generate(prompts, params, use_tqdm=False)
took = time.perf_counter() - t0
assert all(len(o.outputs[0].token_ids) == new for o in outs)
print("LLMPACK_RESULT " + json.dumps({"seconds": took}), flush=True)
"""

CAPACITY = re.compile(r"KV cache size: ([\d,]+) tokens, Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")


def run(folder: str, kv: dict | None, args) -> dict:
    engine = {"enforce_eager": args.eager, "max_model_len": args.max_model_len}
    if args.blocks:
        engine["num_gpu_blocks_override"] = args.blocks
    if args.max_batched:
        engine["max_num_batched_tokens"] = args.max_batched
    r = subprocess.run([sys.executable, "-c", CHILD, folder, json.dumps(kv), json.dumps(engine), str(args.batch),
                        str(args.prompt), str(args.new)], capture_output=True, text=True, timeout=3600, cwd="/")
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("LLMPACK_RESULT ")]
    if r.returncode or not lines:
        sys.exit(f"vllm_kv_eviction: {kv} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    out = json.loads(lines[-1][len("LLMPACK_RESULT "):])
    cap = CAPACITY.search(r.stdout + r.stderr)
    out["capacity"] = cap.group(0) if cap else "?"
    out["concurrency"] = float(cap.group(3)) if cap else float("nan")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", help="folder written by tests/vllm/make_checkpoints.py")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=2048)
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--window", type=int, default=252)
    ap.add_argument("--sinks", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--eager", action="store_true", help="enforce_eager (no torch.compile: ~20 s start-up, not ~90)")
    ap.add_argument("--blocks", type=int, default=None,
                    help="cap the KV pool at this many blocks (num_gpu_blocks_override); default: 1 GiB")
    ap.add_argument("--max-batched", type=int, default=None, help="max_num_batched_tokens")
    args = ap.parse_args()
    folder = os.path.join(args.data, "dense-bf16")
    policies = {"full (vLLM's own)": None,
                f"sink {args.sinks} + window {args.window}": {"policy": "sink", "sink_tokens": args.sinks,
                                                              "window": args.window}}
    samples = {name: [] for name in policies}
    cap = {}
    for rnd in range(args.rounds):
        for name, kv in policies.items():
            out = run(folder, kv, args)
            samples[name].append(args.batch * args.new / out["seconds"])
            cap[name] = out
            print(f"round {rnd + 1} {name}: {samples[name][-1]:.1f} tok/s; {out['capacity']}", flush=True)
    base = statistics.median(samples["full (vLLM's own)"])
    pool = f"{args.blocks} blocks" if args.blocks else f"{os.environ.get('VLLM_CPU_KVCACHE_SPACE', '1')} GiB"
    print(f"\nSmolLM2-135M bf16, vLLM CPU ({'eager' if args.eager else 'compiled'}), batch {args.batch}, "
          f"{args.prompt}-token prompts, {args.new} new tokens each, KV pool {pool}, max_model_len "
          f"{args.max_model_len}, max_num_batched_tokens {args.max_batched or 'default'}, {args.rounds} rounds")
    print("| KV policy | new tokens/s (wall time, prefill included), median (min-max) | vs full | requests of max_model_len the pool holds |")
    print("|---|---:|---:|---:|")
    for name, s in samples.items():
        print(f"| {name} | {statistics.median(s):.1f} ({min(s):.1f}-{max(s):.1f}) | "
              f"{statistics.median(s) / base:.2f}x | {cap[name]['concurrency']:.1f} |")


if __name__ == "__main__":
    main()
