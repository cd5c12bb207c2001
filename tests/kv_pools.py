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


# ---- states for paged_kv_reposition --------------------------------------------------------------
REPOS_STATE = ("k_pages", "block_tables", "lengths", "token_index", "rotation", "k_orig", "orig_rotation")


def repos_state(batch, heads, d, page_size, max_pages, dtype, half_rot, seed, repos=None):
    """A random valid state for paged_kv_reposition: shuffled distinct pages,
    random lengths, token indices a random order of distinct tokens (a few
    rows with repeats, which the rule orders by slot), rotations near the
    query's position so some keys move and some don't; unused pool slots
    NaN. Returns (state, inputs (slot, k, pos, reposition, inv_freq))."""
    g = torch.Generator().manual_seed(seed)
    cap = max_pages * page_size
    pages = batch * heads * max_pages + 2
    lengths = torch.randint(0, cap + 1, (batch, heads), generator=g, dtype=torch.int32)
    order = torch.randperm(pages, generator=g)[:batch * heads * max_pages].view(batch, heads, max_pages)
    tables = torch.where(torch.arange(max_pages) * page_size < lengths[..., None].long(), order,
                         torch.full_like(order, -1)).to(torch.int32)
    k_pages = torch.full((pages, page_size, d), float("nan"), dtype=dtype)
    for b in range(batch):
        for h in range(heads):
            for s in range(int(lengths[b, h])):
                k_pages[tables[b, h, s // page_size], s % page_size] = torch.randn(d, generator=g).to(dtype)
    tok = torch.argsort(torch.rand(batch, heads, cap, generator=g), -1) * 3 + 7
    tok[0, 0, :cap // 2] = tok[0, 0, :cap // 2] // 6                            # repeats in one row
    pos = torch.randint(cap, 3 * cap, (batch,), generator=g)
    st = dict(k_pages=k_pages, block_tables=tables, lengths=lengths, token_index=tok,
              rotation=pos[:, None, None] - torch.randint(0, cap + 3, (batch, heads, cap), generator=g),
              k_orig=torch.randn(batch, heads, cap, d, generator=g),
              orig_rotation=torch.randint(-5, 3 * cap, (batch, heads, cap), generator=g))
    slot = torch.where(torch.rand(batch, heads, generator=g) < 0.7,
                       (torch.rand(batch, heads, generator=g) * lengths).long(), torch.tensor(-1))
    slot = torch.where(lengths > 0, slot, torch.tensor(-1))
    if repos is None:
        repos = torch.rand(batch, generator=g) < 0.75
    inv_freq = 1.0 / (10000.0 ** (torch.arange(half_rot, dtype=torch.float32) / max(half_rot, 1)))
    io = dict(slot=slot, k=torch.randn(batch, heads, d, generator=g), pos=pos, reposition=torch.as_tensor(repos),
              inv_freq=inv_freq)
    return st, io


def call_repos(fn, st, io):
    return fn(*(st[n] for n in REPOS_STATE), io["slot"], io["k"], io["pos"], io["reposition"], io["inv_freq"])


def assert_same_repos_state(got, want):
    """Integers and k_orig exactly; the pool within one rounding of its dtype
    (the kernels' and torch's fp32 sin / cos may differ in the last bit),
    NaN (never-written) slots exactly where the reference has them."""
    for name in REPOS_STATE:
        x, y = got[name], want[name]
        if name != "k_pages":
            assert torch.equal(x.isnan(), y.isnan()) if x.is_floating_point() else True, name
            assert torch.equal(torch.nan_to_num(x), torch.nan_to_num(y)), f"{name} differs"
            continue
        assert torch.equal(x.isnan(), y.isnan()), "k_pages: NaN slots differ (a write went to the wrong slot)"
        x, y = torch.nan_to_num(x.float()), torch.nan_to_num(y.float())
        tol = ULP[got[name].dtype] * y.abs() + 4e-6 * (y.abs().max() + 1)
        err = (x - y).abs()
        assert (err <= tol).all(), f"k_pages: worst error {err.max():.3g}"


def reposition_bad_cases():
    """(spoil(state, inputs), expected message) pairs for repos_state(2, 2, 4, 4, 3, float32, 2, seed=1)."""
    def lengths_out_of_range(st, io):
        st["lengths"][1, 1] = 13
    yield lengths_out_of_range, r"lengths\[1, 1\] = 13 is outside 0\.\.12"

    def slot_unused(st, io):
        st["lengths"][0, 1] = 3
        io["slot"][0, 1] = 3
    yield slot_unused, r"slot\[0, 1\] = 3 is neither -1 nor a used slot \(lengths\[0, 1\] = 3\)"

    def table_outside_pool(st, io):
        st["lengths"][1, 0] = 9
        st["block_tables"][1, 0] = torch.tensor([0, 1, 77], dtype=torch.int32)
    yield table_outside_pool, r"block_tables\[1, 0, 2\] = 77 points outside the pool of 14 pages"

    def long_lengths(st, io):
        st["lengths"] = st["lengths"].long()
    yield long_lengths, r"lengths must be int32, got int64"

    def half_k(st, io):
        io["k"] = io["k"].half()
    yield half_k, r"k must be float32, got float16"

    def short_k_orig(st, io):
        st["k_orig"] = st["k_orig"][:, :, :5].contiguous()
    yield short_k_orig, r"k_orig must be \[2, 2, 12, 4\]"

    def too_many_freqs(st, io):
        io["inv_freq"] = torch.ones(3)
    yield too_many_freqs, r"inv_freq has 3 frequencies, which rotate 6 elements of a head_dim 4 key"

    def strided_rotation(st, io):
        st["rotation"] = torch.zeros(2, 2, 24, dtype=torch.long)[..., ::2]
    yield strided_rotation, r"rotation must be contiguous"


def spoiled_repos_state(spoil):
    st, io = repos_state(2, 2, 4, 4, 3, torch.float32, 2, seed=1, repos=[True, True])
    spoil(st, io)
    return st, io
