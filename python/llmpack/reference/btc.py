"""Plain-PyTorch reference for the BTC (arbitrary-bit quantized matmul) ops.

The oracle of the tests: written from the layout and rules in
``csrc/btc/btc.h`` with ordinary tensor ops and nothing shared with the
kernels. Integer results are exact (the integer matmul runs in float64,
exact for every K and bit width the ops accept); float results are computed
in float64 from the dequantized operands.
"""
from __future__ import annotations

import torch

WORD_BITS = 32
K_ALIGN_WORDS = 4


def k_words(k: int) -> int:
    """Words per packed row: ceil(K / 32) rounded up to a multiple of 4 (K padded to 128)."""
    w = -(-k // WORD_BITS)
    return -(-w // K_ALIGN_WORDS) * K_ALIGN_WORDS


def bit_of(e: torch.Tensor | int):
    """Bit inside its 32-bit word of element e (0..31) of a chunk: 8 (e % 4) + e // 4."""
    return 8 * (e % 4) + e // 4


def num_groups(group_size: int, k: int) -> int:
    return 1 if group_size <= 0 else -(-k // group_size)


def _padded(codes: torch.Tensor) -> torch.Tensor:
    rows, k = codes.shape
    out = torch.zeros(rows, k_words(k) * WORD_BITS, dtype=torch.int64)
    out[:, :k] = codes.to(torch.int64)
    return out


def pack_planes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes ``[R, K]`` (each < 2**bits) -> planes int32 ``[R, k_words(K), bits]``."""
    rows, k = codes.shape
    c = _padded(codes).view(rows, -1, WORD_BITS)                        # [R, W, 32] by element
    shifts = bit_of(torch.arange(WORD_BITS)).to(torch.int64)            # element e -> its bit
    planes = torch.empty(rows, c.shape[1], bits, dtype=torch.int64)
    for i in range(bits):
        planes[:, :, i] = (((c >> i) & 1) << shifts).sum(-1)
    return (planes - ((planes >= 2**31).to(torch.int64) << 32)).to(torch.int32)   # uint32 bits as int32


def unpack_planes(planes: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_planes` -> codes uint8 ``[R, K]`` (padding dropped)."""
    rows = planes.shape[0]
    words = planes.to(torch.int64) & 0xFFFFFFFF                          # [R, W, bits]
    shifts = bit_of(torch.arange(WORD_BITS)).to(torch.int64)
    codes = torch.zeros(rows, words.shape[1], WORD_BITS, dtype=torch.int64)
    for i in range(bits):
        codes |= ((words[:, :, i, None] >> shifts) & 1) << i
    return codes.reshape(rows, -1)[:, :k].to(torch.uint8)


def pack_fields(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes ``[R, K]`` -> the fields layout uint8 ``[R, k_words(K), 4 * bits]`` (btc.h): per
    32-element chunk, nibble fields (byte j: element j low, j + 16 high), then a crumb field
    (byte j, bits 2s..2s+1: element 8s + j), then a plane word, low code bits first."""
    rows, k = codes.shape
    c = _padded(codes).view(rows, -1, WORD_BITS)                         # [R, W, 32]
    parts, lo = [], 0
    for _ in range(bits // 4):
        f = (c >> lo) & 15
        parts.append(f[..., :16] | (f[..., 16:] << 4))
        lo += 4
    if bits % 4 >= 2:
        f = ((c >> lo) & 3).view(rows, -1, 4, 8)                         # [R, W, s, j] = element 8s + j
        parts.append((f << (2 * torch.arange(4).view(4, 1))).sum(-2))
        lo += 2
    if bits % 2:
        shifts = bit_of(torch.arange(WORD_BITS)).to(torch.int64)
        word = (((c >> lo) & 1) << shifts).sum(-1, keepdim=True)        # [R, W, 1]
        parts.append((word >> (8 * torch.arange(4))) & 255)              # little-endian bytes
    return torch.cat(parts, -1).to(torch.uint8)


def group_sums(codes: torch.Tensor, group_size: int) -> torch.Tensor:
    """Per-(row, group) sums of the codes, int32 ``[R, groups]``."""
    rows, k = codes.shape
    g = num_groups(group_size, k)
    size = k if group_size <= 0 else group_size
    c = torch.zeros(rows, g * size, dtype=torch.int64)
    c[:, :k] = codes.to(torch.int64)
    return c.view(rows, g, size).sum(-1).to(torch.int32)


def quantize_activations(x: torch.Tensor, abits: int, symmetric: bool = False):
    """Per-token quantization of ``x [M, K]`` (the rule in btc.h) -> ``(codes uint8 [M, K],
    scales fp32 [M], zeros int32 [M])``; fp32 arithmetic, round half to even."""
    x = x.float()
    top = 2**abits - 1
    if symmetric:
        amax = x.abs().amax(-1)
        scale = amax / float(2 ** (abits - 1) - 1)
        zero = torch.full_like(amax, float(2 ** (abits - 1)))
    else:
        lo, hi = x.amin(-1), x.amax(-1)
        scale = (hi - lo) / float(top)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    if not symmetric:
        zero = torch.clamp(torch.round(-lo / scale), 0, top)
    finite = torch.isfinite(x).all(-1) & torch.isfinite(scale)
    codes = torch.clamp(torch.round(x / scale[:, None]) + zero[:, None], 0, top)
    codes = torch.where(finite[:, None], codes, torch.zeros_like(codes))
    scale = torch.where(finite, scale, torch.full_like(scale, float("nan")))
    zero = torch.where(finite, zero, torch.zeros_like(zero))
    return codes.to(torch.uint8), scale, zero.to(torch.int32)


def matmul_int(x_codes: torch.Tensor, w_codes: torch.Tensor, group_size: int) -> torch.Tensor:
    """Exact integer core ``I [M, N, groups]`` = per-group sum of q * p."""
    k = x_codes.shape[1]
    g = num_groups(group_size, k)
    size = k if group_size <= 0 else group_size
    out = []
    for j in range(g):
        sl = slice(j * size, min((j + 1) * size, k))
        out.append(x_codes[:, sl].double() @ w_codes[:, sl].double().T)
    return torch.stack(out, -1).to(torch.int32)


def _per_element(t: torch.Tensor, group_size: int, k: int) -> torch.Tensor:
    size = k if group_size <= 0 else group_size
    return t.double().repeat_interleave(size, dim=1)[:, :k]


def dequantize(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None = None,
               offsets: torch.Tensor | None = None, group_size: int = 128) -> torch.Tensor:
    """W float64 ``[N, K]`` = s (q - z), or s q + m."""
    k = codes.shape[1]
    s = _per_element(scales, group_size, k)
    if zeros is not None:
        return s * (codes.double() - _per_element(zeros, group_size, k))
    return s * codes.double() + _per_element(offsets, group_size, k)


def linear(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, zeros=None, offsets=None, *,
           abits: int, group_size: int, bias=None, act_symmetric: bool = False) -> torch.Tensor:
    """``btc_linear``'s value: dequantize W (and x, for abits < 16), multiply in float64."""
    w = dequantize(codes, scales, zeros, offsets, group_size)
    x2 = x.reshape(-1, x.shape[-1])
    if abits == 16:
        xd = x2.double()
    else:
        c, s, z = quantize_activations(x2, abits, act_symmetric)
        xd = s.double()[:, None] * (c.double() - z.double()[:, None])
    y = xd @ w.T
    if bias is not None:
        y = y + bias.double()
    return y.to(x.dtype).reshape(*x.shape[:-1], codes.shape[0])
