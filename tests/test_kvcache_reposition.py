"""paged_kv_reposition (StreamingLLM's re-positioning after a decode step) on
the CPU against its plain-PyTorch reference (the CUDA kernels run the same
states in tests/test_emulator_kernels.py): random states with repeated token
indices, partial rotary, rows that don't re-position; every tensor compared
(integers exactly, the pool within one rounding); one clear error per bad
input with nothing written; opcheck + compile."""
from __future__ import annotations

import pytest
import torch

import llmpack  # noqa: F401  (loads the ops)
from kv_pools import (REPOS_STATE, assert_same_repos_state, call_repos, repos_state, reposition_bad_cases,
                      spoiled_repos_state)
from llmpack.reference import kvcache as ref

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("page_size", (1, 3, 16))
@pytest.mark.parametrize("d,half_rot", [(8, 4), (6, 2), (5, 0)], ids=["full", "partial", "odd-none"])
def test_matches_reference(dtype, page_size, d, half_rot):
    for seed in range(3):
        ours, io = repos_state(3, 2, d, page_size, -(-20 // page_size), dtype, half_rot, seed)
        theirs = {n: t.clone() for n, t in ours.items()}
        call_repos(torch.ops.llmpack.paged_kv_reposition, ours, io)
        call_repos(ref.paged_kv_reposition, theirs, io)
        assert_same_repos_state(ours, theirs)


def test_steady_state_moves_only_the_sinks():
    # A sink row after append: 2 sinks, then a window whose rotations already are its distances; a new
    # query at position 100: the sinks go to 100 - 5, 100 - 4, the window stays put.
    st, io = repos_state(1, 1, 4, 4, 2, torch.float32, 2, seed=0, repos=[True])
    st["lengths"][0, 0] = 6
    st["block_tables"][0, 0] = torch.tensor([3, 1], dtype=torch.int32)
    st["token_index"][0, 0, :6] = torch.tensor([0, 1, 40, 41, 42, 43])
    st["rotation"][0, 0, :6] = torch.tensor([60, 61, 97, 98, 99, 100])
    io["pos"], io["slot"] = torch.tensor([100]), torch.tensor([[5]])
    before = {n: t.clone() for n, t in st.items()}
    call_repos(torch.ops.llmpack.paged_kv_reposition, st, io)
    assert st["rotation"][0, 0, :6].tolist() == [95, 96, 97, 98, 99, 100]
    assert torch.equal(st["k_orig"][0, 0, 5], io["k"][0, 0]) and int(st["orig_rotation"][0, 0, 5]) == 100
    changed = (torch.nan_to_num(st["k_pages"]) != torch.nan_to_num(before["k_pages"])).any(-1).nonzero().tolist()
    assert changed == [[3, 0], [3, 1]], changed


def test_rows_that_do_not_reposition_are_not_touched():
    st, io = repos_state(2, 2, 4, 4, 3, torch.float32, 2, seed=3, repos=[False, False])
    st["lengths"][0, 0] = 99                                   # not read: no error either
    before = {n: t.clone() for n, t in st.items()}
    call_repos(torch.ops.llmpack.paged_kv_reposition, st, io)
    for n in REPOS_STATE:
        assert torch.equal(torch.nan_to_num(st[n].float()), torch.nan_to_num(before[n].float())), n


@pytest.mark.parametrize("case", list(reposition_bad_cases()), ids=lambda c: c[0].__name__)
def test_bad_input_is_a_clear_error(case):
    spoil, msg = case
    st, io = spoiled_repos_state(spoil)
    before = {n: t.clone() for n, t in st.items()}
    with pytest.raises(RuntimeError, match=msg):
        call_repos(torch.ops.llmpack.paged_kv_reposition, st, io)
    for n in st:  # all-or-nothing
        assert torch.equal(torch.nan_to_num(st[n].float()), torch.nan_to_num(before[n].float())), n


def test_opcheck_and_compile():
    st, io = repos_state(2, 2, 4, 4, 3, torch.float32, 2, seed=5, repos=[True, True])
    st["k_pages"] = torch.nan_to_num(st["k_pages"])
    args = lambda s: (*(s[n] for n in REPOS_STATE), io["slot"], io["k"], io["pos"], io["reposition"],  # noqa: E731
                      io["inv_freq"])
    torch.library.opcheck(torch.ops.llmpack.paged_kv_reposition.default, args({n: t.clone() for n, t in st.items()}))
    eager, compiled = {n: t.clone() for n, t in st.items()}, {n: t.clone() for n, t in st.items()}
    fn = lambda *a: torch.ops.llmpack.paged_kv_reposition(*a)  # noqa: E731
    torch._dynamo.reset()
    torch.compile(fn, fullgraph=True, backend="aot_eager")(*args(compiled))
    fn(*args(eager))
    assert_same_repos_state(compiled, eager)
