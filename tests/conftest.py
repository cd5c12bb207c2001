"""Shared test helpers: ISA-level sweep, op checks, data-scaled tolerances."""
from __future__ import annotations

import pytest
import torch

import llmpack
from llmpack import _lib


@pytest.fixture(params=_lib.supported_isas())
def isa(request):
    """Runs a test once per CPU ISA level this machine supports, so the
    fallbacks are exercised as well as the fastest path."""
    before = _lib.active_isa()
    got = _lib.set_isa(request.param)
    assert got == request.param
    yield got
    _lib.set_isa(before)


def check_op(op, args, kwargs=None, compile_fn=None):
    """torch.library.opcheck (schema, fake impl, autograd registration,
    dispatch) plus one torch.compile(fullgraph=True) call compared with eager.

    ``compile_fn`` wraps the op in a function to compile; default calls op."""
    kwargs = kwargs or {}
    torch.library.opcheck(op, args, kwargs)
    fn = compile_fn or (lambda *a: op(*a, **kwargs))
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    eager_out, comp_out = fn(*args), compiled(*args)
    torch.testing.assert_close(comp_out, eager_out, rtol=0, atol=0)


ULP = {torch.float32: 2**-23, torch.float16: 2**-10, torch.bfloat16: 2**-7}


def assert_close_dot(out: torch.Tensor, ref: torch.Tensor, magnitude: torch.Tensor, k: int):
    """Elementwise check for results of K-term dot products accumulated in
    fp32 and rounded to out.dtype. The bound scales with the data:
    fp32 accumulation error grows with sqrt(K) * sum_k |x_k w_k| (``magnitude``),
    plus one rounding of the result in the output dtype."""
    assert out.shape == ref.shape and out.dtype == ref.dtype, (out.shape, ref.shape, out.dtype, ref.dtype)
    if not out.numel():
        return
    acc_err = 4 * 2**-24 * max(k, 1) ** 0.5 * magnitude.float()
    tol = acc_err + ULP[out.dtype] * ref.float().abs() + 1e-30
    err = (out.float() - ref.float()).abs()
    bad = err > tol
    assert not bad.any(), (
        f"{int(bad.sum())} of {out.numel()} elements off; worst error {err.max().item():.3g} "
        f"(tolerance there {tol.flatten()[err.flatten().argmax()].item():.3g})")
