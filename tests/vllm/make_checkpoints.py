"""Step 1 of the vLLM test (runs in the main test environment, which has
transformers 5.24 and compressed-tensors 0.14): SmolLM2-135M pruned to 2:4
with SparseGPT, written three ways, plus the transformers + llmpack
reference generations the vLLM runs must reproduce.

    python tests/vllm/make_checkpoints.py OUT_DIR

OUT_DIR/
  llmpack-fp32/, llmpack-bf16/   llmpack.save of the pruned model (SparseLinear)
  ct24-fp32/                     the same pruned weights written by the real
                                 compressed-tensors library (sparse-24-bitmask)
  dense-bf16/                    the unpruned model (vLLM dense baseline, bench)
  df11-bf16/                     the unpruned model with every Linear and the
                                 embedding DFloat11 (llmpack.compress_lossless)
  btc-w4a16-fp32/, btc-w4a8-fp32/  the unpruned model with every Linear a QuantLinear
                                 holding the GGUF file's own Q4_1 blocks (weight-only,
                                 and with 8-bit activations), + reference-btc-*.json
  btc-w4a16-actorder-fp32/       the unpruned model, every Linear RTN W4 group 32 over a
                                 random order of its inputs (held as input_perm, one per
                                 input shared by q/k/v and by gate/up), + its reference
  prompts.json                   token ids of the prompts
  reference-<dtype>.json         greedy tokens + top-5 logprobs per step from
                                 transformers with llmpack's SparseLinear
  reference-dense-bfloat16.json  the same for the dense bf16 model (and, checked
                                 equal, for its DFloat11 copy)
"""
from __future__ import annotations

import copy
import json
import os
import sys
import time

import torch
from torch import nn

import llmpack
from llmpack.data import corpus
from llmpack.models import load_smollm2
from llmpack.data.prompts import PROMPTS

NEW_TOKENS = 32


def reference(model, prompt_ids: list[list[int]]) -> list[dict]:
    out = []
    for ids in prompt_ids:
        x = torch.tensor([ids])
        with torch.no_grad():
            gen = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=NEW_TOKENS,
                                 min_new_tokens=NEW_TOKENS, output_logits=True, return_dict_in_generate=True,
                                 pad_token_id=0)
        tokens = gen.sequences[0, len(ids):].tolist()
        steps = []
        for logit in gen.logits:
            lp = torch.log_softmax(logit[0].float(), -1)
            top = lp.topk(5)
            steps.append({str(int(i)): float(v) for v, i in zip(top.values, top.indices)})
        out.append({"tokens": tokens, "top_logprobs": steps})
    return out


def write_ct24(model: nn.Module, folder: str):
    """The pruned model through compressed-tensors' own 2:4 compressor."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.config import SparsityCompressionConfig
    from safetensors.torch import save_file

    model = copy.deepcopy(model)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]
    cfg = SparsityCompressionConfig.load_from_registry("sparse-24-bitmask", targets=["Linear"], ignore=["lm_head"])
    comp = ModelCompressor(sparsity_config=cfg)
    comp.compress_model(model)
    os.makedirs(folder, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    assert all(f"{n}.bitmask" in state for n in names)
    save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    model.config.to_json_file(os.path.join(folder, "config.json"))
    comp.update_config(folder)


def save_dense(model: nn.Module, folder: str, tok):
    """A plain transformers-format folder (transformers' own save_pretrained
    refuses models it loaded from GGUF)."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg["dtype"] = "bfloat16"
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tok.save_pretrained(folder)


def main(out: str):
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    model, tok = load_smollm2(torch.float32)
    model.generation_config.pad_token_id = tok.eos_token_id
    calib_text, _, _ = corpus.calibration_and_eval_text()
    calib = corpus.tokenize_chunks(tok, calib_text, 128, 8)
    dense_copy = copy.deepcopy(model)
    from llmpack.compress.prune import prune

    pr = prune(model, "sparsegpt", "2:4", calibration=calib, progress=False)
    write_ct24(model, os.path.join(out, "ct24-fp32"))
    tok.save_pretrained(os.path.join(out, "ct24-fp32"))
    from llmpack.nn import SparsifyReport, swap_linears

    swap_linears(model, pr.pruned, SparsifyReport("sparsegpt"))
    prompt_ids = [tok.encode(p) for p in PROMPTS]
    with open(os.path.join(out, "prompts.json"), "w") as f:
        json.dump(prompt_ids, f)
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        m = copy.deepcopy(model)
        torch.nn.Module._apply(m, lambda t: t.to(dtype) if t.is_floating_point() else t)
        folder = os.path.join(out, f"llmpack-{'fp32' if dtype == torch.float32 else 'bf16'}")
        llmpack.save(m, folder, tokenizer=tok)
        back = llmpack.load(folder)  # the reference runs what vLLM reads
        with open(os.path.join(out, f"reference-{name}.json"), "w") as f:
            json.dump(reference(back, prompt_ids), f)
    # The dense model, for vLLM's dense baseline (bench/vllm_e2e.py): plain transformers format.
    # Parameters only: the rotary tables stay fp32, as in any model loaded in bf16.
    for p in dense_copy.parameters():
        p.data = p.data.to(torch.bfloat16)
    save_dense(dense_copy, os.path.join(out, "dense-bf16"), tok)
    # ... and losslessly compressed: its reference must be the dense one, bit for bit.
    dense_ref = reference(dense_copy, prompt_ids)
    df = copy.deepcopy(dense_copy)
    llmpack.compress_lossless(df, progress=False)
    llmpack.save(df, os.path.join(out, "df11-bf16"), tokenizer=tok)
    back = reference(llmpack.load(os.path.join(out, "df11-bf16")), prompt_ids)
    assert back == dense_ref, "DFloat11 model's generations differ from the dense model's"
    with open(os.path.join(out, "reference-dense-bfloat16.json"), "w") as f:
        json.dump(dense_ref, f)
    # BTC: the GGUF's Q4_1 blocks as QuantLinear, without requantizing.
    from llmpack.io.gguf import quantize_from_gguf
    from llmpack.models import smollm2_gguf_path

    for abits in (16, 8):
        q, _ = load_smollm2(torch.float32)
        quantize_from_gguf(q, smollm2_gguf_path(), abits=abits, progress=False)
        folder = os.path.join(out, f"btc-w4a{abits}-fp32")
        llmpack.save(q, folder, tokenizer=tok)
        with open(os.path.join(out, f"reference-btc-w4a{abits}-fp32.json"), "w") as f:
            json.dump(reference(llmpack.load(folder), prompt_ids), f)
    # Act order: groups over permuted inputs, which vLLM's merged layers must gather once.
    q, _ = load_smollm2(torch.float32)
    act_order_rtn(q)
    folder = os.path.join(out, "btc-w4a16-actorder-fp32")
    llmpack.save(q, folder, tokenizer=tok)
    with open(os.path.join(out, "reference-btc-w4a16-actorder-fp32.json"), "w") as f:
        json.dump(reference(llmpack.load(folder), prompt_ids), f)
    print(f"make_checkpoints: wrote {out} in {time.time() - t0:.0f}s")


def act_order_rtn(model: nn.Module, seed: int = 0):
    """Every decoder Linear as an act-order QuantLinear (RTN W4 g32 along a random input order; the
    Linears reading one input share the order, as GPTQ's would: they share the Hessian)."""
    from llmpack.compress.quantize import rtn
    from llmpack.nn import QuantLinear
    from llmpack.nn._modules import set_module

    g = torch.Generator().manual_seed(seed)
    shared = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up", "up_proj": "gate_up"}
    for layer in model.model.layers:
        perms = {}
        for name, lin in list(layer.named_modules()):
            if not isinstance(lin, nn.Linear):
                continue
            key = shared.get(name.rsplit(".", 1)[-1], name)
            perm = perms.setdefault(key, torch.randperm(lin.in_features, generator=g))
            codes, scales, zeros = rtn(lin.weight.detach()[:, perm], 4, 32)
            mod = QuantLinear.from_codes(codes, scales, zeros, wbits=4, group_size=32, bias=lin.bias,
                                         input_perm=perm)
            set_module(layer, name, mod)


if __name__ == "__main__":
    main(sys.argv[1])
