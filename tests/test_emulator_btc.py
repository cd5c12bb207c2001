"""The BTC CUDA kernels (csrc/btc/btc_cuda.cu: binary-MMA integer core,
activation quantizer, linear epilogue, weight-only path), run on the CPU
through the SIMT emulator and compared with python/llmpack/reference/btc.py.

torch.ops.llmpack_simt.btc_* is the real CUDA path (argument checks,
allocation, LLMPACK_LAUNCH, kernels, mma.m16n8k256.and.popc emulated from the
PTX ISA's fragment tables) on CPU tensors; the tests skip when the emulator
library is not built (scripts/build_simt.sh), as the other emulator tests do.

* btc_matmul_int: bit-exact for all 64 (wbits, abits) on an odd shape, and at
  odd M / N / K (1, 7, 97, 4095 ...) for every group size, under three
  thread/block schedules.
* btc_quantize_activations: planes, scales, zeros and code sums bit-exact
  (constant rows, non-finite rows, half-way ties, symmetric, every float dtype).
* btc_linear: vs reference.linear with data-scaled tolerances (fp32/bf16/fp16
  x, zero-point and offset weights, fp32/fp16/bf16 scales, groups 32/64/128/-1,
  bias, abits 16 and < 16, symmetric activations), NaN rows, errors.
"""
from __future__ import annotations

import itertools
import os
import sys

import pytest
import torch

from llmpack.reference import btc as ref

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "simt"))
import simt_support as simt  # noqa: E402
from conftest import assert_close_dot  # noqa: E402

GROUPS = (32, 64, 128, -1)
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@pytest.fixture(scope="module")
def ops():
    return simt.load_ops()


@pytest.fixture(params=simt.SCHEDULES)
def schedule(request, ops):
    ops.set_schedule(request.param)
    yield request.param
    ops.set_schedule("forward")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def codes(rows: int, k: int, bits: int, seed: int) -> torch.Tensor:
    """Random codes with the extremes (0 and 2^bits - 1) forced in somewhere."""
    c = torch.randint(0, 2**bits, (rows, k), generator=gen(seed), dtype=torch.int64)
    if rows and k:
        c[0, 0] = 2**bits - 1
        c[-1, -1] = 0
        c[rows // 2, :] = torch.where(torch.arange(k) % 3 == 0, 2**bits - 1, c[rows // 2, :])
    return c.to(torch.uint8)


def run_int(ops, m, n, k, wbits, abits, gs, seed=0):
    xc, wc = codes(m, k, abits, seed), codes(n, k, wbits, seed + 1)
    before = ops.counters()["launches"]
    got = ops.btc_matmul_int(ref.pack_planes(xc, abits), ref.pack_planes(wc, wbits), abits, wbits, gs, k)
    if m * n:
        assert ops.counters()["launches"] == before + 1, "expected one kernel launch"
    want = ref.matmul_int(xc, wc, gs)
    assert got.dtype == torch.int32 and got.shape == (m, n, ref.num_groups(gs, k))
    assert torch.equal(got, want), f"I differs at {int((got != want).sum())} of {want.numel()} places"


# ---- the integer core (binary MMA) ----------------------------------------------------------------
@pytest.mark.parametrize("wbits,abits", list(itertools.product(range(1, 9), range(1, 9))))
def test_matmul_int_every_bit_width(ops, wbits, abits):
    # 7 tokens x 17 rows: partial tiles both ways; K = 97: a partial last word.
    gs = GROUPS[(wbits + abits) % 4]
    run_int(ops, 7, 17, 97, wbits, abits, gs, seed=wbits * 10 + abits)


ODD_SHAPES = [(1, 1, 1), (1, 7, 97), (7, 1, 33), (97, 7, 129), (16, 16, 256), (9, 97, 300), (8, 64, 384),
              (17, 65, 31)]


@pytest.mark.parametrize("gs", GROUPS)
@pytest.mark.parametrize("m,n,k", ODD_SHAPES)
def test_matmul_int_odd_shapes(ops, m, n, k, gs):
    wbits, abits = ((3, 5), (8, 8), (1, 2), (4, 4))[(m + n + k) % 4]
    run_int(ops, m, n, k, wbits, abits, gs, seed=m + n + k)


@pytest.mark.parametrize("gs", GROUPS)
@pytest.mark.parametrize("wbits,abits", ((3, 2), (8, 8), (1, 7)))
def test_matmul_int_long_k(ops, wbits, abits, gs):
    run_int(ops, 9, 20, 4095, wbits, abits, gs, seed=4095 + wbits)


@pytest.mark.parametrize("case", [(7, 17, 97, 4, 3, 32), (9, 130, 260, 2, 2, -1), (20, 33, 129, 8, 1, 64)])
def test_matmul_int_schedules(ops, schedule, case):
    m, n, k, wb, ab, gs = case
    run_int(ops, m, n, k, wb, ab, gs, seed=sum(case))


def test_matmul_int_ignores_activation_padding_bits(ops):
    # The CPU path decodes activation codes only up to K; the CUDA kernel masks the rest.
    m, n, k = 3, 5, 40
    xc, wc = codes(m, k, 3, 1), codes(n, k, 2, 2)
    xp = ref.pack_planes(xc, 3)
    wp = ref.pack_planes(wc, 2)
    pad = sum(1 << int(ref.bit_of(e)) for e in range(8, 32))   # elements 40..63 of word 1
    pad = torch.tensor(pad - (1 << 32) if pad >= 1 << 31 else pad, dtype=torch.int32)
    for p in (xp, wp):                                         # padding bits set in both operands
        p[:, 1, :] |= pad
        p[:, 2:, :] = -1
    got = ops.btc_matmul_int(xp, wp, 3, 2, 32, k)
    assert torch.equal(got, ref.matmul_int(xc, wc, 32))


def test_matmul_int_empty(ops):
    before = ops.counters()["launches"]
    out = ops.btc_matmul_int(torch.zeros(0, 4, 2, dtype=torch.int32), torch.zeros(3, 4, 1, dtype=torch.int32),
                             2, 1, 32, 100)
    assert out.shape == (0, 3, 4) and ops.counters()["launches"] == before


# ---- activation quantizer ---------------------------------------------------------------------------
def check_quant(ops, x, abits, gs, symmetric):
    planes, scales, zeros, sums = ops.btc_quantize_activations(x, abits, gs, symmetric)
    x2 = x.reshape(-1, x.shape[-1])
    c, s, z = ref.quantize_activations(x2, abits, symmetric)
    k = x.shape[-1]
    assert planes.shape == (x2.shape[0], ref.k_words(k), abits) and planes.dtype == torch.int32
    assert torch.equal(planes, ref.pack_planes(c, abits)), "planes differ (codes or padding)"
    assert torch.equal(ref.unpack_planes(planes, abits, k), c)
    nan = s.isnan()
    assert scales.dtype == torch.float32 and torch.equal(scales.isnan(), nan), "NaN scales differ"
    assert torch.equal(scales[~nan].view(torch.int32), s[~nan].view(torch.int32)), "scales differ"
    assert zeros.dtype == torch.int32 and torch.equal(zeros, z)
    assert torch.equal(sums, ref.group_sums(c, gs))
    return planes, scales, zeros, sums


QUANT_CASES = [(m, k, a, gs, sym, dt)
               for (m, k) in ((1, 1), (5, 97), (3, 300), (33, 31))
               for a, sym in ((1, False), (2, True), (4, False), (5, True), (8, False), (8, True))
               for gs in (32, -1) for dt in FLOAT_DTYPES
               if (m + k + a + gs + FLOAT_DTYPES.index(dt)) % 2 == 0]


@pytest.mark.parametrize("m,k,abits,gs,sym,dtype", QUANT_CASES)
def test_quantize_matches_reference(ops, m, k, abits, gs, sym, dtype):
    x = (torch.randn(m, k, generator=gen(m * k + abits)) * 3 + 0.5).to(dtype)
    check_quant(ops, x, abits, gs, sym)


@pytest.mark.parametrize("abits", (2, 3, 8))
@pytest.mark.parametrize("gs", (64, 128))
def test_quantize_special_rows(ops, schedule, abits, gs):
    k = 200
    x = torch.randn(7, k, generator=gen(abits))
    x[1] = 2.5                                                  # range 0: s = 1
    x[2] = 0.0
    x[3, 17] = float("inf")                                     # non-finite: s = NaN, codes 0
    x[4, 199] = float("nan")
    top = 2**abits - 1
    x[5] = (torch.arange(k) % (2 * top + 1)).float() * 0.5      # x / s lands on .5: ties to even
    x[6] = torch.linspace(-1e30, 3e38, k)                       # huge but finite range
    _, scales, zeros, sums = check_quant(ops, x, abits, gs, False)
    assert scales[1] == 1.0 and scales[3].isnan() and scales[4].isnan()
    assert zeros[3] == 0 and (sums[3] == 0).all()
    check_quant(ops, x, abits, gs, True)


def test_quantize_3d_input_and_range_overflow(ops):
    x = torch.randn(2, 3, 70, generator=gen(5)).half()
    check_quant(ops, x, 4, 32, False)
    y = torch.zeros(2, 40)
    y[0, 0], y[0, 1] = 3e38, -3e38                              # hi - lo overflows: s = inf -> NaN
    _, s, _, _ = check_quant(ops, y, 4, 32, False)
    assert s[0].isnan() and s[1] == 1.0


# ---- linear -----------------------------------------------------------------------------------------
def make_weight(n, k, wbits, gs, scale_dtype, form, seed):
    q = codes(n, k, wbits, seed)
    g = ref.num_groups(gs, k)
    s = (torch.rand(n, g, generator=gen(seed + 1)) * 0.05 + 0.01).to(scale_dtype)
    s[0, 0] = -s[0, 0]                                          # a negative scale too
    if form == "zeros":
        z = torch.randint(0, 2**wbits, (n, g), generator=gen(seed + 2), dtype=torch.int64).to(torch.uint8)
        return q, ref.pack_planes(q, wbits), s, z, None, ref.group_sums(q, gs)
    m = (torch.randn(n, g, generator=gen(seed + 3)) * 0.1).to(scale_dtype)
    return q, ref.pack_planes(q, wbits), s, None, m, ref.group_sums(q, gs)


def check_linear(ops, x, wbits, abits, gs, scale_dtype, form, with_bias, sym=False, seed=0):
    n, k = 19, x.shape[-1]
    q, planes, s, z, off, cs = make_weight(n, k, wbits, gs, scale_dtype, form, seed)
    bias = (torch.randn(n, generator=gen(seed + 9))).to(x.dtype) if with_bias else None
    before = ops.counters()["launches"]
    y = ops.btc_linear(x, planes, s, z, off, cs, wbits, abits, gs, bias, sym)
    assert ops.counters()["launches"] - before == (1 if abits == 16 else 2)
    want = ref.linear(x, q, s, z, off, abits=abits, group_size=gs, bias=bias, act_symmetric=sym)
    # Magnitude of the summed terms: |x| |W| (zero point: the integer core is exact), |x| (|s| q + |m|)
    # for offsets (the two epilogue terms are rounded separately).
    x2 = x.reshape(-1, k)
    if abits == 16:
        xd = x2.double()
    else:
        c, sx, zx = ref.quantize_activations(x2, abits, sym)
        xd = sx.double()[:, None] * (c.double() - zx.double()[:, None])
    if form == "zeros":
        wmag = ref.dequantize(q, s, z, None, gs).abs()
    else:
        wmag = ref.dequantize(q, s.abs(), None, off.abs(), gs)
    mag = xd.abs() @ wmag.T
    if bias is not None:
        mag = mag + bias.double().abs()
    want2, y2 = want.reshape(-1, n), y.reshape(-1, n)
    fin = torch.isfinite(want2).all(-1)
    assert_close_dot(y2[fin], want2[fin], mag[fin].nan_to_num(0), k)
    assert y2[~fin].isnan().all(), "a non-finite token must give NaN outputs"
    assert y.shape == want.shape and y.dtype == x.dtype


LINEAR_CASES = [(m, k, wb, ab, gs, xdt, sdt, form, bias)
                for (m, k) in ((1, 97), (7, 256), (9, 33))
                for wb, ab in ((4, 8), (2, 4), (8, 16), (3, 16), (1, 3))
                for gs in GROUPS
                for xdt in FLOAT_DTYPES for sdt in FLOAT_DTYPES
                for form in ("zeros", "offsets") for bias in (False, True)]
# A spread-out subset: every value of every axis, many combinations, a bounded count.
LINEAR_CASES = LINEAR_CASES[::11]


@pytest.mark.parametrize("m,k,wbits,abits,gs,xdt,sdt,form,bias", LINEAR_CASES)
def test_linear_matches_reference(ops, m, k, wbits, abits, gs, xdt, sdt, form, bias):
    x = torch.randn(m, k, generator=gen(m + k + wbits)).to(xdt)
    check_linear(ops, x, wbits, abits, gs, sdt, form, bias, seed=m * k + wbits + abits)


def test_linear_cases_cover_every_axis():
    for axis in range(9):
        full = {c[axis] for c in [(m, k, wb, ab, gs, xd, sd, f, b)
                                  for (m, k) in ((1, 97), (7, 256), (9, 33))
                                  for wb, ab in ((4, 8), (2, 4), (8, 16), (3, 16), (1, 3))
                                  for gs in GROUPS for xd in FLOAT_DTYPES for sd in FLOAT_DTYPES
                                  for f in ("zeros", "offsets") for b in (False, True)]}
        assert {c[axis] for c in LINEAR_CASES} == full, axis


@pytest.mark.parametrize("form", ("zeros", "offsets"))
@pytest.mark.parametrize("abits", (4, 8, 16))
def test_linear_schedules_and_3d(ops, schedule, form, abits):
    x = torch.randn(2, 5, 300, generator=gen(abits)).bfloat16()
    check_linear(ops, x, 4, abits, 128, torch.float16, form, True, seed=abits)


@pytest.mark.parametrize("abits", (2, 4, 8))
def test_linear_symmetric_acts(ops, abits):
    x = torch.randn(6, 130, generator=gen(abits)).half()
    check_linear(ops, x, 3, abits, 64, torch.bfloat16, "zeros", False, sym=True, seed=abits)
    check_linear(ops, x, 5, abits, -1, torch.float32, "offsets", True, sym=True, seed=abits + 1)


def test_linear_nonfinite_token_row_is_nan(ops):
    x = torch.randn(4, 64, generator=gen(1))
    x[2, 5] = float("inf")
    check_linear(ops, x, 4, 8, 32, torch.float32, "zeros", True)
    check_linear(ops, x, 4, 4, -1, torch.float32, "offsets", False)


def test_linear_many_tokens_and_rows(ops):
    # Several blocks in both grid dimensions (64 rows x 8 tokens per block).
    x = torch.randn(37, 96, generator=gen(2)).half()
    q, planes, s, z, off, cs = make_weight(130, 96, 4, 32, torch.float16, "zeros", 3)
    y = ops.btc_linear(x, planes, s, z, off, cs, 4, 8, 32, None, False)
    want = ref.linear(x, q, s, z, off, abits=8, group_size=32)
    c, sx, zx = ref.quantize_activations(x, 8)
    xd = sx.double()[:, None] * (c.double() - zx.double()[:, None])
    assert_close_dot(y, want, xd.abs() @ ref.dequantize(q, s, z, None, 32).abs().T, 96)


def test_linear_empty_batch(ops):
    _, planes, s, z, off, cs = make_weight(5, 40, 2, 32, torch.float32, "zeros", 0)
    before = ops.counters()["launches"]
    y = ops.btc_linear(torch.zeros(0, 40), planes, s, z, off, cs, 2, 4, 32, None, False)
    assert y.shape == (0, 5) and ops.counters()["launches"] == before


# ---- bad inputs -------------------------------------------------------------------------------------
def _cpu_op(name):
    """The CPU library's op, when the main library is importable (for same-message checks)."""
    try:
        import llmpack._lib  # noqa: F401
        return getattr(torch.ops.llmpack, name)
    except Exception:
        return None


def expect_error(ops, name, args, pattern):
    with pytest.raises(RuntimeError, match=pattern) as cuda:
        getattr(ops, name)(*args)
    cpu = _cpu_op(name)
    if cpu is not None:
        with pytest.raises(RuntimeError) as host:
            cpu(*args)
        assert str(host.value) == str(cuda.value), "the CUDA and CPU paths word this error differently"


def test_bad_inputs(ops):
    q, planes, s, z, off, cs = make_weight(6, 70, 3, 32, torch.float32, "zeros", 0)
    x = torch.randn(2, 70)
    lin = lambda **kw: [kw.get("x", x), kw.get("planes", planes), kw.get("s", s), kw.get("z", z),  # noqa: E731
                        kw.get("off", None), cs, kw.get("wbits", 3), kw.get("abits", 4), kw.get("gs", 32),
                        kw.get("bias", None), kw.get("sym", False)]
    expect_error(ops, "btc_linear", lin(wbits=9), r"btc_linear: wbits must be in 1\.\.8, got 9")
    expect_error(ops, "btc_linear", lin(abits=12), r"abits must be in 1\.\.8, or 16")
    expect_error(ops, "btc_linear", lin(gs=48), r"group_size must be 32, 64, 128 or -1")
    expect_error(ops, "btc_linear", lin(x=torch.randn(2, 200)), r"planes must be \[rows, 8, 3\] for K = 200")
    expect_error(ops, "btc_linear", lin(off=torch.zeros(6, 3)), r"give exactly one of zeros")
    expect_error(ops, "btc_linear", lin(z=None, off=torch.zeros(6, 3).half()), r"offsets must have the scales' dtype")
    expect_error(ops, "btc_linear", lin(sym=True, abits=1), r"symmetric activations need abits >= 2")
    expect_error(ops, "btc_linear", lin(bias=torch.zeros(6).half()), r"bias must have x's dtype")
    expect_error(ops, "btc_linear", lin(x=x.int()), r"x must be float32 or bfloat16 or float16")
    expect_error(ops, "btc_quantize_activations", [x, 0, 32, False], r"abits must be in 1\.\.8, got 0")
    expect_error(ops, "btc_quantize_activations", [torch.zeros(3, 0), 4, 32, False], r"at least one feature")
    xp = ref.pack_planes(codes(2, 70, 4, 0), 4)
    expect_error(ops, "btc_matmul_int", [xp, planes, 4, 3, 32, 300], r"x_planes must be \[rows, 12, 4\]")
    expect_error(ops, "btc_matmul_int", [xp, planes, 4, 3, 32, 0], r"in_features must be positive")
    big = 40000  # 255 * 255 * 40000 > 2^31
    bp = torch.zeros(1, ref.k_words(big), 8, dtype=torch.int32)
    expect_error(ops, "btc_matmul_int", [bp, bp, 8, 8, -1, big], r"can overflow the int32 core")
