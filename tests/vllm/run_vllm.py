"""Step 2 of the vLLM test, one engine per process (runs in the vLLM venv):
greedy generation of the prompts through vllm.LLM, tokens + top-5 logprobs
per step as JSON on the stdout line starting with LLMPACK_RESULT.

    python tests/vllm/run_vllm.py FOLDER PROMPTS_JSON --dtype float32 [--eager] [--new 32]
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
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    import llmpack.integrations.vllm as plugin_pkg

    t0 = time.time()
    llm = LLM(model=args.folder, dtype=args.dtype, enforce_eager=args.eager, max_model_len=256, seed=0)
    startup = time.time() - t0
    prompts = json.load(open(args.prompts))
    params = SamplingParams(temperature=0.0, max_tokens=args.new, logprobs=5, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], params)
    result = []
    for out in outs:
        comp = out.outputs[0]
        steps = [{str(tok): float(lp.logprob) for tok, lp in step.items()} for step in comp.logprobs]
        result.append({"tokens": list(comp.token_ids), "top_logprobs": steps})
    quant = llm.llm_engine.model_config.quantization
    print("LLMPACK_RESULT " + json.dumps({"startup_s": startup, "quantization": quant, "plugin_registered": plugin_pkg._registered,
                      "outputs": result}), flush=True)


if __name__ == "__main__":
    main()
