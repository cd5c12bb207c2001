"""Fuzz target: paged_decode_attention on arbitrary block tables and lengths
(what a cache holds after any sequence of appends and evictions) over a
small pool: either a clear error naming the table or length at fault, or the
reference's result."""
from __future__ import annotations

import struct

import torch

from llmpack import _ops
from llmpack.reference import kvcache as ref

from _fuzz import Input, Seed, block_tables_near_pool, expect_clear_error

NAMES = ("block_tables", "lengths")


def args(src: Input):
    b, kv, group = src.int_in(0, 3), src.int_in(1, 3), src.int_in(1, 3)
    ps, d, pages, max_pages = src.int_in(1, 8), src.int_in(1, 9), src.int_in(0, 12), src.int_in(0, 6)
    tables = block_tables_near_pool(src, b, kv, max_pages, pages)
    lengths = torch.tensor([src.int_in(0, max_pages * ps + 2) - 1 for _ in range(b * kv)], dtype=torch.int32)
    g = torch.Generator().manual_seed(src.byte())
    k = torch.randint(-3, 4, (pages, ps, d), generator=g).float()
    v = torch.randint(-3, 4, (pages, ps, d), generator=g).float()
    q = torch.randint(-3, 4, (b, kv * group, d), generator=g).float()
    return q, k, v, tables, lengths.view(b, kv)


def valid(k, tables, lengths) -> bool:
    pages, ps = k.shape[0], k.shape[1]
    for i in range(tables.shape[0]):
        for h in range(tables.shape[1]):
            n = int(lengths[i, h])
            if n < 0 or n > tables.shape[2] * ps:
                return False
            used = tables[i, h, :(n + ps - 1) // ps]
            if ((used < 0) | (used >= pages)).any():
                return False
    return True


def seed_bytes(b, kv, group, ps, d, pages, max_pages) -> bytes:
    s = Seed().int_in(0, b).int_in(1, kv).int_in(1, group).int_in(1, ps).int_in(1, d).int_in(0, pages)
    s = s.int_in(0, max_pages)
    s = s.raw(b"".join(struct.pack("<i", (i % pages) + 1) for i in range(b * kv * max_pages)))
    for i in range(b * kv):
        s = s.int_in(0, 1 + (i * 3) % (max_pages * ps + 1))
    return s.byte(7).bytes()


def seeds():
    return [seed_bytes(*a) for a in [(1, 1, 1, 4, 3, 4, 2), (2, 2, 3, 8, 9, 12, 6), (3, 3, 2, 1, 5, 10, 5)]]


def TestOneInput(data: bytes):
    q, k, v, tables, lengths = args(Input(data))
    ok = valid(k, tables, lengths)
    try:
        out, scores = _ops.paged_decode_attention(q, k, v, tables, lengths, 0.5, True)
    except Exception as err:  # noqa: BLE001 - the oracle decides
        expect_clear_error(err, NAMES)
        assert not ok, f"valid input rejected: {err}"
        return
    assert ok, "a table entry outside the pool or a length beyond capacity was accepted"
    want, want_scores = ref.paged_decode_attention(q, k, v, tables, lengths, 0.5, True)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scores, want_scores, rtol=1e-4, atol=1e-5)
