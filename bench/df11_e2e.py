"""SmolLM2-135M end to end with DFloat11 everywhere (every Linear, the
embedding and its tied head), next to the bf16 model, in transformers:

  * logits of a 128-token passage of real text: identical, bit for bit;
  * greedy generation of 6 prompts x 32 tokens: identical tokens;
  * resident weight bytes (parameters + buffers, shared storage once);
  * tokens/s of greedy generation at batch 1 (32 new tokens), the two models
    timed in alternating rounds of the same run.

    python bench/df11_e2e.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llmpack  # noqa: E402
from llmpack.data import corpus  # noqa: E402
from llmpack.models import load_smollm2  # noqa: E402
from llmpack.data.prompts import PROMPTS  # noqa: E402

NEW = 32


def resident_bytes(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def greedy(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NEW,
                              min_new_tokens=NEW, pad_token_id=0)[0, ids.shape[1]:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cpu = open("/proc/cpuinfo").read().split("model name")[1].split(":")[1].splitlines()[0].strip()
    print(f"# SmolLM2-135M, bf16 vs DFloat11 everywhere, {time.strftime('%Y-%m-%d')}, CPU {cpu}, "
          f"ISA {llmpack.active_isa()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    dense, tok = load_smollm2(torch.float32)
    for p in dense.parameters():  # the rotary tables stay fp32, as in a model loaded in bf16
        p.data = p.data.to(torch.bfloat16)
    df = copy.deepcopy(dense)
    report = llmpack.compress_lossless(df)
    print(report)

    text, _, _ = corpus.calibration_and_eval_text()
    passage = corpus.tokenize_chunks(tok, text, 128, 1)[0].unsqueeze(0)
    with torch.no_grad():
        same_logits = torch.equal(dense(passage).logits.view(torch.int16), df(passage).logits.view(torch.int16))
    prompt_ids = [torch.tensor([tok.encode(p)]) for p in PROMPTS]
    same_tokens = sum(torch.equal(greedy(dense, x), greedy(df, x)) for x in prompt_ids)

    times = {"bf16": [], "DFloat11": []}
    x = prompt_ids[0]
    for _ in range(args.rounds):
        for name, model in (("bf16", dense), ("DFloat11", df)):
            t0 = time.perf_counter()
            greedy(model, x)
            times[name].append(NEW / (time.perf_counter() - t0))
    rb, rd = resident_bytes(dense), resident_bytes(df)
    print(f"logits of a 128-token passage bit-identical: {same_logits}; greedy tokens identical: "
          f"{same_tokens}/{len(PROMPTS)} prompts x {NEW} tokens")
    print("| model | resident weight MiB | tokens/s (batch 1, 32 new; median, min..max of "
          f"{args.rounds} alternating rounds) |")
    print("|---|---:|---:|")
    for name, b in (("bf16", rb), ("DFloat11", rd)):
        t = times[name]
        print(f"| {name} | {b / 2**20:.1f} | {statistics.median(t):.1f} ({min(t):.1f}..{max(t):.1f}) |")
    ratio = [d / b for d, b in zip(times["DFloat11"], times["bf16"])]
    print(f"DFloat11 / bf16: {100 * rd / rb:.1f}% of the resident bytes, "
          f"{statistics.median(ratio):.2f}x the tokens/s (per round {min(ratio):.2f}..{max(ratio):.2f})")


if __name__ == "__main__":
    main()
