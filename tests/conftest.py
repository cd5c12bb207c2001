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


def scaled_tol(ref: torch.Tensor, k: int, dtype: torch.dtype) -> float:
    """Absolute tolerance for a K-term dot product in ``dtype``: unit roundoff
    times sqrt(K) times the output's scale (max |ref|)."""
    eps = {torch.float32: 2**-23, torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
    scale = ref.abs().max().item() if ref.numel() else 1.0
    return 4 * eps * max(k, 1) ** 0.5 * max(scale, 1e-6)
