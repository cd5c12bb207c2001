"""Shared pieces of the fuzz targets (tests/fuzz/fuzz_*.py).

A target is a module with

* ``TestOneInput(data: bytes)``: builds the arguments of one entry point from
  the bytes (shapes, dtypes and the packed bytes a user might read from a
  file), calls it, and applies the oracle: the call either raises a *clear*
  error (``expect_clear_error``: ValueError/RuntimeError whose message names
  the offending tensor) or returns exactly what the plain-PyTorch reference
  computes. Anything else (another exception, a wrong result) propagates and
  is a crash to atheris; a sanitizer report or a hang kills the process.
* ``seeds()``: valid inputs (bytes) the fuzzer starts from.

``tests/fuzz/run.py`` runs the targets under atheris (coverage-guided over
llmpack's Python layer, on the ASan + UBSan build of the library);
``tests/test_fuzz_targets.py`` replays the seeds and every stored crasher
(``tests/fuzz/regressions/<target>/``) in the ordinary test run.
"""
from __future__ import annotations

import struct

import torch

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class Input:
    """Reads typed fields off the front of the fuzz bytes; past the end every
    field reads as zero, so any byte string is a valid input."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out + bytes(n - len(out))

    def byte(self) -> int:
        return self.take(1)[0]

    def int_in(self, lo: int, hi: int) -> int:
        """An int in [lo, hi] from two bytes."""
        return lo + struct.unpack("<H", self.take(2))[0] % (hi - lo + 1)

    def choice(self, options):
        return options[self.byte() % len(options)]

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out


class Seed:
    """Writes fields in the order ``Input`` reads them (to build seeds)."""

    def __init__(self):
        self.parts: list[bytes] = []

    def byte(self, v: int) -> "Seed":
        self.parts.append(bytes([v & 0xFF]))
        return self

    def int_in(self, lo: int, v: int) -> "Seed":
        self.parts.append(struct.pack("<H", v - lo))
        return self

    def raw(self, b: bytes) -> "Seed":
        self.parts.append(bytes(b))
        return self

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def uint8_tensor(raw: bytes, shape) -> torch.Tensor:
    n = 1
    for s in shape:
        n *= s
    buf = bytearray(raw[:n]) + bytearray(max(0, n - len(raw)))
    return torch.frombuffer(buf, dtype=torch.uint8).clone().reshape(shape) if n else torch.zeros(shape, dtype=torch.uint8)


def small_int_values(src: Input, shape, dtype) -> torch.Tensor:
    """Integers in [-4, 4] (exact in every dtype, and their dot products too):
    kernel and reference must then agree bit for bit."""
    n = 1
    for s in shape:
        n *= s
    raw = uint8_tensor(src.take(min(n, 4096)), (min(n, 4096),))
    vals = (raw.to(torch.int64) % 9 - 4).repeat(max(1, -(-n // max(1, raw.numel()))))[:n]
    return vals.reshape(shape).to(dtype)


def expect_clear_error(err: Exception, names: tuple[str, ...]):
    """Re-raise ``err`` unless it is a ValueError/RuntimeError whose message
    names one of ``names`` (the tensor, row or byte at fault)."""
    msg = str(err)
    if not isinstance(err, (ValueError, RuntimeError)) or "INTERNAL ASSERT" in msg:
        raise err
    if not any(name in msg for name in names):
        raise AssertionError(f"unclear error (names none of {names}): {type(err).__name__}: {msg}") from err


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shape, dtype and bit pattern (NaN payloads and -0.0 included)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.is_floating_point:
        view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        return torch.equal(a.contiguous().view(view), b.contiguous().view(view))
    return torch.equal(a, b)


def block_tables_near_pool(src: Input, b: int, kv: int, max_pages: int, pages: int) -> torch.Tensor:
    """int32 [b, kv, max_pages] block tables from raw int32s: small values
    folded into -1 .. pages + 1 (mostly valid, some just outside the pool),
    large ones kept (far outside)."""
    raw = src.take(4 * b * kv * max_pages)
    tables = torch.tensor(struct.unpack(f"<{b * kv * max_pages}i", raw), dtype=torch.int32)
    tables = torch.where(tables.abs() < 1 << 20, tables % (pages + 3) - 1, tables)
    return tables.view(b, kv, max_pages).contiguous()


def rejected_untouched(err: Exception, want, state: dict, before: dict, names) -> None:
    """The oracle of an all-or-nothing op that raised: a clear error naming
    one of ``names``, a state the reference rejects too (``want`` None), and
    every tensor of ``state`` bit for bit as it was."""
    expect_clear_error(err, names)
    assert want is None, f"valid state rejected: {err}"
    for n, t in state.items():
        assert same_bits(t, before[n]), f"{n} changed by a rejected step"
