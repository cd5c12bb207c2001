"""GGUF Q4_0 / Q4_1 / Q8_0 weights straight into QuantLinear, without requantizing.

ggml's blocks hold 32 consecutive inputs of one row (little-endian):
  Q4_0  fp16 d, 16 bytes of nibbles      W = d (q - 8)       q in 0..15
  Q4_1  fp16 d, fp16 m, 16 bytes         W = d q + m         q in 0..15
  Q8_0  fp16 d, 32 int8                  W = d q             q in -128..127
with the low nibble of byte j holding input j and the high nibble input
j + 16. So a block is one of our groups of 32: d is the scale, and the zero
point is 8 (Q4_0) or 128 (Q8_0, codes q + 128), or m is the float offset
(Q4_1). The codes and scales are the file's own bits: a QuantLinear built
here multiplies by exactly the weights transformers dequantizes from the
same file.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._progress import progress as _progress

GROUP = 32
_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}
# GGUF tensor names of a Llama-style decoder layer -> the transformers module names.
_LLAMA_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def decode_blocks(kind: str, raw: np.ndarray, in_features: int):
    """Rows of GGUF blocks ``raw uint8 [N, G * block bytes]`` -> ``(codes uint8 [N, K], scales fp16 [N, G],
    zeros uint8 [N, G] | None, offsets fp16 [N, G] | None, wbits)``."""
    if kind not in _BLOCK_BYTES:
        raise ValueError(f"GGUF type {kind} is not one of {sorted(_BLOCK_BYTES)}")
    if in_features % GROUP:
        raise ValueError(f"GGUF {kind}: {in_features} inputs is not a whole number of {GROUP}-value blocks")
    n, g = raw.shape[0], in_features // GROUP
    if raw.shape[1] != g * _BLOCK_BYTES[kind]:
        raise ValueError(f"GGUF {kind}: rows of {raw.shape[1]} bytes, expected {g} blocks of "
                         f"{_BLOCK_BYTES[kind]} bytes for {in_features} inputs")
    blocks = np.ascontiguousarray(raw).reshape(n, g, _BLOCK_BYTES[kind])
    d = torch.from_numpy(blocks[:, :, 0:2].copy().view(np.float16).reshape(n, g))
    if kind == "Q8_0":
        q = torch.from_numpy(blocks[:, :, 2:].copy().view(np.int8).astype(np.int16) + 128).to(torch.uint8)
        return q.reshape(n, in_features), d, torch.full((n, g), 128, dtype=torch.uint8), None, 8
    start = 2 if kind == "Q4_0" else 4
    nib = torch.from_numpy(blocks[:, :, start:start + 16].copy())
    q = torch.cat([nib & 0xF, nib >> 4], dim=-1).reshape(n, in_features)
    if kind == "Q4_0":
        return q, d, torch.full((n, g), 8, dtype=torch.uint8), None, 4
    m = torch.from_numpy(blocks[:, :, 2:4].copy().view(np.float16).reshape(n, g))
    return q, d, None, m, 4


def _rope_row_order(rows: int, heads: int) -> torch.Tensor:
    """llama.cpp stores q/k rows interleaved for its RoPE; transformers undoes it on load
    (reverse permutation per head: [dim, 2] -> [2, dim]). Row r of the transformers weight
    is row order[r] of the file's."""
    return torch.arange(rows).reshape(heads, rows // heads // 2, 2).transpose(1, 2).reshape(rows)


def quantize_from_gguf(model: nn.Module, path: str | Path, abits: int = 16, act_symmetric: bool = False,
                       progress: bool = True):
    """Swap the Linears of a Llama-style ``model`` (loaded by transformers from the same GGUF
    file, which dequantized them) for QuantLinears holding the file's Q4_0 / Q4_1 / Q8_0 blocks
    as they are. Tensors of other types stay dense (listed in the report)."""
    import gguf

    from ..compress.quantize import QuantizeReport, _set_module
    from ..nn.quant_linear import QuantLinear

    start = time.perf_counter()
    reader = gguf.GGUFReader(str(path))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    if arch != "llama":
        raise ValueError(f"{path}: GGUF architecture {arch!r}; the importer knows Llama-style models only")
    cfg = model.config
    report = QuantizeReport("gguf", 4, abits, GROUP)
    kinds = set()
    for t in _progress(reader.tensors, progress, desc="gguf import", unit="tensor"):
        parts = t.name.split(".")
        if len(parts) != 4 or parts[0] != "blk" or parts[2] not in _LLAMA_NAMES:
            continue
        name = f"model.layers.{parts[1]}.{_LLAMA_NAMES[parts[2]]}"
        lin = model.get_submodule(name)
        kind = t.tensor_type.name
        if kind not in _BLOCK_BYTES:
            report.skipped[name] = f"GGUF type {kind} is not Q4_0 / Q4_1 / Q8_0"
            continue
        codes, scales, zeros, offsets, wbits = decode_blocks(kind, np.asarray(t.data), lin.in_features)
        if codes.shape != lin.weight.shape:
            raise ValueError(f"{path}: {t.name} is {tuple(codes.shape)}, {name} is {tuple(lin.weight.shape)}")
        if parts[2] in ("attn_q", "attn_k"):
            heads = cfg.num_attention_heads if parts[2] == "attn_q" else cfg.num_key_value_heads
            order = _rope_row_order(codes.shape[0], heads)
            codes, scales = codes[order], scales[order]
            zeros = zeros[order] if zeros is not None else None
            offsets = offsets[order] if offsets is not None else None
        mod = QuantLinear.from_codes(codes, scales, zeros, offsets, wbits=wbits, group_size=GROUP, bias=lin.bias,
                                     abits=abits, act_symmetric=act_symmetric, dtype=lin.weight.dtype)
        report.dense_bytes += 2 * lin.weight.numel()
        report.packed_bytes += mod.packed_bytes
        _set_module(model, name, mod.to(lin.weight.device))
        report.swapped.append(name)
        kinds.add(kind)
    report.method = "gguf " + "/".join(sorted(kinds))
    report.seconds = time.perf_counter() - start
    return report
