"""Paged K/V pools for the paged-attention tests (CPU and emulator): random
values in shuffled pages, everything unused poisoned; and whole cache states
(pool, tables, free stack, token indices, scores, policies) for the
paged_kv_append tests."""
from __future__ import annotations

import torch

from conftest import ULP


def kv_pool(lengths, page_size: int, d: int, dtype, seed: int = 0, pad: int = 0, spare_pages: int = 3):
    """Random K/V in a shuffled pool for int32 lengths [B, Hkv]: (k_pages,
    v_pages, block_tables). Every slot no (sequence, kv-head) uses is NaN, in
    the used pages' tails and in spare pages; table entries past the used
    pages (and `pad` extra columns) are -1 or 10**9, so reading any of them
    shows up as NaN or an out-of-bounds access (ASan build)."""
    g = torch.Generator().manual_seed(seed)
    b, kv = lengths.shape
    need = [[(int(n) + page_size - 1) // page_size for n in row] for row in lengths]
    total = sum(map(sum, need)) + spare_pages
    max_pages = max(1, max(map(max, need))) + pad
    k = torch.full((total, page_size, d), float("nan"), dtype=dtype)
    v = torch.full((total, page_size, d), float("nan"), dtype=dtype)
    tables = torch.where(torch.arange(b * kv * max_pages).view(b, kv, max_pages) % 2 == 0,
                         torch.tensor(-1), torch.tensor(10**9)).to(torch.int32)
    order, used = torch.randperm(total, generator=g), 0
    for i in range(b):
        for h in range(kv):
            n = int(lengths[i, h])
            for p in range(need[i][h]):
                page = int(order[used])
                used += 1
                tables[i, h, p] = page
                rows = min(page_size, n - p * page_size)
                k[page, :rows] = torch.randn(rows, d, generator=g).to(dtype)
                v[page, :rows] = torch.randn(rows, d, generator=g).to(dtype)
    return k, v, tables


def check_output(out, want, v, dtype):
    """out (q's dtype, no NaN: no unused slot was read) against the reference:
    a convex combination of V rows in fp32 (~1e-6 of max |v|, more terms for
    longer contexts), then one rounding to the output dtype."""
    assert out.dtype == dtype and out.shape == want.shape
    assert not out.isnan().any(), "read an unused (NaN) slot"
    vmax = torch.nan_to_num(v.float(), nan=0.0).abs().max()
    tol = ULP[dtype] * want.float().abs() + 2e-5 * vmax
    err = (out.float() - want.float()).abs()
    assert (err <= tol).all(), f"worst error {err.max():.3g}"


# ---- cache states for paged_kv_append ----------------------------------------------------------
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


def steps_match_reference(op, dtype, page_size, pols, steps=40):
    """40 decode steps of a random batch under the policies `pols`, by `op`
    and by the reference from the same start: slots, status and every state
    tensor equal after each step."""
    from llmpack.reference import kvcache as ref

    batch, heads, d = max(len(pols), 2), 3, 5
    pols = (pols * batch)[:batch]
    max_pages = -(-40 // page_size)
    ours, pol, g = make_state(batch, heads, d, page_size, max_pages, dtype, 2, pols, seed=page_size)
    theirs = {n: t.clone() for n, t in ours.items()}
    for step in range(steps):
        k = torch.randn(batch, heads, d, generator=g).to(dtype)
        v = torch.randn(batch, heads, d, generator=g).to(dtype)
        pos = torch.full((batch,), 100 + step)
        real = torch.rand(batch, generator=g) > 0.2              # some padding columns
        got = call(op, ours, pol, k, v, pos, real)
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


def spoiled_state(spoil):
    """A small cache state (2 sequences x 2 kv-heads, pages of 4, 13 pages),
    its policies and one step's inputs, after spoil(state, policy, inputs)."""
    st, pol, _ = make_state(2, 2, 4, 4, 3, torch.float32, 1, [(None, 0, 0, False), (4, 1, 1, False)], 0)
    io = dict(k=torch.ones(2, 2, 4), v=torch.ones(2, 2, 4), pos=torch.tensor([0, 0]),
              real=torch.tensor([True, True]))
    spoil(st, pol, io)
    return st, pol, io


def append_bad_cases():
    """(spoil(state, policy, inputs), expected message) pairs, for spoiled_state."""
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
