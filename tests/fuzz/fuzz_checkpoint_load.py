"""Fuzz target: llmpack.load on a saved folder whose config.json or
safetensors header has been rewritten by the fuzzer (what a user gets from an
untrusted download). Oracle: a clear ValueError / FileNotFoundError naming
the file, module or tensor, or a model that loads (the mutation kept it
valid); never another exception, a crash or a huge allocation."""
from __future__ import annotations

import functools
import json
import os
import struct
import tempfile

import torch

import llmpack

from _fuzz import Input, expect_clear_error

NAMES = ("config.json", "tensor", "safetensors", "module", "checkpoint", "quantization_config", "alias")


@functools.lru_cache(maxsize=1)
def template() -> tuple[bytes, bytes, bytes]:
    """(config.json, safetensors header JSON, safetensors data) of a tiny 2:4 model."""
    from llmpack.models import tiny_llama

    model = tiny_llama(0, hidden_size=32, intermediate_size=64, layers=1, vocab_size=64)
    llmpack.sparsify(model, method="magnitude", progress=False)
    folder = tempfile.mkdtemp(prefix="llmpack-fuzz-ckpt-")
    llmpack.save(model, folder)
    config = open(os.path.join(folder, "config.json"), "rb").read()
    raw = open(os.path.join(folder, "model.safetensors"), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    return config, raw[8:8 + n], raw[8 + n:]


def seeds():
    config, header, _ = template()
    return [b"\x00" + config, b"\x01" + header, b"\x02" + header[:40]]


def TestOneInput(data: bytes):
    config, header, body = template()
    src = Input(data)
    mode = src.byte() % 3
    patch = src.rest()
    with tempfile.TemporaryDirectory(prefix="llmpack-fuzz-") as folder:
        if mode == 0:  # a rewritten config.json
            cfg_bytes, hdr = patch, header
        elif mode == 1:  # a rewritten safetensors header
            cfg_bytes, hdr = config, patch
        else:  # the header with its first bytes replaced
            cfg_bytes, hdr = config, patch + header[len(patch):]
        with open(os.path.join(folder, "config.json"), "wb") as f:
            f.write(cfg_bytes)
        with open(os.path.join(folder, "model.safetensors"), "wb") as f:
            f.write(struct.pack("<Q", len(hdr)) + hdr + body)
        try:
            model = llmpack.load(folder)
        except Exception as err:  # noqa: BLE001
            expect_clear_error(err if not isinstance(err, FileNotFoundError) else ValueError(str(err)), NAMES)
            return
    with torch.no_grad():
        out = model(torch.zeros(1, 3, dtype=torch.long)).logits
    assert out.shape[:2] == (1, 3)
