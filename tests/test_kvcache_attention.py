"""paged_decode_attention against the plain-PyTorch reference (de-page, then
softmax attention in fp32): odd lengths, page sizes 1/16/32, GQA groups
1/4/8, mixed lengths per sequence and per kv-head, every dtype and ISA level,
unused pool slots and table entries poisoned; the emitted scores equal the
reference's probabilities; bad input is a clear error."""
from __future__ import annotations

import pytest
import torch

from conftest import check_op
from kv_pools import check_output
from kv_pools import kv_pool as paged
from llmpack import _ops
from llmpack.reference import kvcache as ref

DTYPES = [torch.float32, torch.bfloat16, torch.float16]




def run_case(lengths, heads_per_kv, page_size, d, dtype, seed=0, scale=None, q_zero=False):
    lengths = torch.tensor(lengths, dtype=torch.int32)
    b, kv = lengths.shape
    k, v, tables = paged(lengths, page_size, d, dtype, seed)
    q = torch.randn(b, kv * heads_per_kv, d, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    if q_zero:
        q.zero_()
    scale = d ** -0.5 if scale is None else scale
    out, scores = _ops.paged_decode_attention(q, k, v, tables, lengths, scale, True)
    want, want_scores = ref.paged_decode_attention(q, k, v, tables, lengths, scale, True)
    check_output(out, want, v, dtype)
    assert scores.shape == (b, kv, tables.shape[2] * page_size)
    torch.testing.assert_close(scores, want_scores, rtol=1e-4, atol=1e-6 * heads_per_kv)
    # The scores of a (sequence, kv-head) sum to the number of query heads sharing it.
    has = lengths > 0
    torch.testing.assert_close(scores.sum(-1)[has], torch.full_like(scores.sum(-1)[has], float(heads_per_kv)),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("page_size", [1, 16, 32])
@pytest.mark.parametrize("group", [1, 4, 8])
def test_matches_reference_mixed_lengths(isa, dtype, page_size, group):
    # 3 sequences x 2 kv-heads, lengths differing by sequence and by kv-head (0 included).
    run_case([[1, 17], [97, 33], [0, 5]], group, page_size, 64, dtype, seed=page_size + group)


@pytest.mark.parametrize("length", [1025, 4097])
@pytest.mark.parametrize("page_size", [16, 32])
def test_long_contexts(isa, length, page_size):
    run_case([[length, length - 7], [length // 3, 2]], 4, page_size, 128, torch.bfloat16, seed=length)


@pytest.mark.parametrize("d", [1, 7, 80, 128])
def test_head_dims(d):
    run_case([[9, 40]], 2, 16, d, torch.float32, seed=d)


# Every head-blocking of the vector kernels (4/3/2/1 heads at once, columns in
# 64/32/16/8-wide blocks, then the d % 8 tail) and slot counts around 8.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group", [2, 3, 5, 12])
@pytest.mark.parametrize("d", [7, 24, 80, 136])
def test_head_blocking(isa, dtype, group, d):
    run_case([[7, 8], [9, 16]], group, 16, d, dtype, seed=group * d)


# The vector exponential's edges: a peaked softmax whose small probabilities
# fall below e^-87 (flushed to 0, as the reference's underflow), and all
# logits equal (every exponential exactly 1).
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale, q_zero", [(60.0, False), (1.0, True)])
def test_extreme_logits(isa, dtype, scale, q_zero):
    run_case([[33, 100], [9, 1]], 3, 16, 40, dtype, seed=7, scale=scale, q_zero=q_zero)


def test_scores_off_by_default_and_compile():
    lengths = torch.tensor([[5, 19]], dtype=torch.int32)
    k, v, tables = paged(lengths, 16, 32, torch.float32, spare_pages=0)
    q = torch.randn(1, 4, 32)
    out, scores = _ops.paged_decode_attention(q, k, v, tables, lengths, 0.2)
    assert scores.numel() == 0
    k, v = torch.nan_to_num(k), torch.nan_to_num(v)  # opcheck compares runs; NaNs never reach the output anyway
    tables = tables.clamp(min=0)
    check_op(torch.ops.llmpack.paged_decode_attention.default, (q, k, v, tables, lengths, 0.2, True))


def test_bad_input_is_a_clear_error():
    lengths = torch.tensor([[5, 19]], dtype=torch.int32)
    k, v, tables = paged(lengths, 16, 32, torch.float32, spare_pages=0)
    q = torch.randn(1, 4, 32)
    call = lambda **kw: _ops.paged_decode_attention(kw.get("q", q), kw.get("k", k), kw.get("v", v),  # noqa: E731
                                                    kw.get("t", tables), kw.get("n", lengths), 0.2, True)
    bad = tables.clone()
    bad[0, 1, 1] = 99
    with pytest.raises(RuntimeError, match=r"block_tables\[0, 1, 1\] = 99 points outside the pool of 3 pages"):
        call(t=bad)
    with pytest.raises(RuntimeError, match=r"lengths\[0, 1\] = 33 is outside 0..32"):
        call(n=torch.tensor([[5, 33]], dtype=torch.int32))
    with pytest.raises(RuntimeError, match="multiple of the block tables' 2 kv-heads"):
        call(q=torch.randn(1, 3, 32))
    with pytest.raises(RuntimeError, match="must have one dtype"):
        call(k=k.bfloat16())
    with pytest.raises(RuntimeError, match="block_tables must be int32, got int64"):
        call(t=tables.long())
    with pytest.raises(RuntimeError, match=r"k_pages and v_pages must both be \[num_pages, page_size, 32\]"):
        call(v=v[:, :8])


@pytest.mark.parametrize("lengths", [[[4097]], [[1500, 3]], [[2048, 0]]])
def test_few_tasks_split_over_slots_with_log_sum_exp_merge(isa, lengths):
    """Fewer (sequence, kv-head) tasks than threads: the kernel splits long
    contexts into >= 512-slot parts and merges them; same result, same scores."""
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            run_case(lengths, 8, 16, 64, torch.float32, seed=threads)
    finally:
        torch.set_num_threads(before)
