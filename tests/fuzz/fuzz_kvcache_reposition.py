"""Fuzz target: paged_kv_reposition (StreamingLLM's re-positioning after a
decode step) on an arbitrary cache state: block tables, lengths, slots, token
indices (repeats included), rotations, per-sequence flags, partial rotary.
The op writes re-rotated keys through table entries and the new key through
`slot`, so a bad one must be a clear error that leaves every tensor as it
was; otherwise the state equals the reference's: integers and k_orig bit for
bit, the pool within one fp32 rounding (sin / cos may differ in the last bit
between torch and the C library) unless two used slots alias one pool row."""
from __future__ import annotations

import struct

import torch

from llmpack import _ops
from llmpack.reference import kvcache as ref

from _fuzz import Input, Seed, block_tables_near_pool, rejected_untouched, same_bits

NAMES = ("block_tables", "lengths", "slot")
STATE = ("k_pages", "block_tables", "lengths", "token_index", "rotation", "k_orig", "orig_rotation")


def ints(src: Input, n: int, lo: int, hi: int) -> list[int]:
    return [src.int_in(lo, hi) for _ in range(n)]


def args(src: Input):
    b, kv, ps, d = src.int_in(1, 3), src.int_in(1, 2), src.int_in(1, 4), src.int_in(1, 5)
    pages, max_pages, half_rot = src.int_in(0, 10), src.int_in(1, 3), src.int_in(0, 5) % (d // 2 + 1)
    cap = max_pages * ps
    tables = block_tables_near_pool(src, b, kv, max_pages, pages)
    g = torch.Generator().manual_seed(src.byte())
    st = dict(
        k_pages=torch.randint(-3, 4, (pages, ps, d), generator=g).float(),
        block_tables=tables,
        lengths=torch.tensor(ints(src, b * kv, 0, cap + 2), dtype=torch.int32).view(b, kv) - 1,
        token_index=torch.tensor(ints(src, b * kv * cap, 0, 30), dtype=torch.long).view(b, kv, cap) - 1,
        rotation=torch.tensor(ints(src, b * kv * cap, 0, 60), dtype=torch.long).view(b, kv, cap),
        k_orig=torch.randint(-3, 4, (b, kv, cap, d), generator=g).float(),
        orig_rotation=torch.tensor(ints(src, b * kv * cap, 0, 60), dtype=torch.long).view(b, kv, cap),
    )
    io = dict(slot=torch.tensor(ints(src, b * kv, 0, cap + 2)).view(b, kv) - 2,
              k=torch.randint(-3, 4, (b, kv, d), generator=g).float(),
              pos=torch.tensor(ints(src, b, 0, 60)),
              reposition=torch.tensor([bool(src.byte() & 1) for _ in range(b)]),
              inv_freq=torch.tensor([src.byte() / 64.0 for _ in range(half_rot)], dtype=torch.float32))
    return st, io


def call(fn, st, io):
    return fn(*(st[n] for n in STATE), io["slot"], io["k"], io["pos"], io["reposition"], io["inv_freq"])


def reference(st, io):
    """The reference's state after the step on a copy, or None where it
    rejects the state (it raises where the op must)."""
    mine = {n: t.clone() for n, t in st.items()}
    try:
        call(ref.paged_kv_reposition, mine, io)
        return mine
    except RuntimeError:
        return None


def aliased(st, io) -> bool:
    """Two used slots of re-positioning rows on one pool page (the write order decides)."""
    ps = st["k_pages"].shape[1]
    used = [int(st["block_tables"][b, h, p]) for b in range(st["lengths"].shape[0]) if bool(io["reposition"][b])
            for h in range(st["lengths"].shape[1]) for p in range(-(-int(st["lengths"][b, h]) // ps))]
    return len(used) != len(set(used))


def seed_bytes(b, kv, ps, d, pages, max_pages, half_rot) -> bytes:
    s = Seed().int_in(1, b).int_in(1, kv).int_in(1, ps).int_in(1, d).int_in(0, pages).int_in(1, max_pages)
    s = s.int_in(0, half_rot)
    cap = max_pages * ps
    s = s.raw(b"".join(struct.pack("<i", (i % pages) + 1) for i in range(b * kv * max_pages)))  # distinct pages
    s = s.byte(5)
    for i in range(b * kv):                  # lengths
        s = s.int_in(0, 1 + min(cap, (i * 5) % (cap + 1)))
    for i in range(b * kv * cap):            # token indices, rotations, original rotations
        s = s.int_in(0, 1 + (i * 7) % 23)
    for i in range(b * kv * cap):
        s = s.int_in(0, 20 + i % 30)
    for i in range(b * kv * cap):
        s = s.int_in(0, 10 + i % 40)
    for i in range(b * kv):                  # slots: -1 or slot 0
        s = s.int_in(0, 1 + i % 2)
    for i in range(b):                       # pos, reposition
        s = s.int_in(0, 50)
    for i in range(b):
        s = s.byte(1)
    for i in range(half_rot):
        s = s.byte(64 >> i)
    return s.bytes()


def seeds():
    return [seed_bytes(*a) for a in [(1, 1, 2, 4, 4, 2, 2), (2, 2, 4, 5, 10, 2, 1), (3, 1, 1, 4, 9, 3, 0)]]


def TestOneInput(data: bytes):
    st, io = args(Input(data))
    want = reference(st, io)
    before = {n: t.clone() for n, t in st.items()}
    try:
        call(_ops.paged_kv_reposition, st, io)
    except Exception as err:  # noqa: BLE001 - the oracle decides
        rejected_untouched(err, want, st, before, NAMES)
        return
    assert want is not None, "a length, slot or table entry outside its range was accepted"
    for n in STATE:
        if n != "k_pages":
            assert same_bits(st[n], want[n]), n
    if not aliased(st, io):
        x, y = st["k_pages"], want["k_pages"]
        assert torch.equal(x.isnan(), y.isnan()), "k_pages: NaN pattern differs"
        err = (torch.nan_to_num(x) - torch.nan_to_num(y)).abs()
        assert (err <= 1e-6 * (y.abs() + 8)).all(), f"k_pages: error {err.max()}"
