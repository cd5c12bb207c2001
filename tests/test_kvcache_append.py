"""paged_kv_append (one decode step of PagedKVCache's bookkeeping) on the CPU
against its plain-PyTorch reference (the CUDA kernel runs the same steps in
tests/test_emulator_kernels.py): random cache states stepped by both from the
same start, every mutated tensor compared exactly; the not-enough-room status
(nothing written); one clear error per bad input; opcheck + compile."""
from __future__ import annotations

import pytest
import torch

import llmpack  # noqa: F401  (loads the ops)
from kv_pools import (POLICY_SETS, append_bad_cases, assert_same_state, call, make_state, spoiled_state,
                      steps_match_reference)

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("page_size", (1, 3, 16))
@pytest.mark.parametrize("policies", POLICY_SETS, ids=str)
def test_steps_match_reference(dtype, page_size, policies):
    steps_match_reference(torch.ops.llmpack.paged_kv_append, dtype, page_size, POLICY_SETS[policies])


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


@pytest.mark.parametrize("case", list(append_bad_cases()), ids=lambda c: c[0].__name__)
def test_bad_input_is_a_clear_error(case):
    spoil, msg = case
    st, pol, io = spoiled_state(spoil)
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
