"""compressed-tensors' ``sparse-24-bitmask`` format <-> llmpack 2:4 packing, and
the dispatch of compressed-tensors folders in ``llmpack.load`` (quantized
``pack-quantized`` / ``int-quantized`` ones: llmpack.io.ct_quant).

That format stores, per 2:4 weight ``[R, C]`` (facts from compressed-tensors'
Sparse24BitMaskCompressor): ``compressed`` ``[R, C/2]``, the kept values of
each row in ascending column order (exactly two per group of four, zeros
included when a group has fewer nonzeros); ``bitmask`` uint8 ``[R, ceil(C/8)]``,
the keep mask packed little-endian (bit j of byte b is column 8b + j, as
``numpy.packbits(..., bitorder="little")``); and ``shape``, the dense shape as
an int tensor ``[[R], [C]]``.

Our layout (csrc/sparse24/sparse24.h) keeps the same values in the same order,
so conversion only rewrites the metadata: a bitmask byte covers the same two
groups of 4 as one of our meta bytes, and each 4-bit half maps to a nibble
``i0 | i1 << 2`` through a 16-entry table.
"""
from __future__ import annotations

import torch

# 4-bit keep mask -> our nibble (0 = not exactly two bits set: invalid).
_MASK_TO_NIBBLE = torch.zeros(16, dtype=torch.uint8)
# our nibble -> 4-bit keep mask (0 = invalid nibble).
_NIBBLE_TO_MASK = torch.zeros(16, dtype=torch.uint8)
for _i0 in range(4):
    for _i1 in range(_i0 + 1, 4):
        _MASK_TO_NIBBLE[(1 << _i0) | (1 << _i1)] = _i0 | (_i1 << 2)
        _NIBBLE_TO_MASK[_i0 | (_i1 << 2)] = (1 << _i0) | (1 << _i1)


def _map_nibbles(table: torch.Tensor, packed: torch.Tensor):
    """Map both nibbles of every byte; also return where each was invalid (0)."""
    t = table.to(packed.device)
    lo, hi = t[(packed & 0xF).long()], t[(packed >> 4).long()]
    return lo | (hi << 4), (lo == 0), (hi == 0)


def to_sparse24_bitmask(values: torch.Tensor, meta: torch.Tensor) -> dict[str, torch.Tensor]:
    """llmpack ``(values [R, K/2], meta)`` -> ``{"shape", "compressed", "bitmask"}``."""
    r, k = values.shape[0], values.shape[1] * 2
    bitmask, bad_lo, bad_hi = _map_nibbles(_NIBBLE_TO_MASK, meta)
    if (k // 4) % 2 and meta.shape[1]:
        bad_hi[:, -1] = meta[:, -1] >> 4 != 0   # padding nibble: must be 0, maps to 0
        bitmask[:, -1] &= 0x0F
    if bad_lo.any() or bad_hi.any():
        raise ValueError("to_sparse24_bitmask: meta holds invalid nibbles (corrupted stream)")
    return {"shape": torch.tensor([r, k]).reshape(-1, 1), "compressed": values.clone(), "bitmask": bitmask}


def from_sparse24_bitmask(compressed: torch.Tensor, bitmask: torch.Tensor,
                          shape) -> tuple[torch.Tensor, torch.Tensor]:
    """``sparse-24-bitmask`` tensors -> llmpack ``(values, meta)``.

    Raises ValueError when the shapes disagree or a group of four does not have
    exactly two bits set (that format always keeps exactly two)."""
    dims = torch.as_tensor(shape).flatten().tolist()
    if len(dims) != 2 or any(not float(v).is_integer() or v < 0 for v in dims):
        raise ValueError(f"from_sparse24_bitmask: shape must hold the dense shape [rows, columns] as two "
                         f"non-negative integers, got {dims}")
    r, c = (int(v) for v in dims)
    if c % 4:
        raise ValueError(f"from_sparse24_bitmask: dense width {c} is not a multiple of 4")
    if tuple(compressed.shape) != (r, c // 2):
        raise ValueError(f"from_sparse24_bitmask: compressed has shape {tuple(compressed.shape)}, "
                         f"expected {(r, c // 2)} for dense shape {(r, c)}")
    if bitmask.dtype != torch.uint8 or tuple(bitmask.shape) != (r, (c + 7) // 8):
        raise ValueError(f"from_sparse24_bitmask: bitmask must be uint8 of shape {(r, (c + 7) // 8)}, "
                         f"got {bitmask.dtype} {tuple(bitmask.shape)}")
    meta, bad_lo, bad_hi = _map_nibbles(_MASK_TO_NIBBLE, bitmask)
    if (c // 4) % 2 and r:
        bad_hi[:, -1] = bitmask[:, -1] >> 4 != 0  # bits past column c must be clear
        meta[:, -1] &= 0x0F
    bad = torch.stack([bad_lo, bad_hi], -1).flatten(1)
    if bad.any():
        row, g = divmod(int(bad.flatten().nonzero()[0]), bad.shape[1])
        raise ValueError(f"from_sparse24_bitmask: row {row}, group {g} (columns {4 * g}..{4 * g + 3}) "
                         "does not keep exactly 2 of 4")
    return compressed.clone(), meta


def load_compressed_tensors(cfg: dict, qc: dict, reader, model):
    """Fill ``model`` (a skeleton from config.json) from a compressed-tensors
    folder: one whose ``sparsity_config.format`` is ``sparse-24-bitmask`` (every
    Linear stored as ``<name>.compressed / .bitmask / .shape`` becomes a
    SparseLinear, bit-exact: same kept values), or one quantized with
    ``pack-quantized`` / ``int-quantized`` config groups (every targeted Linear
    becomes a QuantLinear with the file's codes, scales and zero points: see
    llmpack.io.ct_quant). Everything else loads as is. ``reader`` is
    llmpack.io.checkpoint's file reader."""
    sc = qc.get("sparsity_config") or {}
    if not isinstance(sc, dict):
        raise ValueError(f"config.json: quantization_config.sparsity_config must be an object, got {sc!r}")
    fmt = sc.get("format") if sc else None
    if fmt == "dense":  # sparsity recorded, weights stored dense: nothing to convert
        fmt = None
    quantized = bool(qc.get("config_groups"))
    if fmt is not None and quantized:
        raise ValueError(f"config.json: this compressed-tensors checkpoint is both sparse ({fmt!r}) and quantized "
                         "(config_groups); llmpack reads 2:4 sparse-24-bitmask ones without quantization, and "
                         "pack-quantized / int-quantized ones without sparsity compression")
    if fmt is None and quantized:
        from .ct_quant import load_quantized

        return load_quantized(cfg, qc, reader, model)
    if fmt != "sparse-24-bitmask":
        raise ValueError(f"config.json: compressed-tensors checkpoint with sparsity format {fmt!r} and no "
                         "quantization config groups; llmpack reads 'sparse-24-bitmask', 'pack-quantized' and "
                         "'int-quantized'")
    return _load_sparse24(cfg, qc, reader, model)


def _load_sparse24(cfg: dict, qc: dict, reader, model):
    from torch import nn

    from ..nn.sparse_linear import SparseLinear
    from .checkpoint import _check_like, _set_module, fill_from_files

    names = set(reader.names())
    prefixes = sorted(n[: -len(".bitmask")] for n in names if n.endswith(".bitmask"))
    done, consumed = set(), set()
    for prefix in prefixes:
        parts = [f"{prefix}.{p}" for p in ("compressed", "bitmask", "shape")]
        missing = [p for p in parts if p not in names]
        if missing:
            raise ValueError(f"compressed-tensors tensor {prefix!r}: {missing[0]} is missing")
        try:
            lin = model.get_submodule(prefix)
        except AttributeError:
            raise ValueError(f"compressed-tensors tensor {prefix!r}: no such module in the model") from None
        if not isinstance(lin, nn.Linear):
            raise ValueError(f"compressed-tensors tensor {prefix!r}: module is {type(lin).__name__}, not a Linear")
        comp_shape, comp_dtype = reader.shape_dtype(parts[0])
        if comp_shape != (lin.out_features, lin.in_features // 2):
            raise ValueError(f"tensor {parts[0]!r}: shape {list(comp_shape)}, the model's "
                             f"{lin.in_features}->{lin.out_features} Linear needs "
                             f"{[lin.out_features, lin.in_features // 2]}")
        try:
            values, meta = from_sparse24_bitmask(reader.get(parts[0]), reader.get(parts[1]), reader.get(parts[2]))
        except ValueError as err:
            raise ValueError(f"compressed-tensors module {prefix!r}: {err}") from err
        if (values.shape[0], values.shape[1] * 2) != (lin.out_features, lin.in_features):
            raise ValueError(f"tensor {parts[2]!r}: dense shape {[values.shape[0], values.shape[1] * 2]} does not "
                             f"match the model's {lin.in_features}->{lin.out_features} Linear")
        dtype = lin.weight.dtype
        sparse = SparseLinear(lin.in_features, lin.out_features, lin.bias is not None, dtype=dtype)
        sparse.values.copy_(values.to(dtype))
        sparse.meta.copy_(meta)
        if lin.bias is not None:
            if f"{prefix}.bias" not in names:
                raise ValueError(f"compressed-tensors module {prefix!r}: {prefix}.bias is missing")
            _check_like(reader, f"{prefix}.bias", sparse.bias, float_ok=True)
            sparse.bias.data.copy_(reader.get(f"{prefix}.bias").to(dtype))
            consumed.add(f"{prefix}.bias")
        _set_module(model, prefix, sparse)
        consumed.update(parts)
        done.update(f"{prefix}.{k}" for k in sparse.state_dict())
    return fill_from_files(model, reader, {}, done=done, consumed=consumed)
