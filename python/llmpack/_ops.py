"""Typed wrappers over ``torch.ops.llmpack.*`` and every op's fake (meta) impl.

Fake impls describe output shapes/dtypes without computing, so the ops work
under torch.compile, FakeTensor and meta tensors. The shape rules mirror the
layout documented in the C++ headers (csrc/<family>/<family>.h).
"""
from __future__ import annotations

import torch

from . import _lib  # noqa: F401  (loads the library, which defines the ops)

_ops = torch.ops.llmpack


# --------------------------------------------------------------------------
# 2:4 sparsity (csrc/sparse24/sparse24.h)
# --------------------------------------------------------------------------
def _meta_cols(k: int) -> int:
    return (k // 4 + 1) // 2


@torch.library.register_fake("llmpack::sparse24_compress")
def _(W):
    torch._check(W.dim() == 2, lambda: f"sparse24_compress: W must be 2-D, got {W.dim()}-D")
    n, k = W.shape
    torch._check(k % 4 == 0, lambda: f"sparse24_compress: K={k} must be a multiple of 4")
    return W.new_empty(n, k // 2), W.new_empty(n, _meta_cols(k), dtype=torch.uint8)


@torch.library.register_fake("llmpack::sparse24_decompress")
def _(values, meta):
    torch._check(values.dim() == 2, lambda: "sparse24_decompress: values must be 2-D")
    n, half = values.shape
    return values.new_empty(n, half * 2)


@torch.library.register_fake("llmpack::sparse24_linear")
def _(x, values, meta, bias=None):
    torch._check(x.shape[-1] == values.shape[1] * 2,
                 lambda: f"sparse24_linear: x's last dim {x.shape[-1]} != K={values.shape[1] * 2}")
    torch._check(x.dtype == values.dtype, lambda: "sparse24_linear: x and values dtypes must match")
    return x.new_empty(*x.shape[:-1], values.shape[0])


@torch.library.register_fake("llmpack::sparse24_meta_to_cutlass")
def _(meta):
    torch._check(meta.dim() == 2, lambda: f"sparse24_meta_to_cutlass: meta must be 2-D, got {meta.dim()}-D")
    torch._check(meta.dtype == torch.uint8, lambda: "sparse24_meta_to_cutlass: meta must be uint8")
    n, mcols = meta.shape
    return meta.new_empty(((n + 31) // 32 * 32) * ((mcols + 3) // 4 * 4), dtype=torch.uint8)


def sparse24_compress(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack a 2:4-sparse ``W [N, K]`` into ``(values [N, K/2], meta uint8 [N, ceil(K/8)])``."""
    return _ops.sparse24_compress(W)


def sparse24_decompress(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`sparse24_compress`."""
    return _ops.sparse24_decompress(values, meta)


def sparse24_linear(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x [..., K] @ W^T + bias`` with ``W [N, K]`` packed 2:4 as ``(values, meta)``."""
    return _ops.sparse24_linear(x, values, meta, bias)


def sparse24_meta_to_cutlass(meta: torch.Tensor) -> torch.Tensor:
    """2:4 ``meta [N, ceil(K/8)]`` -> flat uint8 metadata in CUTLASS's sm80 sparse-GEMM layout
    (``round_up(N, 32) * round_up(ceil(K/8), 4)`` bytes, validated; csrc/sparse24/sparse24_reorder.h)."""
    return _ops.sparse24_meta_to_cutlass(meta)


# --------------------------------------------------------------------------
# DFloat11 (csrc/df11/df11.h)
# --------------------------------------------------------------------------
DF11_CHUNK = 2048       # values per independently decodable chunk
DF11_GUARD_BYTES = 16   # zero bytes after the stream


def _df11_chunks(n: int) -> int:
    return (n + DF11_CHUNK - 1) // DF11_CHUNK


@torch.library.register_fake("llmpack::df11_encode")
def _(W):
    torch._check(W.dtype == torch.bfloat16, lambda: f"df11_encode: W must be bfloat16, got {W.dtype}")
    n = W.numel()
    stream_bytes = torch.library.get_ctx().new_dynamic_size()  # depends on the data
    return (W.new_empty(256, dtype=torch.uint8), W.new_empty(stream_bytes, dtype=torch.uint8),
            W.new_empty(_df11_chunks(n) + 1, dtype=torch.uint32), W.new_empty(n, dtype=torch.uint8))


@torch.library.register_fake("llmpack::df11_decode")
def _(lengths, stream, offsets, sign_mantissa):
    return sign_mantissa.new_empty(sign_mantissa.shape[0], dtype=torch.bfloat16)


@torch.library.register_fake("llmpack::df11_decode_into")
def _(lengths, stream, offsets, sign_mantissa, out):
    return None


@torch.library.register_fake("llmpack::df11_linear")
def _(x, lengths, stream, offsets, sign_mantissa, out_features, bias=None):
    torch._check(x.dtype == torch.bfloat16, lambda: "df11_linear: x must be bfloat16")
    return x.new_empty(*x.shape[:-1], out_features)


@torch.library.register_fake("llmpack::df11_decode_official")
def _(luts, encoded_exponent, sign_mantissa, output_positions, gaps, bytes_per_thread, threads_per_block):
    return sign_mantissa.new_empty(sign_mantissa.shape[0], dtype=torch.bfloat16)


def df11_encode(W: torch.Tensor):
    """bf16 ``W`` (any shape, CPU) -> ``(lengths, stream, offsets, sign_mantissa)``, lossless."""
    return _ops.df11_encode(W)


def df11_decode(lengths, stream, offsets, sign_mantissa) -> torch.Tensor:
    """The container back as a flat bf16 tensor (bit-exact)."""
    return _ops.df11_decode(lengths, stream, offsets, sign_mantissa)


def df11_decode_into(lengths, stream, offsets, sign_mantissa, out: torch.Tensor) -> None:
    """Decode into ``out`` (contiguous bf16 with the container's element count)."""
    _ops.df11_decode_into(lengths, stream, offsets, sign_mantissa, out)


def df11_linear(x, lengths, stream, offsets, sign_mantissa, out_features: int, bias=None) -> torch.Tensor:
    """``x [..., K] @ W^T + bias`` with bf16 ``W [out_features, K]`` held DFloat11-compressed."""
    return _ops.df11_linear(x, lengths, stream, offsets, sign_mantissa, out_features, bias)


def df11_decode_official(luts, encoded_exponent, sign_mantissa, output_positions, gaps,
                         bytes_per_thread: int, threads_per_block: int) -> torch.Tensor:
    """Decode the official DFloat11 layout (PyPI dfloat11 0.5) on the CPU, validated."""
    return _ops.df11_decode_official(luts, encoded_exponent, sign_mantissa, output_positions, gaps,
                                     bytes_per_thread, threads_per_block)


# --------------------------------------------------------------------------
# Paged KV cache (csrc/kvcache/kvcache.h)
# --------------------------------------------------------------------------
@torch.library.register_fake("llmpack::paged_decode_attention")
def _(q, k_pages, v_pages, block_tables, lengths, scale, return_scores=False):
    b, _, _ = q.shape
    kv_heads, max_pages = block_tables.shape[1], block_tables.shape[2]
    scores = q.new_empty(b if return_scores else 0, kv_heads, max_pages * k_pages.shape[1], dtype=torch.float32)
    return q.new_empty(q.shape), scores


@torch.library.register_fake("llmpack::paged_kv_append")
def _(k_pages, v_pages, block_tables, lengths, token_index, rotation, heavy_scores, free_pages, num_free, seen,
      k, v, pos, real, budget, sinks, recent, heavy):
    return k.new_empty(k.shape[:2], dtype=torch.long), k.new_empty(1, dtype=torch.long)


@torch.library.register_fake("llmpack::paged_kv_reposition")
def _(k_pages, block_tables, lengths, token_index, rotation, k_orig, orig_rotation, slot, k, pos, reposition,
      inv_freq):
    return None


def paged_decode_attention(q, k_pages, v_pages, block_tables, lengths, scale: float, return_scores: bool = False):
    """Decode attention over a paged KV cache (layout: csrc/kvcache/kvcache.h):
    ``q [B, Hq, D]``, pools ``[num_pages, page_size, D]``, ``block_tables``
    int32 ``[B, Hkv, max_pages]``, ``lengths`` int32 ``[B, Hkv]`` ->
    ``(out [B, Hq, D], scores fp32 [B, Hkv, max_pages * page_size])``; scores
    (each slot's probability summed over its query heads) only with
    ``return_scores``, else an empty tensor."""
    return _ops.paged_decode_attention(q, k_pages, v_pages, block_tables, lengths, scale, return_scores)


def paged_kv_append(k_pages, v_pages, block_tables, lengths, token_index, rotation, heavy_scores, free_pages,
                    num_free, seen, k, v, pos, real, budget, sinks, recent, heavy):
    """One decode step of PagedKVCache's bookkeeping (CPU and CUDA; rule and layout in
    csrc/kvcache/kvcache_append.h): stores ``k``/``v [B, Hkv, D]`` under
    each row's policy, mutating the cache tensors in place; returns ``(slot
    [B, Hkv], status [1])``, status > 0 meaning nothing was written because
    the pool or block tables must grow first."""
    return _ops.paged_kv_append(k_pages, v_pages, block_tables, lengths, token_index, rotation, heavy_scores,
                                free_pages, num_free, seen, k, v, pos, real, budget, sinks, recent, heavy)


def paged_kv_reposition(k_pages, block_tables, lengths, token_index, rotation, k_orig, orig_rotation, slot, k, pos,
                        reposition, inv_freq):
    """StreamingLLM's re-positioning after a decode step (CPU and CUDA; rule
    and layout in csrc/kvcache/kvcache_reposition.h): records the new keys
    ``k`` fp32 ``[B, Hkv, D]`` at ``slot`` (paged_kv_append's result) and
    re-rotates the kept keys of the rows with ``reposition[b]`` to their
    positions inside the cache, in place."""
    _ops.paged_kv_reposition(k_pages, block_tables, lengths, token_index, rotation, k_orig, orig_rotation, slot, k,
                             pos, reposition, inv_freq)


# --------------------------------------------------------------------------
# BTC: arbitrary-bit quantized matmul (csrc/btc/btc.h)
# --------------------------------------------------------------------------
def btc_k_words(k: int) -> int:
    """Words per packed row: ceil(K / 32) rounded up to a multiple of 4 (K padded to 128)."""
    return (-(-k // 32) + 3) // 4 * 4


def btc_num_groups(group_size: int, k: int) -> int:
    return 1 if group_size <= 0 else -(-k // group_size)


@torch.library.register_fake("llmpack::btc_pack")
def _(codes, wbits, group_size):
    n, k = codes.shape
    return (codes.new_empty(n, btc_k_words(k), wbits, dtype=torch.int32),
            codes.new_empty(n, btc_num_groups(group_size, k), dtype=torch.int32))


@torch.library.register_fake("llmpack::btc_unpack")
def _(planes, wbits, in_features):
    return planes.new_empty(planes.shape[0], in_features, dtype=torch.uint8)


@torch.library.register_fake("llmpack::btc_to_fields")
def _(planes, wbits):
    return planes.new_empty(planes.shape[0], planes.shape[1], 4 * wbits, dtype=torch.uint8)


@torch.library.register_fake("llmpack::btc_to_planes")
def _(fields, wbits):
    return fields.new_empty(fields.shape[0], fields.shape[1], wbits, dtype=torch.int32)


@torch.library.register_fake("llmpack::btc_quantize_activations")
def _(x, abits, group_size, symmetric=False):
    k = x.shape[-1]
    m = x.numel() // k if k else 0
    return (x.new_empty(m, btc_k_words(k), abits, dtype=torch.int32), x.new_empty(m, dtype=torch.float32),
            x.new_empty(m, dtype=torch.int32), x.new_empty(m, btc_num_groups(group_size, k), dtype=torch.int32))


@torch.library.register_fake("llmpack::btc_matmul_int")
def _(x_planes, w_planes, abits, wbits, group_size, in_features):
    return x_planes.new_empty(x_planes.shape[0], w_planes.shape[0], btc_num_groups(group_size, in_features),
                              dtype=torch.int32)


@torch.library.register_fake("llmpack::btc_linear")
def _(x, planes, scales, zeros, offsets, code_sums, wbits, abits, group_size, bias=None, act_symmetric=False,
      scaled_sums=None):
    torch._check(planes.shape[1] == btc_k_words(x.shape[-1]),
                 lambda: f"btc_linear: planes {tuple(planes.shape)} do not match K = {x.shape[-1]}")
    return x.new_empty(*x.shape[:-1], planes.shape[0])


def btc_pack(codes: torch.Tensor, wbits: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes uint8 ``[N, K]`` (each < 2**wbits) -> ``(planes int32 [N, k_words(K), wbits],
    code_sums int32 [N, groups])``; the bit-plane layout is in csrc/btc/btc.h."""
    return _ops.btc_pack(codes, wbits, group_size)


def btc_unpack(planes: torch.Tensor, wbits: int, in_features: int) -> torch.Tensor:
    """Inverse of :func:`btc_pack`'s planes -> codes uint8 ``[N, in_features]``."""
    return _ops.btc_unpack(planes, wbits, in_features)


def btc_to_fields(planes: torch.Tensor, wbits: int) -> torch.Tensor:
    """Planes int32 ``[N, k_words, wbits]`` -> the CPU kernels' fields layout uint8
    ``[N, k_words, 4 * wbits]`` (same bytes; csrc/btc/btc.h). ``btc_linear`` reads either on CPU."""
    return _ops.btc_to_fields(planes, wbits)


def btc_to_planes(fields: torch.Tensor, wbits: int) -> torch.Tensor:
    """Inverse of :func:`btc_to_fields`."""
    return _ops.btc_to_planes(fields, wbits)


def btc_quantize_activations(x: torch.Tensor, abits: int, group_size: int, symmetric: bool = False):
    """Per-token quantization of ``x [..., K]`` -> ``(planes [M, k_words, abits], scales fp32 [M],
    zeros int32 [M], code_sums int32 [M, groups])``."""
    return _ops.btc_quantize_activations(x, abits, group_size, symmetric)


def btc_matmul_int(x_planes, w_planes, abits: int, wbits: int, group_size: int, in_features: int) -> torch.Tensor:
    """The exact integer core ``I int32 [M, N, groups]`` (per-group sum of q * p)."""
    return _ops.btc_matmul_int(x_planes, w_planes, abits, wbits, group_size, in_features)


def btc_linear(x, planes, scales, zeros, offsets, code_sums, wbits: int, abits: int, group_size: int,
               bias=None, act_symmetric: bool = False, scaled_sums=None) -> torch.Tensor:
    """``x [..., K] @ W^T + bias`` with W packed as BTC planes; ``abits=16`` keeps x float.
    ``scaled_sums`` (optional, :func:`btc_scaled_sums` of the same scales and code sums) saves the
    CPU kernels forming it per call; it is trusted, like ``code_sums``."""
    return _ops.btc_linear(x, planes, scales, zeros, offsets, code_sums, wbits, abits, group_size, bias,
                           act_symmetric, scaled_sums)


def btc_scaled_sums(scales: torch.Tensor, code_sums: torch.Tensor) -> torch.Tensor:
    """fp32 ``[N]``: sum over groups of ``scales * code_sums``, the one per-row term the zero-point /
    offset corrections need from the codes (csrc/btc/btc.h)."""
    return (scales.float() * code_sums.float()).sum(1)
