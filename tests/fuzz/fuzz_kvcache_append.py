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

from _fuzz import Input, Seed, block_tables_near_pool, rejected_untouched, same_bits

NAMES = ("block_tables", "lengths", "free_pages", "num_free", "no evictable token")
STATE = ("k_pages", "v_pages", "block_tables", "lengths", "token_index", "rotation", "heavy_scores", "free_pages",
         "num_free", "seen")


def ints(src: Input, n: int, lo: int, hi: int) -> list[int]:
    return [src.int_in(lo, hi) for _ in range(n)]


def args(src: Input):
    b, kv, ps, d = src.int_in(1, 3), src.int_in(1, 3), src.int_in(1, 4), src.int_in(1, 4)
    pages, max_pages, stack = src.int_in(0, 10), src.int_in(1, 4), src.int_in(0, 6)
    cap = max_pages * ps
    tables = block_tables_near_pool(src, b, kv, max_pages, pages)
    g = torch.Generator().manual_seed(src.byte())
    st = dict(
        k_pages=torch.randint(-3, 4, (pages, ps, d), generator=g).float(),
        v_pages=torch.randint(-3, 4, (pages, ps, d), generator=g).float(),
        block_tables=tables,
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
    """((slot, status), state) of the reference's step on a copy, or None
    where the reference rejects the state (it raises where the op must)."""
    mine = {n: t.clone() for n, t in st.items()}
    try:
        return call(ref.paged_kv_append, mine, pol, io), mine
    except RuntimeError:
        return None


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
        rejected_untouched(err, want, st, before, NAMES)
        return
    assert want is not None, "a length, table entry or free page outside its range was accepted"
    (want_slot, want_status), want_state = want
    assert int(status) == int(want_status), (int(status), int(want_status))
    if int(status) == 0:
        assert torch.equal(slot, want_slot)
    for n in STATE:
        assert same_bits(st[n], want_state[n]), n
