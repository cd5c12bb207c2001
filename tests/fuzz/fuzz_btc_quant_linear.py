"""Fuzz target: a QuantLinear (BTC bit planes, scales, zero points or
offsets, code sums, and an act-order module's input permutation) whose packed
tensors come from the fuzzer, as from an untrusted checkpoint: validate_loaded, then btc_linear (on the planes and on
their fields layout) / btc_unpack / btc_to_fields / btc_matmul_int on what passed. Oracle: a clear error naming the tensor, or
the reference's result on the same bytes (exact for the integer core and the
codes, data-scaled for the float path)."""
from __future__ import annotations

import torch

from llmpack import QuantLinear, _lib, _ops
from llmpack.reference import btc as ref

from _fuzz import Input, Seed, expect_clear_error, uint8_tensor

NAMES = ("planes", "code_sums", "zeros", "codes", "in_features", "wbits", "abits", "group_size", "overflow",
         "input_perm")
ISAS = _lib.supported_isas()
GROUPS = (32, 64, 128, -1)


def seeds():
    out = []
    for k, n, wb, gi in [(40, 3, 4, 0), (97, 2, 2, 1), (130, 1, 8, 3), (33, 4, 3, 2)]:
        g = torch.Generator().manual_seed(k)
        codes = torch.randint(0, 2**wb, (n, k), generator=g, dtype=torch.uint8)
        planes, sums = _ops.btc_pack(codes, wb, GROUPS[gi])
        seed = (Seed().int_in(1, k).int_in(1, n).int_in(1, wb).byte(gi).byte(8).byte(0).byte(0)
                .raw(planes.numpy().tobytes()).raw(sums.numpy().tobytes()).raw(bytes(n * len(sums[0]))))
        out.append(seed.bytes())
        perm = seed.byte(1)   # the same module in act order: a real permutation of its inputs
        for i in torch.randperm(k, generator=g).tolist():
            perm = perm.int_in(0, i)
        out.append(perm.bytes())
    return out


def TestOneInput(data: bytes):
    src = Input(data)
    k, n, wb = src.int_in(1, 300), src.int_in(1, 8), src.int_in(1, 8)
    gs = GROUPS[src.byte() % 4]
    abits = (16, 8, 4, 2, 1, 3, 5, 7)[src.byte() % 8]
    zero_point = src.byte() % 2 == 0
    _lib.set_isa(src.choice(ISAS))
    mod = QuantLinear(k, n, bias=False, wbits=wb, abits=abits, group_size=gs, zero_point=zero_point)
    mod.planes = uint8_tensor(src.take(mod.planes.numel() * 4), (mod.planes.numel() * 4,)).view(torch.int32) \
        .view(mod.planes.shape)
    mod.code_sums = uint8_tensor(src.take(mod.code_sums.numel() * 4), (mod.code_sums.numel() * 4,)) \
        .view(torch.int32).view(mod.code_sums.shape)
    g = torch.Generator().manual_seed(k * 8 + n)
    mod.scales = (torch.rand(mod.scales.shape, generator=g) * 0.1).half()
    if zero_point:
        mod.zeros = uint8_tensor(src.take(mod.zeros.numel()), mod.zeros.shape)
    else:
        mod.offsets = torch.randn(mod.offsets.shape, generator=g).half()
    perm = None
    if src.byte() % 2:   # act order: entries may repeat or fall outside 0 .. k - 1
        perm = torch.tensor([src.int_in(0, k + 1) for _ in range(k)])
        mod.act_order, mod.input_perm = True, perm
    try:
        mod.validate_loaded("fuzz")
    except ValueError as err:
        expect_clear_error(err, NAMES)
        return
    codes = mod.codes()
    assert torch.equal(codes, ref.unpack_planes(mod.planes, wb, k)), "btc_unpack differs from the reference"
    x = torch.randn(3, k, generator=g)
    try:
        y = mod(x)
        if perm is not None:   # what the kernel sees: the inputs gathered into the codes' column order
            x = x[:, perm]
    except RuntimeError as err:   # e.g. a per-channel group too long for the int32 core
        expect_clear_error(err, NAMES)
        return
    want = ref.linear(x, codes, mod.scales, mod.zeros, mod.offsets, abits=abits, group_size=gs)
    scale = (x.abs().double() @ ref.dequantize(codes, mod.scales, mod.zeros, mod.offsets, gs).abs().T).max()
    assert ((y.double() - want.double()).abs() <= 1e-4 * scale + 1e-6).all(), "btc_linear differs from the reference"
    fields = _ops.btc_to_fields(mod.planes, wb)
    assert torch.equal(fields, ref.pack_fields(codes, wb)), "btc_to_fields differs from the reference"
    assert torch.equal(_ops.btc_to_planes(fields, wb), mod.planes), "btc_to_planes does not invert btc_to_fields"
    y_fields = _ops.btc_linear(x, fields, mod.scales, mod.zeros, mod.offsets, mod.code_sums, wb, abits, gs)
    assert torch.equal(y_fields, y), "btc_linear on the fields layout differs from the planes"
    if abits != 16:
        xc, _, _ = ref.quantize_activations(x, abits)
        got = _ops.btc_matmul_int(ref.pack_planes(xc, abits), mod.planes, abits, wb, gs, k)
        assert torch.equal(got, ref.matmul_int(xc, codes, gs)), "integer core differs from the reference"
