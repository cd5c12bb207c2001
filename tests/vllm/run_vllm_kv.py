"""Sinks + window eviction in vLLM, one engine per process (runs in the vLLM
venv): greedy generation through vllm.LLM with llmpack's ``llmpack_kv``
config, tokens + top-5 logprobs per step as JSON on the stdout line starting
with LLMPACK_RESULT.

    python tests/vllm/run_vllm_kv.py FOLDER PROMPTS_JSON --policy sink --sinks 4 --window 64 \
        [--block-size 32] [--blocks N] [--new 256] [--dtype float32]

``--blocks`` caps vLLM's KV pool (``num_gpu_blocks_override``): with a pool
smaller than one request's context, generation completes only if blocks are
freed as the window moves.
"""
from __future__ import annotations

import argparse
import json
import os
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("prompts", help="JSON list of token-id lists")
    ap.add_argument("--policy", default="sink", choices=["sink", "window", "full"])
    ap.add_argument("--sinks", type=int, default=4)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--block-size", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=None)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--max-batched", type=int, default=None, help="max_num_batched_tokens")
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    extra = {}
    if args.policy != "full":
        kv = {"policy": args.policy, "window": args.window}
        if args.policy == "sink":
            kv["sink_tokens"] = args.sinks
        extra["additional_config"] = {"llmpack_kv": kv}
    if args.blocks:
        extra["num_gpu_blocks_override"] = args.blocks
    if args.max_batched:
        extra["max_num_batched_tokens"] = args.max_batched
    t0 = time.time()
    llm = LLM(model=args.folder, dtype=args.dtype, enforce_eager=True, max_model_len=args.max_model_len, seed=0,
              block_size=args.block_size, enable_prefix_caching=False, **extra)
    startup = time.time() - t0
    prompts = json.load(open(args.prompts))
    params = SamplingParams(temperature=0.0, max_tokens=args.new, logprobs=5, ignore_eos=True)
    t0 = time.time()
    outs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], params)
    gen = time.time() - t0
    result = []
    for out in outs:
        comp = out.outputs[0]
        steps = [{str(tok): float(lp.logprob) for tok, lp in step.items()} for step in comp.logprobs]
        result.append({"tokens": list(comp.token_ids), "top_logprobs": steps})
    print("LLMPACK_RESULT " + json.dumps({"startup_s": startup, "generate_s": gen, "outputs": result}), flush=True)


if __name__ == "__main__":
    main()
