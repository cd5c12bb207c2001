"""Step 2 of the vLLM test, one engine per process (runs in the vLLM venv):
greedy generation of the prompts through vllm.LLM, tokens + top-5 logprobs
per step as JSON on the stdout line starting with LLMPACK_RESULT.

    python tests/vllm/run_vllm.py FOLDER PROMPTS_JSON --dtype float32 [--eager] [--new 32]

With llmpack's sinks + window KV eviction (``additional_config`` ``llmpack_kv``):

    ... --kv sink --sinks 4 --window 64 [--block-size 32] [--blocks N] [--max-batched N] [--max-model-len N]

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
    ap.add_argument("prompts")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--eager", action="store_true")
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--max-model-len", type=int, default=256)
    ap.add_argument("--kv", choices=["sink", "window"], default=None, help="llmpack KV eviction policy")
    ap.add_argument("--sinks", type=int, default=4)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--block-size", type=int, default=None)
    ap.add_argument("--blocks", type=int, default=None, help="num_gpu_blocks_override")
    ap.add_argument("--max-batched", type=int, default=None, help="max_num_batched_tokens")
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    import llmpack.integrations.vllm as plugin_pkg

    engine = {}
    if args.kv:
        kv = {"policy": args.kv, "window": args.window, **({"sink_tokens": args.sinks} if args.kv == "sink" else {})}
        engine.update(additional_config={"llmpack_kv": kv}, enable_prefix_caching=False)
    for key, value in (("block_size", args.block_size), ("num_gpu_blocks_override", args.blocks),
                       ("max_num_batched_tokens", args.max_batched)):
        if value:
            engine[key] = value
    t0 = time.time()
    llm = LLM(model=args.folder, dtype=args.dtype, enforce_eager=args.eager, max_model_len=args.max_model_len, seed=0,
              **engine)
    startup = time.time() - t0
    prompts = json.load(open(args.prompts))
    params = SamplingParams(temperature=0.0, max_tokens=args.new, logprobs=5, ignore_eos=True)
    t0 = time.time()
    outs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], params)
    generate_s = time.time() - t0
    result = []
    for out in outs:
        comp = out.outputs[0]
        steps = [{str(tok): float(lp.logprob) for tok, lp in step.items()} for step in comp.logprobs]
        result.append({"tokens": list(comp.token_ids), "top_logprobs": steps})
    quant = llm.llm_engine.model_config.quantization
    print("LLMPACK_RESULT " + json.dumps({"startup_s": startup, "generate_s": generate_s, "quantization": quant, "plugin_registered": plugin_pkg._registered,
                      "outputs": result}), flush=True)


if __name__ == "__main__":
    main()
