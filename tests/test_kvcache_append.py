"""paged_kv_append (one decode step of PagedKVCache's bookkeeping, CPU) against
its plain-PyTorch reference: random cache states stepped by both from the
same start, every mutated tensor compared exactly; the not-enough-room status
(nothing written); one clear error per bad input; opcheck + compile."""
from __future__ import annotations

import pytest
import torch

import llmpack  # noqa: F401  (loads the ops)
from llmpack.reference import kvcache as ref

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
NO_BUDGET = 1 << 62


def make_state(batch, heads, d, page_size, max_pages, dtype, spare_pages, policies, seed):
    """An empty cache (every page free) and its per-row policy tensors.
    policies: one (budget | None, sinks, recent, heavy) per sequence."""
    g = torch.Generator().manual_seed(seed)
    pages = batch * heads * max_pages + spare_pages
    cap = max_pages * page_size
    st = dict(
        k_pages=torch.full((pages, page_size, d), float("nan")).to(dtype),  # never-written slots stay NaN
        v_pages=torch.full((pages, page_size, d), float("nan")).to(dtype),
        block_tables=torch.full((batch, heads, max_pages), -1, dtype=torch.int32),
        lengths=torch.zeros(batch, heads, dtype=torch.int32),
        token_index=torch.full((batch, heads, cap), -1, dtype=torch.long),
        rotation=torch.zeros(batch, heads, cap, dtype=torch.long),
        heavy_scores=torch.zeros(batch, heads, cap),
        free_pages=torch.randperm(pages, generator=g),
        num_free=torch.tensor([pages]),
        seen=torch.zeros(batch, dtype=torch.long),
    )
    pol = dict(budget=torch.tensor([p[0] if p[0] is not None else NO_BUDGET for p in policies]),
               sinks=torch.tensor([p[1] for p in policies]), recent=torch.tensor([p[2] for p in policies]),
               heavy=torch.tensor([p[3] for p in policies]))
    return st, pol, g


def call(fn, st, pol, k, v, pos, real):
    return fn(st["k_pages"], st["v_pages"], st["block_tables"], st["lengths"], st["token_index"], st["rotation"],
              st["heavy_scores"], st["free_pages"], st["num_free"], st["seen"], k, v, pos, real, pol["budget"],
              pol["sinks"], pol["recent"], pol["heavy"])


def assert_same_state(a, b):
    for name in a:
        x, y = a[name], b[name]
        if x.is_floating_point():
            assert torch.equal(x.isnan(), y.isnan()), name
            x, y = torch.nan_to_num(x), torch.nan_to_num(y)
        assert torch.equal(x, y), f"{name} differs"


POLICY_SETS = {
    "full": [(None, 0, 0, False)],
    "window": [(5, 0, 5, False)],
    "sink": [(7, 2, 5, False)],
    "h2o": [(6, 0, 3, True)],
    "mixed": [(None, 0, 0, False), (7, 2, 5, False), (6, 2, 2, True), (4, 0, 1, True)],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("page_size", (1, 3, 16))
@pytest.mark.parametrize("policies", POLICY_SETS, ids=str)
def test_steps_match_reference(dtype, page_size, policies):
    pols = POLICY_SETS[policies]
    batch, heads, d = max(len(pols), 2), 3, 5
    pols = (pols * batch)[:batch]
    max_pages = -(-40 // page_size)
    ours, pol, g = make_state(batch, heads, d, page_size, max_pages, dtype, 2, pols, seed=page_size)
    theirs = {n: t.clone() for n, t in ours.items()}
    for step in range(40):
        k = torch.randn(batch, heads, d, generator=g).to(dtype)
        v = torch.randn(batch, heads, d, generator=g).to(dtype)
        pos = torch.full((batch,), 100 + step)
        real = torch.rand(batch, generator=g) > 0.2              # some padding columns
        got = call(torch.ops.llmpack.paged_kv_append, ours, pol, k, v, pos, real)
        want = call(ref.paged_kv_append, theirs, pol, k, v, pos, real)
        assert torch.equal(got[0], want[0]), f"step {step}: slots differ"
        assert torch.equal(got[1], want[1]) and int(got[1]) == 0
        assert_same_state(ours, theirs)
        # H2O's accumulators as the decode kernel would add them (any values: the rule reads them)
        add = torch.rand(batch, heads, ours["heavy_scores"].shape[-1], generator=g)
        ours["heavy_scores"] += add
        theirs["heavy_scores"] += add
    budgets = [p[0] for p in pols]
    for b, budget in enumerate(budgets):
        assert (ours["lengths"][b] == min(int(ours["seen"][b]), budget or NO_BUDGET)).all()


def test_ties_and_nan_scores():
    # Equal scores: the first slot goes; a NaN score goes before any number.
    st, pol, _ = make_state(1, 2, 4, 4, 2, torch.float32, 0, [(4, 0, 1, True)], 0)
    for t in range(4):
        call(torch.ops.llmpack.paged_kv_append, st, pol, torch.ones(1, 2, 4), torch.ones(1, 2, 4),
             torch.tensor([t]), torch.tensor([True]))
    st["heavy_scores"][0, 0, :4] = torch.tensor([0.5, 0.25, 0.25, 0.75])  # slots 1, 2 tie lowest
    st["heavy_scores"][0, 1, :4] = torch.tensor([0.5, float("nan"), 0.0, 0.0])
    slot, _ = call(torch.ops.llmpack.paged_kv_append, st, pol, torch.ones(1, 2, 4), torch.ones(1, 2, 4),
                   torch.tensor([4]), torch.tensor([True]))
    assert slot.tolist() == [[1, 1]]


def test_not_enough_room_writes_nothing():
    st, pol, _ = make_state(2, 2, 4, 2, 2, torch.float32, 0, [(None, 0, 0, False)] * 2, 0)
    st["num_free"][0] = 3                                   # 4 rows each start a page: one page short
    before = {n: t.clone() for n, t in st.items()}
    slot, status = call(torch.ops.llmpack.paged_kv_append, st, pol, torch.ones(2, 2, 4), torch.ones(2, 2, 4),
                        torch.tensor([0, 0]), torch.tensor([True, True]))
    assert int(status) == 1
    assert_same_state(st, before)
    st["num_free"][0] = 8
    for _ in range(4):                                     # 2 pages of 2 slots each: the table is full after 4
        assert int(call(torch.ops.llmpack.paged_kv_append, st, pol, torch.ones(2, 2, 4), torch.ones(2, 2, 4),
                        torch.tensor([0, 0]), torch.tensor([True, True]))[1]) == 0
    before = {n: t.clone() for n, t in st.items()}
    _, status = call(torch.ops.llmpack.paged_kv_append, st, pol, torch.ones(2, 2, 4), torch.ones(2, 2, 4),
                     torch.tensor([0, 0]), torch.tensor([True, False]))
    assert int(status) == 4           # sequence 0's two rows outgrow their tables (2) and the empty pool (2)
    assert_same_state(st, before)


def bad_cases():
    """(spoil(state, policy, inputs), expected message) pairs."""
    def lengths_out_of_range(st, pol, io):
        st["lengths"][1, 0] = 13
    yield lengths_out_of_range, r"lengths\[1, 0\] = 13 is outside 0\.\.12"

    def table_outside_pool(st, pol, io):
        st["lengths"][0, 1] = 2
        st["block_tables"][0, 1, 0] = 99
    yield table_outside_pool, r"block_tables\[0, 1, 0\] = 99 points outside the pool of 13 pages"

    def free_page_outside_pool(st, pol, io):
        st["free_pages"][-1] = -3
    yield free_page_outside_pool, r"free_pages\[12\] = -3 is outside the pool of 13 pages"

    def nothing_evictable(st, pol, io):
        st["lengths"][1] = 4
        st["block_tables"][1, :, 0] = torch.tensor([0, 1], dtype=torch.int32)
        st["token_index"][1, :, :4] = torch.tensor([0, 1, 2, 3])
        st["seen"][1] = 4
        pol["sinks"][1], pol["recent"][1] = 3, 2             # tokens 0..2 sinks, 3 (and the new one) recent
    yield nothing_evictable, r"sequence 1, kv-head 0 is at its budget of 4 and has no evictable token"

    def wrong_dtype(st, pol, io):
        io["k"] = io["k"].half()
    yield wrong_dtype, r"k_pages, v_pages, k and v must have one dtype"

    def long_tables(st, pol, io):
        st["block_tables"] = st["block_tables"].long()
    yield long_tables, r"block_tables must be int32, got int64"

    def mismatched_heads(st, pol, io):
        io["k"], io["v"] = torch.ones(2, 3, 4), torch.ones(2, 3, 4)
    yield mismatched_heads, r"block_tables must be \[2, 3, max_pages\]"

    def short_token_index(st, pol, io):
        st["token_index"] = st["token_index"][..., :5].contiguous()
    yield short_token_index, r"token_index must be \[2, 2, 12\]"

    def strided(st, pol, io):
        st["lengths"] = torch.zeros(2, 4, dtype=torch.int32)[:, ::2]
    yield strided, r"lengths must be contiguous"

    def bad_num_free(st, pol, io):
        st["num_free"][0] = 14
    yield bad_num_free, r"num_free = 14 is outside 0\.\.13"


@pytest.mark.parametrize("case", list(bad_cases()), ids=lambda c: c[0].__name__)
def test_bad_input_is_a_clear_error(case):
    spoil, msg = case
    st, pol, _ = make_state(2, 2, 4, 4, 3, torch.float32, 1, [(None, 0, 0, False), (4, 1, 1, False)], 0)
    io = dict(k=torch.ones(2, 2, 4), v=torch.ones(2, 2, 4), pos=torch.tensor([0, 0]),
              real=torch.tensor([True, True]))
    spoil(st, pol, io)
    before = {n: t.clone() for n, t in st.items()}
    with pytest.raises(RuntimeError, match=msg):
        call(torch.ops.llmpack.paged_kv_append, st, pol, io["k"], io["v"], io["pos"], io["real"])
    for n in st:  # all-or-nothing: an error leaves the cache as it was
        assert torch.equal(torch.nan_to_num(st[n].float()), torch.nan_to_num(before[n].float())), n


def test_opcheck_and_compile():
    st, pol, _ = make_state(2, 2, 4, 4, 3, torch.float32, 1, [(None, 0, 0, False), (4, 1, 1, True)], 0)
    st["k_pages"].zero_()
    st["v_pages"].zero_()
    args = lambda s: (s["k_pages"], s["v_pages"], s["block_tables"], s["lengths"], s["token_index"],  # noqa: E731
                      s["rotation"], s["heavy_scores"], s["free_pages"], s["num_free"], s["seen"],
                      torch.ones(2, 2, 4), torch.ones(2, 2, 4), torch.tensor([3, 4]), torch.tensor([True, True]),
                      pol["budget"], pol["sinks"], pol["recent"], pol["heavy"])
    torch.library.opcheck(torch.ops.llmpack.paged_kv_append.default, args(st))
    eager, compiled = {n: t.clone() for n, t in st.items()}, {n: t.clone() for n, t in st.items()}
    fn = lambda *a: torch.ops.llmpack.paged_kv_append(*a)  # noqa: E731
    torch._dynamo.reset()
    out_c = torch.compile(fn, fullgraph=True, backend="aot_eager")(*args(compiled))
    out_e = fn(*args(eager))
    torch.testing.assert_close(out_c, out_e, rtol=0, atol=0)
    assert_same_state(compiled, eager)
