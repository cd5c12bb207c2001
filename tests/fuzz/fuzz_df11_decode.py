"""Fuzz target: df11_decode / df11_linear on arbitrary containers (code
lengths, stream bytes, chunk index, sign+mantissa) as read from a file.
Oracle: a clear error, or exactly what the plain-Python reference decoder
makes of the same container (which itself rejects anything inconsistent)."""
from __future__ import annotations

import torch

from llmpack import _lib, _ops
from llmpack.reference import df11 as ref

from _fuzz import Input, Seed, expect_clear_error, same_bits, uint8_tensor

NAMES = ("lengths", "stream", "offsets", "sign_mantissa", "chunk", "out", "x")
ISAS = _lib.supported_isas()


def seeds():
    out = []
    for n, seed in [(5, 0), (2048, 1), (2500, 2), (4200, 3)]:
        g = torch.Generator().manual_seed(seed)
        w = (torch.randn(n, generator=g) * 0.02).bfloat16()
        lengths, stream, offsets, sm = ref.encode(w)
        out.append(Seed().int_in(0, n).byte(0).byte(0).raw(lengths.numpy().tobytes())
                   .raw(offsets.view(torch.uint8).numpy().tobytes()).raw(stream.numpy().tobytes()).bytes())
    return out


def TestOneInput(data: bytes):
    src = Input(data)
    n = src.int_in(0, 4200)
    _lib.set_isa(src.choice(ISAS))
    mode = src.byte() % 4
    lengths = uint8_tensor(src.take(256), (256,))
    chunks = (n + 2047) // 2048
    offsets = uint8_tensor(src.take(4 * (chunks + 1)), (4 * (chunks + 1),)).view(torch.uint32)
    end = int(offsets[-1]) if chunks else 0
    size = min(end + 16, 65536) if src.byte() % 8 else src.int_in(0, 4096)
    stream = uint8_tensor(src.take(size), (size,))
    sm = uint8_tensor(bytes(range(256)) * (n // 256 + 1), (n,))
    try:
        if mode == 3 and n and n % 8 == 0:
            x = torch.ones(1, 8, dtype=torch.bfloat16)
            _ops.df11_linear(x, lengths, stream, offsets, sm, n // 8)
            return
        out = _ops.df11_decode(lengths, stream, offsets, sm)
    except Exception as err:  # noqa: BLE001
        expect_clear_error(err, NAMES)
        if n > 600:  # the Python reference is slow: confirm rejections on small inputs only
            return
        try:
            ref.decode(lengths, stream, offsets, sm)
        except ValueError:
            return
        raise AssertionError(f"the op rejected a container the reference decodes: {err}")
    expected = ref.decode(lengths, stream, offsets, sm)
    assert same_bits(out, expected), "decoded values differ from the reference"
