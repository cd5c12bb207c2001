"""Fuzz target: paged_kv_append (one decode step of the cache's bookkeeping)
on an arbitrary cache state: block tables, lengths, free-page stack, token
indices, scores and per-sequence policies. The op writes through table
entries and popped pages, so a bad entry must be a clear error that leaves
every tensor as it was; otherwise the state it leaves equals the
reference's, bit for bit."""
from __future__ import annotations

import struct

import torch

from llmpack import _ops
from llmpack.reference import kvcache as ref

from _fuzz import Input, Seed, expect_clear_error, same_bits

NAMES = ("block_tables", "lengths", "free_pages", "num_free", "no evictable token")
STATE = ("k_pages", "v_pages", "block_tables", "lengths", "token_index", "rotation", "heavy_scores", "free_pages",
         "num_free", "seen")


def ints(src: Input, n: int, lo: int, hi: int) -> list[int]:
    return [src.int_in(lo, hi) for _ in range(n)]


def args(src: Input):
    b, kv, ps, d = src.int_in(1, 3), src.int_in(1, 3), src.int_in(1, 4), src.int_in(1, 4)
    pages, max_pages, stack = src.int_in(0, 10), src.int_in(1, 4), src.int_in(0, 6)
    cap = max_pages * ps
    raw = src.take(4 * b * kv * max_pages)
    tables = torch.tensor(struct.unpack(f"<{b * kv * max_pages}i", raw), dtype=torch.int32)
    tables = torch.where(tables.abs() < 1 << 20, tables % (pages + 3) - 1, tables)  # mostly near the pool
    g = torch.Generator().manual_seed(src.byte())
    st = dict(
        k_pages=torch.randint(-3, 4, (pages, ps, d), generator=g).float(),
        v_pages=torch.randint(-3, 4, (pages, ps, d), generator=g).float(),
        block_tables=tables.view(b, kv, max_pages).contiguous(),
        lengths=torch.tensor(ints(src, b * kv, 0, cap + 2), dtype=torch.int32).view(b, kv) - 1,
        token_index=torch.tensor(ints(src, b * kv * cap, 0, 40), dtype=torch.long).view(b, kv, cap) - 1,
        rotation=torch.zeros(b, kv, cap, dtype=torch.long),
        heavy_scores=torch.tensor(struct.unpack(f"<{b * kv * cap}f", src.take(4 * b * kv * cap))).view(b, kv, cap),
        free_pages=torch.tensor(ints(src, stack, 0, pages + 2), dtype=torch.long) - 1,
        num_free=torch.tensor([src.int_in(0, stack + 1)]),
        seen=torch.tensor(ints(src, b, 0, 40)),
    )
    pol = dict(budget=torch.tensor(ints(src, b, 0, cap + 2)), sinks=torch.tensor(ints(src, b, 0, 6)),
               recent=torch.tensor(ints(src, b, 0, 6)), heavy=torch.tensor([bool(src.byte() & 1) for _ in range(b)]))
    io = (torch.randint(-3, 4, (b, kv, d), generator=g).float(), torch.randint(-3, 4, (b, kv, d), generator=g).float(),
          torch.tensor(ints(src, b, 0, 50)), torch.tensor([bool(src.byte() & 1) for _ in range(b)]))
    return st, pol, io


def call(fn, st, pol, io):
    return fn(*(st[n] for n in STATE), *io, pol["budget"], pol["sinks"], pol["recent"], pol["heavy"])


def reference(st, pol, io):
    """The reference's step on a copy, or None where the state is invalid:
    a length or num_free out of range, nothing evictable, or a write through
    a page outside the pool (the reference would wrap or raise IndexError)."""
    pages, cap = st["k_pages"].shape[0], st["token_index"].shape[2]
    if ((st["lengths"] < 0) | (st["lengths"] > cap)).any():
        return None
    if not 0 <= int(st["num_free"][0]) <= st["free_pages"].numel():
        return None
    mine = {n: t.clone() for n, t in st.items()}
    heads, ps = st["lengths"].shape[1], st["k_pages"].shape[1]
    # Dry run on plain copies with an oversized pool, to learn which pages the step writes through.
    probe = {n: t.clone() for n, t in st.items()}
    probe["k_pages"] = probe["v_pages"] = torch.zeros(1 << 12, ps, st["k_pages"].shape[2])
    probe["block_tables"] = probe["block_tables"] % (1 << 12)
    probe["free_pages"] = torch.arange(probe["free_pages"].numel())
    try:
        slot, status = call(ref.paged_kv_append, probe, pol, io)
    except RuntimeError:
        return None
    if int(status):
        return call(ref.paged_kv_append, mine, pol, io), mine
    nfree = int(st["num_free"][0])
    for row, t in enumerate(slot.view(-1).tolist()):
        if t < 0:
            continue
        b, h = divmod(row, heads)
        fresh = t == int(st["lengths"][b, h]) and t % ps == 0
        if fresh:
            nfree -= 1
        page = int(st["free_pages"][nfree]) if fresh else int(st["block_tables"][b, h, t // ps])
        if not 0 <= page < pages:
            return None
    return call(ref.paged_kv_append, mine, pol, io), mine


def seed_bytes(b, kv, ps, d, pages, max_pages, stack) -> bytes:
    s = Seed().int_in(1, b).int_in(1, kv).int_in(1, ps).int_in(1, d).int_in(0, pages).int_in(1, max_pages)
    s = s.int_in(0, stack)
    s = s.raw(b"".join(struct.pack("<i", (i % pages) + 1) for i in range(b * kv * max_pages)))
    s = s.byte(3)
    cap = max_pages * ps
    for i in range(b * kv):
        s = s.int_in(0, 1 + (i * 3) % cap)
    for i in range(b * kv * cap):
        s = s.int_in(0, 1 + i % 9)
    s = s.raw(b"".join(struct.pack("<f", float(i % 5) / 4) for i in range(b * kv * cap)))
    for i in range(stack):
        s = s.int_in(0, 1 + i % pages)
    s = s.int_in(0, stack)
    for i in range(b):                       # seen
        s = s.int_in(0, 9)
    for i in range(b):                       # budgets: some rows at their budget, some below
        s = s.int_in(0, cap - i % 2)
    for i in range(b):                       # sinks, recent, heavy
        s = s.int_in(0, 1)
    for i in range(b):
        s = s.int_in(0, 1)
    for i in range(b):
        s = s.byte(i)
    for i in range(b):                       # pos, real
        s = s.int_in(0, 9 + i)
    for i in range(b):
        s = s.byte(1)
    return s.bytes()


def seeds():
    return [seed_bytes(*a) for a in [(1, 1, 2, 2, 4, 2, 2), (2, 2, 4, 3, 10, 3, 6), (3, 3, 1, 4, 9, 4, 5)]]


def TestOneInput(data: bytes):
    st, pol, io = args(Input(data))
    want = reference(st, pol, io)
    before = {n: t.clone() for n, t in st.items()}
    try:
        slot, status = call(_ops.paged_kv_append, st, pol, io)
    except Exception as err:  # noqa: BLE001 - the oracle decides
        expect_clear_error(err, NAMES)
        assert want is None, f"valid state rejected: {err}"
        for n in STATE:
            assert same_bits(st[n], before[n]), f"{n} changed by a rejected step"
        return
    assert want is not None, "a length, table entry or free page outside its range was accepted"
    (want_slot, want_status), want_state = want
    assert int(status) == int(want_status), (int(status), int(want_status))
    if int(status) == 0:
        assert torch.equal(slot, want_slot)
    for n in STATE:
        assert same_bits(st[n], want_state[n]), n
