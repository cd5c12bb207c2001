"""Fuzz target: df11_decode_official on official-layout tensors (luts,
encoded_exponent, output_positions, gaps) as read from an official DFloat11
safetensors file, fuzzer-rewritten. Oracle: a clear error, or the same
values as the model of the official GPU kernel (reference) on the same bytes."""
from __future__ import annotations

import torch

from llmpack import _ops
from llmpack.reference import df11 as ref

from _fuzz import Input, Seed, expect_clear_error, same_bits, uint8_tensor

NAMES = ("luts", "encoded_exponent", "sign_mantissa", "output_positions", "gaps", "block", "exponent",
         "bytes_per_thread", "tables")
TPB = (4, 8, 16)


def seeds():
    out = []
    for n, tpb_i in [(40, 0), (500, 1), (3000, 2)]:
        g = torch.Generator().manual_seed(n)
        f = ref.to_official((torch.randn(n, generator=g) * 0.02).bfloat16(), 8, TPB[tpb_i])
        luts = f["luts"]
        out.append(Seed().int_in(0, n).byte(tpb_i).byte(luts.shape[0]).raw(luts.numpy().tobytes())
                   .int_in(0, f["encoded_exponent"].numel()).raw(f["encoded_exponent"].numpy().tobytes())
                   .int_in(0, f["output_positions"].numel()).raw(f["output_positions"].numpy().tobytes())
                   .raw(f["gaps"].numpy().tobytes()).bytes())
    return out


def TestOneInput(data: bytes):
    src = Input(data)
    n = src.int_in(0, 4000)
    tpb = src.choice(TPB)
    tables = 2 + src.byte() % 4
    luts = uint8_tensor(src.take(256 * tables), (tables, 256))
    n_enc = src.int_in(0, 3000)
    encoded = uint8_tensor(src.take(n_enc), (n_enc,))
    n_pos = src.int_in(0, 64)
    positions = uint8_tensor(src.take(n_pos), (n_pos,))
    gaps = uint8_tensor(src.rest()[:512], (min(512, max(0, len(data) - src.pos)),))
    sm = uint8_tensor(bytes(range(256)) * (n // 256 + 1), (n,))
    try:
        out = _ops.df11_decode_official(luts, encoded, sm, positions, gaps, 8, tpb)
    except Exception as err:  # noqa: BLE001
        expect_clear_error(err, NAMES)
        return
    # Accepted: the index was consistent, so the GPU kernel's model must agree.
    expected = ref.official_kernel_decode(luts, encoded, sm, positions, gaps, 8, tpb)
    assert same_bits(out, expected), "differs from the model of the official kernel"
