"""BTC ops on the CPU against python/llmpack/reference/btc.py: the packer and
the activation quantizer bit for bit, the integer core bit for bit for every
(wbits, abits) in 1..8 x 1..8 at every ISA level, the linear layer with
data-scaled tolerances, opcheck + compile, and one clear error per bad input."""
import pytest
import torch

from conftest import assert_close_dot, check_op

from llmpack._ops import btc_scaled_sums
from llmpack.reference import btc as R

ops = torch.ops.llmpack
GROUPS = (32, 64, 128, -1)


def codes(rows, k, bits, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2**bits, (rows, k), generator=g, dtype=torch.uint8)


def weight(n, k, wbits, group_size, form="zero", scale_dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    groups = R.num_groups(group_size, k)
    c = codes(n, k, wbits, seed)
    scales = (torch.rand(n, groups, generator=g) * 0.05 + 0.005).to(scale_dtype)
    zeros = torch.randint(0, 2**wbits, (n, groups), generator=g, dtype=torch.uint8) if form == "zero" else None
    offsets = (torch.randn(n, groups, generator=g) * 0.05).to(scale_dtype) if form == "offset" else None
    planes, sums = ops.btc_pack(c, wbits, group_size)
    return c, planes, scales, zeros, offsets, sums


# ---- packer ---------------------------------------------------------------------
@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("k", [1, 31, 33, 97, 128, 300])
def test_pack_matches_reference_and_unpacks(bits, k):
    c = codes(7, k, bits, seed=bits * 1000 + k)
    planes, sums = ops.btc_pack(c, bits, 32)
    assert torch.equal(planes, R.pack_planes(c, bits))
    assert torch.equal(sums, R.group_sums(c, 32))
    assert torch.equal(ops.btc_unpack(planes, bits, k), c)


def test_bit_order_is_documented_one():
    # Element e of a chunk sits at bit 8 (e % 4) + e / 4 (csrc/btc/btc.h).
    for e in (0, 1, 4, 5, 31):
        c = torch.zeros(1, 32, dtype=torch.uint8)
        c[0, e] = 1
        word = int(ops.btc_pack(c, 1, 32)[0][0, 0, 0]) & 0xFFFFFFFF
        assert word == 1 << (8 * (e % 4) + e // 4)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("k", [1, 33, 300])
def test_fields_match_reference_and_round_trip(bits, k):
    c = codes(5, k, bits, seed=bits * 7 + k)
    planes = ops.btc_pack(c, bits, 32)[0]
    fields = ops.btc_to_fields(planes, bits)
    assert fields.dtype == torch.uint8 and fields.shape == (5, planes.shape[1], 4 * bits)
    assert torch.equal(fields, R.pack_fields(c, bits))
    assert torch.equal(ops.btc_to_planes(fields, bits), planes)


def test_fields_layout_is_documented_one():
    # W7 = a nibble field (bytes 0..15), a crumb field (16..23), a plane word (24..27).
    c = torch.zeros(1, 32, dtype=torch.uint8)
    c[0, 17], c[0, 9], c[0, 5] = 0x0A, 0x20, 0x40    # high nibble of byte 1; crumb s=1 j=1; plane bit 8*1+1
    f = ops.btc_to_fields(ops.btc_pack(c, 7, 32)[0], 7)[0, 0]
    assert int(f[1]) == 0xA0 and int(f[16 + 1]) == 0b10 << 2
    assert int.from_bytes(bytes(f[24:28].tolist()), "little") == 1 << (8 * (5 % 4) + 5 // 4)
    assert int(f.sum()) == 0xA0 + (0b10 << 2) + 2     # bit 9 of the plane word = bit 1 of its byte 1


@pytest.mark.parametrize("group_size", GROUPS)
def test_group_sums(group_size):
    c = codes(5, 300, 8, seed=3)
    assert torch.equal(ops.btc_pack(c, 8, group_size)[1], R.group_sums(c, group_size))


# ---- activation quantizer -----------------------------------------------------------
@pytest.mark.parametrize("abits,symmetric", [(a, s) for a in range(1, 9) for s in (False, True)
                                              if not (s and a == 1)])   # symmetric needs abits >= 2
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_quantize_activations_bit_exact(abits, symmetric, dtype):
    x = (torch.randn(6, 97, generator=torch.Generator().manual_seed(abits)) * 3).to(dtype)
    x[2] = 0.0          # zero range -> scale 1
    x[3, :50] = 1.5     # ties and repeats
    # x / scale past 2^22, where the kernel's rounding shortcut ends (fp16: as far as it reaches)
    big = 3e4 if dtype == torch.float16 else 1e6
    x[4] = big + x[4].float() * 1e-2
    x[5, :40] = big * (1.0 if dtype == torch.float16 else 7e24)   # a constant row: scale 1
    planes, scales, zeros, sums = ops.btc_quantize_activations(x, abits, 32, symmetric)
    c, s, z = R.quantize_activations(x, abits, symmetric)
    assert torch.equal(R.unpack_planes(planes, abits, 97), c)
    assert torch.equal(scales, s) and torch.equal(zeros, z)
    assert torch.equal(sums, R.group_sums(c, 32))


def test_quantize_activations_non_finite_token_gives_nan_scale():
    x = torch.randn(3, 40)
    x[1, 5] = float("inf")
    planes, scales, zeros, _ = ops.btc_quantize_activations(x, 8, 32, False)
    assert torch.isnan(scales[1]) and not torch.isnan(scales[[0, 2]]).any()
    assert int(zeros[1]) == 0 and not R.unpack_planes(planes, 8, 40)[1].any()


# ---- the exact integer core -----------------------------------------------------------
@pytest.mark.parametrize("wbits", range(1, 9))
@pytest.mark.parametrize("abits", range(1, 9))
def test_matmul_int_every_width_bit_exact(isa, wbits, abits):
    k = 97
    xc, wc = codes(3, k, abits, seed=wbits), codes(5, k, wbits, seed=abits + 50)
    out = ops.btc_matmul_int(R.pack_planes(xc, abits), ops.btc_pack(wc, wbits, 32)[0], abits, wbits, 32, k)
    assert torch.equal(out, R.matmul_int(xc, wc, 32))


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 7, 7), (1, 97, 4095), (4, 3, 4095), (97, 7, 97), (5, 9, 300)])
@pytest.mark.parametrize("wbits,abits", [(2, 8), (4, 8), (3, 5), (8, 8), (8, 6), (1, 1), (7, 8)])
@pytest.mark.parametrize("group_size", GROUPS)
def test_matmul_int_odd_shapes(isa, m, n, k, wbits, abits, group_size):
    xc, wc = codes(m, k, abits, seed=m + k), codes(n, k, wbits, seed=n + k + 1)
    out = ops.btc_matmul_int(R.pack_planes(xc, abits), ops.btc_pack(wc, wbits, group_size)[0], abits, wbits,
                             group_size, k)
    assert torch.equal(out, R.matmul_int(xc, wc, group_size))


def test_matmul_int_extremes(isa):
    # All codes at their maximum: the largest sums each method must hold exactly.
    for wbits, abits in [(8, 8), (7, 8), (6, 7), (4, 8)]:
        xc = torch.full((2, 4095), 2**abits - 1, dtype=torch.uint8)
        wc = torch.full((3, 4095), 2**wbits - 1, dtype=torch.uint8)
        out = ops.btc_matmul_int(R.pack_planes(xc, abits), ops.btc_pack(wc, wbits, 128)[0], abits, wbits, 128, 4095)
        assert torch.equal(out, R.matmul_int(xc, wc, 128))


def test_matmul_int_ignores_activation_bits_past_k():
    k = 40
    xc, wc = codes(2, k, 4), codes(3, k, 4, seed=1)
    xp = R.pack_planes(xc, 4)
    past = sum(1 << R.bit_of(e) for e in range(8, 32))          # elements 40..63 of word 1
    xp[:, 1, :] |= torch.tensor(past - (1 << 32 if past >= 1 << 31 else 0), dtype=torch.int32)
    w = ops.btc_pack(wc, 4, 32)[0]
    assert torch.equal(ops.btc_matmul_int(xp, w, 4, 4, 32, k), R.matmul_int(xc, wc, 32))


# ---- linear -------------------------------------------------------------------------------
def check_linear(x, wc, planes, scales, zeros, offsets, sums, wbits, abits, group_size, bias=None, sym=False):
    y = ops.btc_linear(x, planes, scales, zeros, offsets, sums, wbits, abits, group_size, bias, sym)
    # The fields layout holds the same codes: the same arithmetic, the same bits.
    fields = ops.btc_to_fields(planes, wbits)
    assert torch.equal(ops.btc_linear(x, fields, scales, zeros, offsets, sums, wbits, abits, group_size, bias, sym), y)
    ref = R.linear(x, wc, scales, zeros, offsets, abits=abits, group_size=group_size, bias=bias, act_symmetric=sym)
    w = R.dequantize(wc, scales, zeros, offsets, group_size)
    x2 = x.reshape(-1, x.shape[-1]).double()
    if abits != 16:
        # The integer core and its corrections are combined in fp32: the bound
        # scales with the terms they hold, s q (p - 128), s zx Q, m P, not with
        # the (smaller) dequantized products.
        c, s, z = R.quantize_activations(x2, abits, sym)
        x2 = s.double()[:, None] * (c.double() + z.double()[:, None] + 128)
        size = x.shape[-1] if group_size < 0 else group_size
        per = lambda t: t.double().repeat_interleave(size, 1)[:, :x.shape[-1]]  # noqa: E731
        w = per(scales).abs() * (wc.double() + (per(zeros) if zeros is not None else 0)) + \
            (per(offsets).abs() if offsets is not None else 0)
    magnitude = (x2.abs() @ w.abs().T).reshape(ref.shape) + (0 if bias is None else bias.double().abs())
    # The corrections are applied per group in fp32: a few more roundings than a plain dot.
    assert_close_dot(y, ref, 4 * magnitude, x.shape[-1])
    # The row sums the caller may precompute (QuantLinear caches them): the same value, rounded elsewhere.
    y_given = ops.btc_linear(x, fields, scales, zeros, offsets, sums, wbits, abits, group_size, bias, sym,
                             btc_scaled_sums(scales, sums))
    assert_close_dot(y_given, ref, 4 * magnitude, x.shape[-1])
    return y


@pytest.mark.parametrize("wbits", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("abits", [16, 2, 4, 8])
@pytest.mark.parametrize("form", ["zero", "offset"])
@pytest.mark.parametrize("group_size", GROUPS)
def test_linear_matches_reference(isa, wbits, abits, form, group_size):
    n, k = 9, 300
    wc, planes, scales, zeros, offsets, sums = weight(n, k, wbits, group_size, form, seed=wbits + abits)
    x = torch.randn(6, k, generator=torch.Generator().manual_seed(abits))
    check_linear(x, wc, planes, scales, zeros, offsets, sums, wbits, abits, group_size, torch.randn(n))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("abits", [16, 8])
def test_linear_dtypes(isa, dtype, scale_dtype, abits):
    n, k = 7, 97
    wc, planes, scales, zeros, offsets, sums = weight(n, k, 4, 32, "offset", scale_dtype)
    x = torch.randn(2, 3, k).to(dtype)
    y = check_linear(x, wc, planes, scales, zeros, offsets, sums, 4, abits, 32, torch.randn(n).to(dtype))
    assert y.shape == (2, 3, n) and y.dtype == dtype


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 97, 4095), (7, 7, 7), (16, 33, 256), (5, 4, 4095)])
@pytest.mark.parametrize("abits", [16, 8, 4])
def test_linear_odd_shapes(isa, m, n, k, abits):
    wc, planes, scales, zeros, offsets, sums = weight(n, k, 4, 128, "zero", seed=m + n + k)
    check_linear(torch.randn(m, k), wc, planes, scales, zeros, offsets, sums, 4, abits, 128)


@pytest.mark.parametrize("group_size", [32, 64, -1])
@pytest.mark.parametrize("wbits,abits", [(4, 8), (4, 4), (3, 8), (8, 8), (8, 7), (2, 5)])
def test_linear_chunk_left_over_from_pairs(isa, wbits, abits, group_size):
    # K = 150: 5 chunks of 32, so the two-chunk (zmm) cores leave one over, in
    # the row (groups of 32), in the last group (64) and in the whole row
    # (per channel); 5 tokens: a block of 4 and a single one. (8, 7) and (8, 8):
    # sums past int16, exact only where the core skips the int16 step.
    wc, planes, scales, zeros, offsets, sums = weight(7, 150, wbits, group_size, "zero", seed=wbits * abits)
    check_linear(torch.randn(5, 150), wc, planes, scales, zeros, offsets, sums, wbits, abits, group_size)


def test_linear_symmetric_activations(isa):
    wc, planes, scales, zeros, offsets, sums = weight(5, 200, 3, 64, "zero")
    check_linear(torch.randn(4, 200), wc, planes, scales, zeros, offsets, sums, 3, 6, 64, sym=True)


def test_linear_empty_batch():
    _, planes, scales, zeros, offsets, sums = weight(5, 64, 4, 32)
    assert ops.btc_linear(torch.randn(0, 64), planes, scales, zeros, offsets, sums, 4, 8, 32).shape == (0, 5)


# ---- opcheck + compile -------------------------------------------------------------------------
def test_opcheck_and_compile():
    wc, planes, scales, zeros, offsets, sums = weight(5, 97, 4, 32, "offset")
    x = torch.randn(3, 97)
    check_op(ops.btc_linear.default, (x, planes, scales, None, offsets, sums, 4, 8, 32, None, False))
    check_op(ops.btc_linear.default, (x, planes, scales, None, offsets, sums, 4, 16, 32, torch.randn(5), False))
    check_op(ops.btc_pack.default, (wc, 4, 32))
    check_op(ops.btc_unpack.default, (planes, 4, 97))
    check_op(ops.btc_to_fields.default, (planes, 4))
    check_op(ops.btc_to_planes.default, (ops.btc_to_fields(planes, 4), 4))
    check_op(ops.btc_linear.default, (x, ops.btc_to_fields(planes, 4), scales, None, offsets, sums, 4, 8, 32, None,
                                      False))
    check_op(ops.btc_linear.default, (x, ops.btc_to_fields(planes, 4), scales, None, offsets, sums, 4, 8, 32, None,
                                      False, btc_scaled_sums(scales, sums)))
    check_op(ops.btc_quantize_activations.default, (x, 8, 32, False))
    xp = ops.btc_quantize_activations(x, 8, 32)[0]
    check_op(ops.btc_matmul_int.default, (xp, planes, 8, 4, 32, 97))


# ---- bad input: one clear error each ---------------------------------------------------------------
def test_bad_inputs():
    wc, planes, scales, zeros, offsets, sums = weight(5, 97, 4, 32)
    x = torch.randn(2, 97)
    lin = lambda *a, **kw: ops.btc_linear(*a, **kw)  # noqa: E731
    with pytest.raises(RuntimeError, match="wbits must be in 1..8"):
        ops.btc_linear(x, planes, scales, zeros, None, sums, 9, 8, 32)
    with pytest.raises(RuntimeError, match="abits must be in 1..8, or 16"):
        ops.btc_linear(x, planes, scales, zeros, None, sums, 4, 12, 32)
    with pytest.raises(RuntimeError, match="group_size must be 32, 64, 128 or -1"):
        ops.btc_linear(x, planes, scales, zeros, None, sums, 4, 8, 48)
    with pytest.raises(RuntimeError, match=r"planes must be \[rows, 8, 4\] for K = 200 and 4 bits, got \[5, 4, 4\]"):
        ops.btc_linear(torch.randn(2, 200), planes, scales, zeros, None, sums, 4, 8, 32)
    with pytest.raises(RuntimeError, match="planes must be \\[rows, 4, 3\\]"):
        ops.btc_linear(x, planes, scales, zeros, None, sums, 3, 8, 32)
    with pytest.raises(RuntimeError, match="exactly one of zeros"):
        ops.btc_linear(x, planes, scales, zeros, scales, sums, 4, 8, 32)
    with pytest.raises(RuntimeError, match="exactly one of zeros"):
        ops.btc_linear(x, planes, scales, None, None, sums, 4, 8, 32)
    with pytest.raises(RuntimeError, match=r"scales must be \[5, 2\] \(2 groups of 64"):
        ops.btc_linear(x, planes, scales, zeros, None, sums, 4, 8, 64)
    with pytest.raises(RuntimeError, match="zeros must be uint8"):
        ops.btc_linear(x, planes, scales, zeros.int(), None, sums, 4, 8, 32)
    with pytest.raises(RuntimeError, match="code_sums must be int32"):
        ops.btc_linear(x, planes, scales, zeros, None, sums.long(), 4, 8, 32)
    with pytest.raises(RuntimeError, match=r"scaled_sums must be \[5\] \(one per row of planes\), got \[4\]"):
        ops.btc_linear(x, planes, scales, zeros, None, sums, 4, 8, 32, None, False, torch.zeros(4))
    with pytest.raises(RuntimeError, match="scaled_sums must be float32"):
        ops.btc_linear(x, planes, scales, zeros, None, sums, 4, 8, 32, None, False, torch.zeros(5).double())
    with pytest.raises(RuntimeError, match="x must be float32 or bfloat16 or float16"):
        ops.btc_linear(x.double(), planes, scales, zeros, None, sums, 4, 8, 32)
    with pytest.raises(RuntimeError, match="planes must be int32"):
        ops.btc_linear(x, planes.long(), scales, zeros, None, sums, 4, 8, 32)
    with pytest.raises(RuntimeError, match="bias must be \\[5\\]"):
        ops.btc_linear(x, planes, scales, zeros, None, sums, 4, 8, 32, torch.randn(4))
    with pytest.raises(RuntimeError, match="bias must have x's dtype"):
        ops.btc_linear(x, planes, scales, zeros, None, sums, 4, 8, 32, torch.randn(5).double())
    with pytest.raises(RuntimeError, match="symmetric activations need abits >= 2"):
        lin(x, planes, scales, zeros, None, sums, 4, 1, 32, None, True)
    with pytest.raises(RuntimeError, match=r"codes\[1, 3\] = 16 does not fit 4 bits"):
        bad = wc.clone()
        bad[1, 3] = 16
        ops.btc_pack(bad, 4, 32)
    with pytest.raises(RuntimeError, match=r"planes\[2, 3, 0\] has bits set past in_features = 97"):
        bad = planes.clone()
        bad[2, 3, 0] |= 1 << 1    # element 4 of word 3 = input 100
        ops.btc_unpack(bad, 4, 97)
    fields = ops.btc_to_fields(planes, 4)
    with pytest.raises(RuntimeError, match=r"planes must be \[rows, 4, 12\] \(the fields of 3-bit codes\)"):
        ops.btc_linear(x, fields, scales, zeros, None, sums, 3, 8, 32)
    with pytest.raises(RuntimeError, match="btc_to_fields: planes must be int32"):
        ops.btc_to_fields(fields, 4)
    with pytest.raises(RuntimeError, match=r"btc_to_planes: fields must be \[rows, k_words, 12\]"):
        ops.btc_to_planes(fields, 3)
    with pytest.raises(RuntimeError, match="k_words a multiple of 4"):
        ops.btc_to_fields(planes[:, :3].contiguous(), 4)
    with pytest.raises(RuntimeError, match="can overflow the int32 core"):
        big = ops.btc_pack(torch.zeros(1, 40000, dtype=torch.uint8), 8, -1)[0]
        ops.btc_matmul_int(ops.btc_quantize_activations(torch.randn(1, 40000), 8, -1)[0], big, 8, 8, -1, 40000)
