"""Reference DFloat11: our container (layout: csrc/df11/df11.h) and a model of
the official DFloat11 GPU kernel (PyPI dfloat11 0.5, LeanModels/DFloat11's
decode.cu), in plain Python / PyTorch. The test oracle: slow, written from the
format's description, sharing no code with the kernels.
"""
from __future__ import annotations

import math

import numpy as np
import torch

CHUNK = 2048
MAX_LEN = 11
GUARD = 16


def split(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bf16 values -> (exponent bytes, sign+mantissa bytes), both uint8 [n]."""
    bits = w.contiguous().view(torch.int16).flatten().to(torch.int32) & 0xFFFF
    exponents = ((bits >> 7) & 0xFF).to(torch.uint8)
    sm = (((bits >> 8) & 0x80) | (bits & 0x7F)).to(torch.uint8)
    return exponents, sm


def join(exponents: torch.Tensor, sm: torch.Tensor) -> torch.Tensor:
    e, s = exponents.to(torch.int32), sm.to(torch.int32)
    bits = ((s & 0x80) << 8) | (e << 7) | (s & 0x7F)
    return bits.to(torch.int16).view(torch.bfloat16) if bits.numel() else torch.empty(0, dtype=torch.bfloat16)


def package_merge_lengths(counts, max_len: int = MAX_LEN) -> list[int]:
    """Optimal lengths <= max_len (package-merge); ties as in df11_codes.cpp:
    leaves by (count, symbol), a leaf before a package of equal weight."""
    lengths = [0] * 256
    leaves = sorted((int(c), s) for s, c in enumerate(counts) if c > 0)
    n = len(leaves)
    if n == 0:
        return lengths
    if n == 1:
        lengths[leaves[0][1]] = 1
        return lengths
    # An item: (weight, Counter of leaf occurrences as a tuple of symbols).
    leaf_items = [(c, (s,)) for c, s in leaves]
    cur = list(leaf_items)
    for _ in range(max_len - 1):
        packages = [(cur[i][0] + cur[i + 1][0], cur[i][1] + cur[i + 1][1]) for i in range(0, len(cur) - 1, 2)]
        merged, i, j = [], 0, 0
        while i < len(leaf_items) or j < len(packages):
            if j == len(packages) or (i < len(leaf_items) and leaf_items[i][0] <= packages[j][0]):
                merged.append(leaf_items[i])
                i += 1
            else:
                merged.append(packages[j])
                j += 1
        cur = merged
    for _, syms in cur[: 2 * n - 2]:
        for s in syms:
            lengths[s] += 1
    return lengths


def canonical_codes(lengths) -> dict[int, tuple[int, int]]:
    """{symbol: (length, code)} with the code's first bit as its most
    significant one; assigned in order of (length, symbol)."""
    codes, code, prev = {}, 0, 0
    for length, s in sorted((l, s) for s, l in enumerate(lengths) if l):
        code <<= length - prev
        codes[s] = (length, code)
        code += 1
        prev = length
    return codes


def _chunk_bytes(codes, exps: np.ndarray) -> bytes:
    """Codes of one chunk, LSB-first, zero-padded to a byte."""
    bits = []
    for e in exps.tolist():
        length, code = codes[e]
        bits.extend((code >> (length - 1 - i)) & 1 for i in range(length))
    bits.extend([0] * ((-len(bits)) % 8))
    return np.packbits(np.array(bits, dtype=np.uint8), bitorder="little").tobytes() if bits else b""


def encode(w: torch.Tensor):
    """bf16 tensor -> (lengths uint8 [256], stream uint8, offsets uint32, sm uint8)."""
    exponents, sm = split(w)
    counts = torch.bincount(exponents.to(torch.int64), minlength=256).tolist()
    lengths = package_merge_lengths(counts)
    codes = canonical_codes(lengths)
    exps = exponents.numpy()
    parts, offsets = [], [0]
    for c in range(math.ceil(len(exps) / CHUNK)):
        parts.append(_chunk_bytes(codes, exps[c * CHUNK:(c + 1) * CHUNK]))
        offsets.append(offsets[-1] + len(parts[-1]))
    stream = b"".join(parts) + bytes(GUARD)
    return (torch.tensor(lengths, dtype=torch.uint8), torch.frombuffer(bytearray(stream), dtype=torch.uint8).clone(),
            torch.tensor(offsets, dtype=torch.int64).to(torch.uint32), sm)


def decode(lengths, stream, offsets, sm) -> torch.Tensor:
    """Container -> flat bf16. Raises ValueError on any inconsistency."""
    lengths = [int(v) for v in lengths.tolist()]
    if len(lengths) != 256 or max(lengths) > MAX_LEN:
        raise ValueError("lengths: bad code table")
    if sum(2.0 ** -l for l in lengths if l) > 1.0:
        raise ValueError("lengths: not a prefix code")
    by_code = {(l, c): s for s, (l, c) in canonical_codes(lengths).items()}
    n = sm.numel()
    off = [int(v) for v in offsets.to(torch.int64).tolist()]
    data = bytes(stream.numpy().tobytes())
    if len(off) != math.ceil(n / CHUNK) + 1 or off[0] != 0 or any(b < a for a, b in zip(off, off[1:])) \
            or len(data) != off[-1] + GUARD:
        raise ValueError("offsets: bad index")
    out = []
    for c in range(len(off) - 1):
        count = min(CHUNK, n - c * CHUNK)
        bits = np.unpackbits(np.frombuffer(data[off[c]:off[c + 1]], dtype=np.uint8), bitorder="little")
        pos = 0
        for _ in range(count):
            code = length = 0
            while (length, code) not in by_code:
                if pos >= len(bits) or length >= MAX_LEN:
                    raise ValueError(f"chunk {c}: corrupted stream")
                code = (code << 1) | int(bits[pos])
                pos += 1
                length += 1
            out.append(by_code[(length, code)])
    return join(torch.tensor(out, dtype=torch.uint8), sm)


# ------------------------------------------------------------------ official layout

def official_luts(codes: dict[int, tuple[int, int]]) -> torch.Tensor:
    """Official lookup tables for a code {symbol: (length, code MSB-first)}:
    table 0 is indexed by the first byte; a code longer than 8 bits makes its
    first-byte entry a pointer 256 - t to table t, indexed by the next byte;
    tables are ordered by the length of their prefix. Last row: code lengths.
    Symbols >= 240 cannot be represented (values >= 240 are pointers)."""
    if any(s >= 240 for s in codes):
        raise ValueError("the official DFloat11 layout cannot hold exponents >= 240 (|x| >= 2^113, Inf, NaN)")
    if any(l > 32 for l, _ in codes.values()):
        raise ValueError("official codes are at most 32 bits")
    prefixes = [""]
    for l, c in codes.values():
        bitsstr = format(c, f"0{l}b")
        for k in range(8, (l - 1) // 8 * 8 + 1, 8):
            if bitsstr[:k] not in prefixes:
                prefixes.append(bitsstr[:k])
    prefixes.sort(key=len)
    luts = np.zeros((len(prefixes) + 1, 256), dtype=np.uint8)
    first_symbol = min(codes)
    for t, p in enumerate(prefixes):
        row = [first_symbol] * 256  # bit patterns no code covers (only padding reaches them)
        for s, (l, c) in codes.items():
            b = format(c, f"0{l}b")
            if not b.startswith(p):
                continue
            rest = b[len(p):]
            if len(rest) <= 8:
                base = int(rest.ljust(8, "0"), 2)
                for i in range(1 << (8 - len(rest))):
                    row[base + i] = s
            elif len(p) + 8 < l:
                row[int(rest[:8], 2)] = 256 - prefixes.index(b[:len(p) + 8])
        luts[t] = row
    for s, (l, _) in codes.items():
        luts[-1, s] = l
    return torch.from_numpy(luts)


def to_official(w: torch.Tensor, bytes_per_thread: int = 8, threads_per_block: int = 512) -> dict:
    """``w`` in the official layout, coded with our canonical length-limited
    code: {luts, encoded_exponent, sign_mantissa, output_positions (uint32 as
    uint8), gaps (5 bits per thread, MSB-first)}."""
    exponents, sm = split(w)
    lengths = package_merge_lengths(torch.bincount(exponents.to(torch.int64), minlength=256).tolist())
    codes = canonical_codes(lengths)
    luts = official_luts(codes)
    span = 8 * bytes_per_thread
    block_span = span * threads_per_block
    bits, gaps, positions = [], [], []
    for i, e in enumerate(exponents.tolist()):
        pos = len(bits)
        while pos // span + 1 > len(gaps):
            gaps.append(pos - pos // span * span)
        while pos // block_span + 1 > len(positions):
            positions.append(i)
        l, c = codes[e]
        bits.extend((c >> (l - 1 - j)) & 1 for j in range(l))
    bits.extend([0] * ((-len(bits)) % 8))
    encoded = np.packbits(np.array(bits, dtype=np.uint8)) if bits else np.zeros(0, dtype=np.uint8)
    n_blocks = math.ceil(len(encoded) / (threads_per_block * bytes_per_thread))
    positions = positions[:n_blocks] + [sm.numel()]
    positions += [sm.numel()] * (n_blocks + 1 - len(positions))
    gaps = gaps[: threads_per_block * n_blocks] + [0] * (threads_per_block * n_blocks - len(gaps))
    gap_bits = [int(b) for g in gaps for b in format(g, "05b")]
    return {"luts": luts, "encoded_exponent": torch.from_numpy(encoded.copy()), "sign_mantissa": sm,
            "output_positions": torch.tensor(positions, dtype=torch.int64).to(torch.uint32).view(torch.uint8),
            "gaps": torch.from_numpy(np.packbits(np.array(gap_bits, dtype=np.uint8)) if gap_bits
                                     else np.zeros(0, dtype=np.uint8))}


def official_kernel_decode(luts, encoded_exponent, sign_mantissa, output_positions, gaps,
                           bytes_per_thread: int = 8, threads_per_block: int = 512) -> torch.Tensor:
    """A model of the official decode kernel's two phases, thread by thread:
    (1) each thread counts the codes that start in its bytes, from its 5-bit
    gap; (2) a block-wide exclusive scan of the counts, offset by the block's
    output position, gives each thread its first output index, and each
    thread decodes its codes again into those slots. Bytes past the stream
    read as 0 (the real kernel reads unset registers there; the output is
    clipped to the value count either way)."""
    luts = luts.numpy().astype(np.int64)
    enc = encoded_exponent.numpy().tobytes()
    sm = sign_mantissa.numpy()
    pos_out = output_positions.view(torch.uint32).to(torch.int64).tolist() if output_positions.dtype == torch.uint8 \
        else output_positions.to(torch.int64).tolist()
    gap_bits = np.unpackbits(gaps.numpy())
    n, n_bytes, n_luts = len(sm), len(enc), luts.shape[0]
    span = 8 * bytes_per_thread
    window = bytes_per_thread + 4
    n_blocks = math.ceil(n_bytes / (threads_per_block * bytes_per_thread))
    out = np.zeros(n, dtype=np.int64)

    def byte_at(bits: int, width: int, start: int) -> int:
        """8 bits of an MSB-first window of `width` bits from bit `start` (0s past its end)."""
        shift = width - 8 - start
        return (bits >> shift) & 0xFF if shift >= 0 else (bits << -shift) & 0xFF

    def symbol_at(bits: int, width: int, p: int) -> int:
        v = int(luts[0, byte_at(bits, width, p)])
        for level in range(1, 4):
            if v < 240:
                break
            v = int(luts[256 - v, byte_at(bits, width, p + 8 * level)])
        return v

    for b in range(n_blocks):
        counts, windows, gaps_b = [], [], []
        for t in range(threads_per_block):
            g = b * threads_per_block + t
            raw = enc[g * bytes_per_thread:g * bytes_per_thread + window]
            raw = raw + bytes(window - len(raw))
            bits = int.from_bytes(raw, "big")
            gap = int("".join(str(x) for x in gap_bits[g * 5:g * 5 + 5]) or "0", 2)
            p, count = gap, 0
            while p < span:  # phase 1: codes starting in this thread's bytes
                s = symbol_at(bits, 8 * window, p)
                p += int(luts[n_luts - 1, s])
                count += 1
                if luts[n_luts - 1, s] == 0:
                    raise ValueError(f"block {b} thread {t}: a code of length 0")
            counts.append(count)
            windows.append(bits)
            gaps_b.append(gap)
        start = pos_out[b]
        for t in range(threads_per_block):  # phase 2, with the exclusive scan
            idx = start + sum(counts[:t])
            end = min(idx + counts[t], n)
            p = gaps_b[t]
            while idx < end:
                s = symbol_at(windows[t], 8 * window, p)
                out[idx] = (((int(sm[idx]) & 0x80) << 8) | (s << 7) | (int(sm[idx]) & 0x7F))
                p += int(luts[n_luts - 1, s])
                idx += 1
    return torch.from_numpy(out.astype(np.int32)).to(torch.int16).view(torch.bfloat16)
