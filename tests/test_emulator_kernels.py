"""Every hand-written CUDA kernel, run on the CPU through the SIMT emulator.

torch.ops.llmpack_simt.* (build/simt/libllmpack_simt.so, scripts/build_simt.sh)
is the real CUDA path -- argument checks, allocation, launch, kernel -- with
the kernels compiled as C++ and run by the emulator on CPU tensors. Each op is
checked against its plain-PyTorch reference at small odd shapes under several
thread/block schedules (a kernel whose result depends on the order threads run
in has a race), plus its error paths.

Adding a kernel: write one ``@kernel_check(...)`` function below; the
parametrized test picks it up, and test_every_op_is_checked fails until each
registered op has one.
"""
from __future__ import annotations

import os
import re
import sys

import pytest
import torch

from llmpack.reference import sparse24 as ref
from llmpack.reference import sparse24_cutlass as ref_cutlass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "simt"))
import simt_support as simt  # noqa: E402
from kv_pools import (POLICY_SETS, append_bad_cases, assert_same_repos_state, call, call_repos,  # noqa: E402
                      check_output, kv_pool, repos_state, reposition_bad_cases, spoiled_repos_state, spoiled_state,
                      steps_match_reference)

N_VALUES = (1, 7, 97)
K_VALUES = (4, 12, 36)
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@pytest.fixture(scope="module")
def ops():
    return simt.load_ops()


@pytest.fixture(params=simt.SCHEDULES)
def schedule(request, ops):
    ops.set_schedule(request.param)
    yield request.param
    ops.set_schedule("forward")


# ---- registry -------------------------------------------------------------------------
KERNEL_CHECKS: dict[str, tuple] = {}


def kernel_check(*, covers: tuple[str, ...], cases):
    """Registers fn(ops, case) as the emulator check of the ops in ``covers``,
    run for every case in ``cases`` (any hashable: shape, (shape, dtype), ...)."""
    def deco(fn):
        KERNEL_CHECKS[fn.__name__] = (fn, covers, list(cases))
        return fn
    return deco


def random_24(n, k, dtype, seed=0):
    """A 2:4 weight with groups of 0, 1 and 2 nonzeros at every position (+0 where dropped)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g).to(dtype)
    keep = torch.rand(n, k // 4, 4, generator=g).argsort(-1)[..., :2]
    mask = torch.zeros(n, k // 4, 4, dtype=torch.bool).scatter_(-1, keep, True)
    mask &= torch.rand(n, k // 4, 4, generator=g) > 0.15
    return torch.where(mask, w.view(n, k // 4, 4), torch.zeros((), dtype=dtype)).view(n, k)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)


# The CUDA ops report a bad group / byte / row through a one-element int64
# "error slot". It once started at kNoError = INT64_MAX, which fill_'s double
# cannot hold (x86 stored INT64_MIN), so every call reported a bogus error:
# found by these tests, fixed in sparse24_ops.cpp (the slot starts at -1).
def needs_error_slot(ops):
    """Kept as the marker of checks that go through the error slot."""


def test_error_slot_starts_clear(ops):
    """The CUDA ops' error slot must read "no error" when nothing was wrong."""
    v, m = ops.sparse24_compress(torch.zeros(1, 4))
    assert torch.equal(m, torch.tensor([[0x4]], dtype=torch.uint8))


def shapes():
    return [(n, k) for n in N_VALUES for k in K_VALUES] + [(300, 36)]  # (300, 36): 6 blocks


# ---- sparse24 pack / unpack --------------------------------------------------------------
@kernel_check(covers=("sparse24_compress",), cases=[(s, d) for s in shapes() for d in FLOAT_DTYPES])
def sparse24_compress(ops, case):
    (n, k), dtype = case
    needs_error_slot(ops)
    w = random_24(n, k, dtype, seed=n * 100 + k)
    values, meta = ops.sparse24_compress(w)
    rv, rm = ref.sparse24_compress(w)
    assert values.dtype == dtype and meta.dtype == torch.uint8
    assert torch.equal(meta, rm), "metadata differs from the reference"
    assert torch.equal(bits(values), bits(rv)), "values differ from the reference"


@kernel_check(covers=("sparse24_decompress",), cases=[(s, d) for s in shapes() for d in FLOAT_DTYPES])
def sparse24_decompress(ops, case):
    (n, k), dtype = case
    needs_error_slot(ops)
    w = random_24(n, k, dtype, seed=n * 7 + k)
    values, meta = ref.sparse24_compress(w)
    out = ops.sparse24_decompress(values, meta)
    assert torch.equal(bits(out), bits(ref.sparse24_decompress(values, meta)))
    assert torch.equal(bits(out), bits(w)), "round trip not bit-exact"


# ---- sparse24 small-M linear (mma.sp) -------------------------------------------------------
LINEAR_CASES = [(m, n, k, dt, bias)
                for m in (1, 7, 16) for n, k in ((16, 32), (17, 36), (48, 100)) for dt in (torch.float16, torch.bfloat16)
                for bias in (False, True)]


@kernel_check(covers=("sparse24_linear",), cases=LINEAR_CASES)
def sparse24_linear(ops, case):
    m, n, k, dtype, with_bias = case
    g = torch.Generator().manual_seed(m * 1000 + n + k)
    w = random_24(n, k, dtype, seed=m + n + k)
    values, meta = ref.sparse24_compress(w)
    x = torch.randn(m, k, generator=g).to(dtype)
    bias = torch.randn(n, generator=g).to(dtype) if with_bias else None
    before = ops.counters()["launches"]
    y = ops.sparse24_linear(x, values, meta, bias)
    assert ops.counters()["launches"] > before, "no kernel ran"
    want = ref.sparse24_linear(x, values, meta, bias)
    assert y.dtype == dtype and y.shape == want.shape
    # fp32 accumulation in another order, then one rounding to the output dtype.
    mag = x.float().abs() @ ref.sparse24_decompress(values, meta).float().abs().T
    if bias is not None:
        mag += bias.float().abs()
    ulp = {torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
    tol = 4 * 2**-24 * k**0.5 * mag + 2 * ulp * want.float().abs() + 1e-30
    err = (y.float() - want.float()).abs()
    assert (err <= tol).all(), f"worst error {err.max().item():.3g}"


# ---- CUTLASS metadata reorder ------------------------------------------------------------------
TRANSPOSE_CASES = [(m, n, ldd, d, b) for (m, n, ldd) in [(1, 7, 8), (33, 97, 40), (5, 300, 8), (64, 33, 64)]
                   for d in (torch.float16, torch.bfloat16) for b in (False, True)]


@kernel_check(covers=("_transpose_bias",), cases=TRANSPOSE_CASES)
def check_transpose_bias(ops, case):
    """The CUTLASS path's second kernel: y = D[:, :m]^T (+ bias, added in fp32, rounded once)."""
    m, n, ldd, dtype, with_bias = case
    d = torch.randn(n, ldd).to(dtype)
    bias = torch.randn(n).to(dtype) if with_bias else None
    y = ops._transpose_bias(d, bias, m)
    ref = d[:, :m].t()
    if with_bias:
        ref = (ref.float() + bias.float()).to(dtype)
    assert torch.equal(bits(y), bits(ref.contiguous()))


@kernel_check(covers=("sparse24_meta_to_cutlass",), cases=[(n, k) for n in (1, 7, 32, 97) for k in (4, 36, 64, 100)])
def sparse24_meta_to_cutlass(ops, case):
    n, k = case
    needs_error_slot(ops)
    _, meta = ref.sparse24_compress(random_24(n, k, torch.float16, seed=n + k))
    assert torch.equal(ops.sparse24_meta_to_cutlass(meta), ref_cutlass.sparse24_meta_to_cutlass(meta))


def _cases():
    for name, (_, _, cases) in KERNEL_CHECKS.items():
        for c in cases:
            yield pytest.param(name, c, id=f"{name}-{c}".replace(" ", "").replace("torch.", ""))


# ---- DFloat11 decode (one thread per chunk, table in shared memory) ---------------------------
def df11_case_tensor(n: int, seed: int) -> torch.Tensor:
    """bf16 values whose exponents span a trained weight's range plus rare
    ones (zeros, subnormals, Inf/NaN) so long and short codes both occur."""
    from llmpack.reference import df11 as ref_df11  # noqa: F401

    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(n, generator=g) * 0.02).bfloat16()
    special = torch.tensor([0, 0x8000, 1, 0x7F80, 0x7FC1, 0xFF80, 0x3F80], dtype=torch.int32).to(torch.int16)
    k = min(n, special.numel())
    w.view(torch.int16)[:k] = special[:k]
    return w


DF11_SIZES = (1, 7, 2047, 2048, 2049, 5000, 9000)


@kernel_check(covers=("df11_decode", "df11_decode_into"), cases=DF11_SIZES)
def df11_decode(ops, n):
    from llmpack.reference import df11 as ref_df11

    needs_error_slot(ops)
    w = df11_case_tensor(n, seed=n)
    parts = ref_df11.encode(w)
    out = ops.df11_decode(*parts)
    assert torch.equal(out.view(torch.int16), w.view(torch.int16)), "decode not bit-exact"
    buf = torch.full((n,), float("nan"), dtype=torch.bfloat16)
    ops.df11_decode_into(*parts, buf)
    assert torch.equal(buf.view(torch.int16), w.view(torch.int16))


@kernel_check(covers=("df11_linear",), cases=[(1, 16, 8), (3, 100, 21), (5, 64, 64)])
def df11_linear(ops, case):
    from llmpack.reference import df11 as ref_df11

    m, k, n = case
    w = df11_case_tensor(n * k, seed=k)[: n * k].view(n, k).clone()
    w.view(torch.int16)[:1, :7] = torch.tensor([0x3F80] * 7, dtype=torch.int16)[: min(7, k)]  # finite values only
    x = (torch.randn(m, k) * 0.5).bfloat16()
    got = ops.df11_linear(x, *ref_df11.encode(w), n, None)
    torch.testing.assert_close(got, torch.nn.functional.linear(x, w), rtol=0, atol=0)



# ---- paged decode attention (split-K over slots + log-sum-exp merge) -------------------------


# (lengths [B][Hkv], group, page_size, head_dim, dtype, return_scores, pad): lengths 0/1/17/97
# mixed per sequence and per kv-head at every page size, GQA group and dtype; long contexts
# (1025: 5 parts of 256 slots); odd shapes (head_dim 1/7/33/80, groups 3/5/12: a pass of 8
# query heads then 4); parts ending on a split boundary; tables much wider than used (empty parts).
KV_CASES = (
    [(((1, 17), (97, 0)), g, ps, 64, dt, rs, 0)
     for ps in (1, 16, 32) for g in (1, 4, 8) for dt in FLOAT_DTYPES for rs in (True, False)]
    + [(((1025, 1018), (341, 2)), g, ps, 128, dt, True, 0) for g, ps in ((4, 16), (8, 32)) for dt in FLOAT_DTYPES]
    + [(((1025,),), 1, 32, 33, torch.float16, False, 0),
       (((5, 0, 33),), 3, 16, 7, torch.float32, True, 0),
       (((300,), (1,)), 12, 16, 80, torch.bfloat16, True, 0),
       (((97,),), 5, 1, 1, torch.float16, True, 0),
       (((257, 256, 255),), 2, 16, 64, torch.float32, True, 0),
       (((17,),), 4, 16, 64, torch.bfloat16, True, 40),
       (((0, 0),), 4, 16, 64, torch.float32, True, 0)]
)


@kernel_check(covers=("paged_decode_attention",), cases=KV_CASES)
def paged_decode_attention(ops, case):
    from llmpack.reference import kvcache as ref_kv

    lengths, group, ps, d, dtype, return_scores, pad = case
    lengths = torch.tensor(lengths, dtype=torch.int32)
    b, kv = lengths.shape
    seed = int(lengths.sum()) + group * 10 + ps + d
    k, v, tables = kv_pool(lengths, ps, d, dtype, seed=seed, pad=pad)
    q = (1.5 * torch.randn(b, kv * group, d, generator=torch.Generator().manual_seed(seed + 1))).to(dtype)
    scale = d ** -0.5
    before = ops.counters()["launches"]
    out, scores = ops.paged_decode_attention(q, k, v, tables, lengths, scale, return_scores)
    assert ops.counters()["launches"] - before == 2, "expected the split and the merge kernel"
    want, want_scores = ref_kv.paged_decode_attention(q, k, v, tables, lengths, scale, True)
    check_output(out, want, v, dtype)
    cap = tables.shape[2] * ps
    if not return_scores:
        assert scores.shape == (0, kv, cap)
        return
    assert scores.shape == (b, kv, cap) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, want_scores, rtol=1e-4, atol=1e-6 * group)
    unused = torch.arange(cap)[None, None, :] >= lengths[:, :, None]
    assert (scores[unused] == 0).all(), "scores of unused slots must be exactly 0"
    has = lengths > 0
    torch.testing.assert_close(scores.sum(-1)[has], torch.full_like(scores.sum(-1)[has], float(group)),
                               rtol=1e-4, atol=1e-4)


# ---- paged_kv_append: a decode step's bookkeeping in one block ------------------------------------
# (dtype, page_size, policy set of kv_pools.POLICY_SETS): every policy at odd pages of 3 slots,
# the mixed batch at 1- and 16-slot pages in the other dtypes; 20 steps each, against the reference.
APPEND_CASES = ([(torch.float32, 3, pols) for pols in POLICY_SETS]
                + [(dt, ps, "mixed") for dt in (torch.float16, torch.bfloat16) for ps in (1, 16)])


@kernel_check(covers=("paged_kv_append",), cases=APPEND_CASES)
def paged_kv_append(ops, case):
    dtype, page_size, pols = case
    before = ops.counters()["launches"]
    steps_match_reference(ops.paged_kv_append, dtype, page_size, POLICY_SETS[pols], steps=20)
    assert ops.counters()["launches"] - before == 20, "expected one launch per step"


# ---- paged_kv_reposition: a check block, then one block per (sequence, kv-head) ----------------------
# (dtype, page_size, head_dim, rotated pairs): full, partial and no rotary, odd pages; 2 random states each.
REPOS_CASES = ([(torch.float32, ps, 8, 4) for ps in (1, 3, 16)]
               + [(dt, 3, d, hr) for dt in (torch.bfloat16, torch.float16) for d, hr in ((6, 2), (5, 0))])


@kernel_check(covers=("paged_kv_reposition",), cases=REPOS_CASES)
def paged_kv_reposition(ops, case):
    from llmpack.reference import kvcache as ref_kv

    dtype, page_size, d, half_rot = case
    for seed in range(2):
        ours, io = repos_state(3, 2, d, page_size, -(-20 // page_size), dtype, half_rot, seed)
        theirs = {n: t.clone() for n, t in ours.items()}
        before = ops.counters()["launches"]
        call_repos(ops.paged_kv_reposition, ours, io)
        assert ops.counters()["launches"] - before == 2, "expected the check and the step kernel"
        call_repos(ref_kv.paged_kv_reposition, theirs, io)
        assert_same_repos_state(ours, theirs)


@pytest.mark.parametrize("name,case", list(_cases()))
def test_kernel_matches_reference(ops, schedule, name, case):
    KERNEL_CHECKS[name][0](ops, case)


# Families whose emulator checks live in a file of their own.
CHECKED_ELSEWHERE = {"btc_quantize_activations": "test_emulator_btc.py", "btc_matmul_int": "test_emulator_btc.py",
                     "btc_linear": "test_emulator_btc.py"}


def test_every_op_is_checked(ops):
    covered = {op for _, covers, _ in KERNEL_CHECKS.values() for op in covers} | set(CHECKED_ELSEWHERE)
    missing = sorted(set(ops.registered()) - covered)
    assert not missing, f"ops with a CUDA path but no emulator check in {__file__}: {missing}"


# ---- error paths ---------------------------------------------------------------------------------
def test_compress_reports_first_bad_group(ops, schedule):
    # Bad groups in several blocks and threads: the atomicMin must keep the
    # lowest whatever order the threads and blocks ran in.
    needs_error_slot(ops)
    w = random_24(300, 36, torch.float32)
    for r, g in ((290, 8), (37, 5), (37, 6), (200, 0), (40, 1)):
        w[r, 4 * g:4 * g + 4] = torch.tensor([1.0, 2.0, 3.0, 0.0])
    with pytest.raises(RuntimeError, match=r"not 2:4 sparse: row 37, group 5 \(columns 20\.\.23\)"):
        ops.sparse24_compress(w)


def test_decompress_reports_first_bad_byte(ops, schedule):
    needs_error_slot(ops)
    values, meta = ref.sparse24_compress(random_24(97, 36, torch.float16))
    bad = meta.clone()
    bad[90, 2] = 0x55      # nibble 5: positions (1, 1)
    bad[3, 4] |= 0x40      # K/4 = 9 groups: the high nibble of byte 4 is padding and must be 0
    bad[60, 0] = 0x11
    with pytest.raises(RuntimeError, match=r"corrupted meta at row 3, byte 4"):
        ops.sparse24_decompress(values, bad)


def test_meta_to_cutlass_reports_bad_row(ops):
    needs_error_slot(ops)
    _, meta = ref.sparse24_compress(random_24(64, 64, torch.float16))
    bad = meta.clone()
    bad[41, 3] = 0x0F
    with pytest.raises(RuntimeError, match=r"corrupted meta in weight row 41\b"):
        ops.sparse24_meta_to_cutlass(bad)


def test_linear_corrupted_meta_traps(ops):
    # The small-M kernel validates nibbles as it reads them and traps.
    values, meta = ref.sparse24_compress(random_24(32, 64, torch.float16))
    bad = meta.clone()
    bad[17, 5] = 0x33
    x = torch.randn(3, 64).half()
    with pytest.raises(RuntimeError, match=r"__trap\(\) called"):
        ops.sparse24_linear(x, values, bad, None)


def test_argument_checks_on_the_cuda_path(ops):
    with pytest.raises(RuntimeError, match=r"K=6 must be a multiple of 4"):
        ops.sparse24_compress(torch.zeros(4, 6))
    with pytest.raises(RuntimeError, match=r"meta must be uint8"):
        ops.sparse24_decompress(torch.zeros(2, 2), torch.zeros(2, 1, dtype=torch.int32))


def test_empty_shapes_launch_nothing(ops):
    needs_error_slot(ops)
    before = ops.counters()["launches"]
    v, m = ops.sparse24_compress(torch.zeros(0, 8))
    assert v.shape == (0, 4) and m.shape == (0, 1)
    assert ops.counters()["launches"] == before


def test_emulator_library_is_the_expected_build(ops):
    assert ops.is_asan == (simt.current_kind() == "asan")


def test_df11_corrupted_chunk_is_named(ops):
    from llmpack.reference import df11 as ref_df11

    needs_error_slot(ops)
    w = df11_case_tensor(3 * 2048, seed=3)
    lengths, stream, offsets, sm = ref_df11.encode(w)
    bad = offsets.to(torch.int64)
    bad[2] = bad[1]  # chunk 1 gets no bytes at all
    with pytest.raises(RuntimeError, match="corrupted stream in chunk 1"):
        ops.df11_decode(lengths, stream, bad.to(torch.uint32), sm)


# ---- paged decode attention: block tables and lengths are checked on the device -----------------
def _kv_bad_input():
    lengths = torch.tensor([[5, 19], [600, 0]], dtype=torch.int32)
    k, v, tables = kv_pool(lengths, 16, 32, torch.float32, spare_pages=0)  # 1 + 2 + 38 = 41 pages
    q = torch.randn(2, 4, 32)
    return q, k, v, tables, lengths


def _same_error(ops, *args):
    """The emulated CUDA path raises exactly the CPU path's message; returns it."""
    from llmpack import _ops

    with pytest.raises(RuntimeError) as cpu:
        _ops.paged_decode_attention(*args, 0.2, True)
    with pytest.raises(RuntimeError) as cuda:
        ops.paged_decode_attention(*args, 0.2, True)
    assert str(cuda.value) == str(cpu.value)
    return str(cuda.value)


def test_paged_attention_bad_table_entry_is_named(ops, schedule):
    q, k, v, tables, lengths = _kv_bad_input()
    bad = tables.clone()
    bad[1, 0, 37] = -5  # last used page of (1, 0): the highest part
    bad[1, 0, 3] = 41
    bad[0, 1, 1] = 99
    msg = _same_error(ops, q, k, v, bad, lengths)
    assert re.search(r"block_tables\[0, 1, 1\] = 99 points outside the pool of 41 pages", msg), msg
    bad[0, 1, 1] = tables[0, 1, 1]
    msg = _same_error(ops, q, k, v, bad, lengths)
    assert re.search(r"block_tables\[1, 0, 3\] = 41 points outside the pool of 41 pages", msg), msg
    bad[1, 0, 3] = tables[1, 0, 3]
    msg = _same_error(ops, q, k, v, bad, lengths)
    assert re.search(r"block_tables\[1, 0, 37\] = -5 points outside", msg), msg


def test_paged_attention_bad_length_is_named(ops, schedule):
    q, k, v, tables, lengths = _kv_bad_input()
    cap = tables.shape[2] * 16  # 38 pages of 16
    bad = lengths.clone()
    bad[1, 1] = cap + 1
    msg = _same_error(ops, q, k, v, tables, bad)
    assert re.search(rf"lengths\[1, 1\] = {cap + 1} is outside 0..{cap} \(38 pages of 16 slots\)", msg), msg
    bad[0, 1] = -3
    msg = _same_error(ops, q, k, v, tables, bad)
    assert re.search(r"lengths\[0, 1\] = -3 is outside 0..", msg), msg
    # An earlier (sequence, kv-head)'s bad table entry comes first, as on the CPU.
    bad_tables = tables.clone()
    bad_tables[0, 0, 0] = 1000
    msg = _same_error(ops, q, k, v, bad_tables, bad)
    assert re.search(r"block_tables\[0, 0, 0\] = 1000", msg), msg


def test_paged_attention_argument_checks_on_the_cuda_path(ops):
    q, k, v, tables, lengths = _kv_bad_input()
    with pytest.raises(RuntimeError, match="multiple of the block tables' 2 kv-heads"):
        ops.paged_decode_attention(torch.randn(2, 3, 32), k, v, tables, lengths, 0.2, True)
    with pytest.raises(RuntimeError, match="block_tables must be int32, got int64"):
        ops.paged_decode_attention(q, k, v, tables.long(), lengths, 0.2, True)
    with pytest.raises(RuntimeError, match="must have one dtype"):
        ops.paged_decode_attention(q, k.half(), v, tables, lengths, 0.2, True)


def test_paged_attention_empty_batch_launches_nothing(ops):
    before = ops.counters()["launches"]
    out, scores = ops.paged_decode_attention(torch.zeros(0, 4, 8), torch.zeros(3, 16, 8), torch.zeros(3, 16, 8),
                                             torch.zeros(0, 2, 5, dtype=torch.int32),
                                             torch.zeros(0, 2, dtype=torch.int32), 0.5, True)
    assert out.shape == (0, 4, 8) and scores.shape == (0, 2, 80)
    assert ops.counters()["launches"] == before


@pytest.mark.parametrize("case", list(append_bad_cases()), ids=lambda c: c[0].__name__)
def test_append_errors_match_the_cpu_path(ops, case):
    """Bad state found on the device (or by the shared argument checks):
    the CPU path's message, and every tensor left as it was."""
    from llmpack import _ops

    spoil, msg = case
    messages = []
    for fn in (_ops.paged_kv_append, ops.paged_kv_append):
        st, pol, io = spoiled_state(spoil)
        before = {n: t.clone() for n, t in st.items()}
        with pytest.raises(RuntimeError, match=msg) as err:
            call(fn, st, pol, io["k"], io["v"], io["pos"], io["real"])
        messages.append(str(err.value))
        for n in st:
            assert torch.equal(torch.nan_to_num(st[n].float()), torch.nan_to_num(before[n].float())), n
    assert messages[0] == messages[1]


@pytest.mark.parametrize("case", list(reposition_bad_cases()), ids=lambda c: c[0].__name__)
def test_reposition_errors_match_the_cpu_path(ops, case):
    """The device check kernel's error: the CPU path's message, nothing written."""
    from llmpack import _ops

    spoil, msg = case
    messages = []
    for fn in (_ops.paged_kv_reposition, ops.paged_kv_reposition):
        st, io = spoiled_repos_state(spoil)
        before = {n: t.clone() for n, t in st.items()}
        with pytest.raises(RuntimeError, match=msg) as err:
            call_repos(fn, st, io)
        messages.append(str(err.value))
        for n in st:
            assert torch.equal(torch.nan_to_num(st[n].float()), torch.nan_to_num(before[n].float())), n
    assert messages[0] == messages[1]
