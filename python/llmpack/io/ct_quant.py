"""compressed-tensors ``pack-quantized`` and ``int-quantized`` Linears -> QuantLinear, bit-exactly.

Facts of the format (read from compressed-tensors 0.14's and 0.18's sources:
``compressors/quantized_compressors/pack_quantized.py`` (0.14),
``compressors/pack_quantized/helpers.py`` (0.17, 0.18),
``compressors/quantized_compressors/naive_quantized.py``,
``quantization/lifecycle/forward.py``, ``quantization/quant_args.py``,
``utils/match.py``, ``quantization/lifecycle/apply.py``):

* ``config.json``'s ``quantization_config`` holds ``version`` (the writer's
  ``compressed_tensors.__version__``, e.g. ``"0.14.0.1"``), ``format`` (the
  default for groups without their own), ``ignore``, and ``config_groups``:
  ``{name: {"targets", "weights", "input_activations", "output_activations",
  "format"}}``. Quantization args: ``num_bits``, ``type`` (``"int"``/``"float"``),
  ``symmetric``, ``strategy`` (``"tensor"``, ``"channel"``, ``"group"``, ``"block"``,
  ``"token"``, ...), ``group_size``, ``dynamic``, ``actorder``.
* A weight is ``W = scale * (q - zp)`` with signed ``q`` and ``zp`` in
  ``[-2^(b-1), 2^(b-1) - 1]``; a symmetric one has no zero point (0). Per
  group: ``weight_scale [out, ceil(in / group_size)]``; per channel ``[out, 1]``;
  per tensor ``[1]``. Dequantization casts ``q`` and ``zp`` to the scale's dtype
  and multiplies there, so a QuantLinear with ``zeros = zp + 2^(b-1)`` on the
  codes ``q + 2^(b-1)`` and the same scales gives the same weights.
* ``pack-quantized``: ``weight_packed`` int32 holds the codes stored unsigned
  (``q + 2^(b-1)``), least significant bits first, along the input dimension;
  ``weight_shape`` the dense ``[out, in]``; ``weight_zero_point`` (asymmetric
  group / channel only) int32, the zero points ``zp + 2^(b-1)`` packed the same
  way along dim 0 (the output dimension, one packed column per group); an
  asymmetric per-tensor zero point is stored unpacked. Up to 0.17 each int32
  word holds ``32 // b`` codes (bits ``[j*b, j*b + b)`` = code j of the word,
  high bits zero when ``32 % b != 0``), ``ceil(n / (32 // b))`` words per row;
  from 0.18 a row is one continuous little-endian bit stream (code i at bits
  ``[i*b, i*b + b)``, straddling words for 3/5/6/7 bits), ``ceil(n * b / 32)``
  words. Both write zero bits past the last code. For b in 1, 2, 4, 8 the two
  layouts are the same.
* ``int-quantized`` (alias of ``naive-quantized`` for ints): ``weight`` holds the
  signed codes as int8; ``weight_zero_point`` (asymmetric) unpacked, shaped like
  the scale.
* ``weight_g_idx`` (act-order) maps input column -> group; the usual column
  order is ``arange(in) // group_size`` (compressed-tensors treats a g_idx holding
  -1 as "not set": column order). Any other grouping (GPTQ's dynamic groups under
  ``actorder: "group"``) becomes a QuantLinear holding its columns sorted by group
  (``input_perm``), each group ``group_size`` columns.
* Module -> scheme: a target is a module name, ``"re:<regex>"`` (``re.match`` on
  the name) or a class name in the module's MRO; exact names win over regexes
  over class names, and ``ignore`` (same matching) removes modules.

Dynamic per-token int input activations (W8A8 ``int-quantized``) become
``abits = num_bits`` with ``act_symmetric`` from their ``symmetric``.
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn

_SIGNED = {"I8": torch.int8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64}
_INT_DTYPES = {**_SIGNED, "U8": torch.uint8}
_SCALE_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
_GROUP_SIZES = (32, 64, 128)
_PACK_FORMATS = ("pack-quantized",)
_INT_FORMATS = ("int-quantized", "naive-quantized")
STREAM_SINCE = (0, 18)  # first compressed-tensors version with the continuous bit stream


# ---------------------------------------------------------------- packers

def ct_version(qc: dict) -> tuple[int, int] | None:
    """``quantization_config.version`` as (major, minor); None when absent."""
    v = qc.get("version")
    if v is None:
        return None
    m = re.match(r"^\s*v?(\d+)\.(\d+)", v) if isinstance(v, str) else None
    if m is None:
        raise ValueError(f"config.json: quantization_config.version {v!r} is not a compressed-tensors version "
                         "(e.g. '0.14.0'): cannot tell which int32 packer wrote the weights")
    return int(m.group(1)), int(m.group(2))


def packer_for(version: tuple[int, int] | None, num_bits: int, where: str) -> str:
    """``"stream"`` (>= 0.18) or ``"words"`` (<= 0.17); either for 1/2/4/8 bits (same layout)."""
    if 32 % num_bits == 0:
        return "words"
    if version is None:
        raise ValueError(f"{where}: {num_bits}-bit codes and config.json's quantization_config has no version: "
                         "compressed-tensors <= 0.17 and >= 0.18 pack them differently")
    return "stream" if version >= STREAM_SINCE else "words"


def packed_words(n: int, num_bits: int, packer: str) -> int:
    """int32 words that hold ``n`` codes of ``num_bits``."""
    if packer == "stream":
        return -(-n * num_bits // 32)
    return -(-n // (32 // num_bits))


def unpack_rows(words: torch.Tensor, num_bits: int, n: int, packer: str, where: str) -> torch.Tensor:
    """int32 ``[rows, packed_words(n)]`` -> the unsigned codes uint8 ``[rows, n]``; bits past the
    ``n``-th code must be zero (the packers write zeros there)."""
    rows, nw = words.shape
    if nw != packed_words(n, num_bits, packer):
        raise ValueError(f"{where}: {nw} int32 words per row, {packed_words(n, num_bits, packer)} hold {n} "
                         f"{num_bits}-bit codes")
    out = torch.empty(rows, n, dtype=torch.uint8)
    i = torch.arange(n, dtype=torch.int64)
    if packer == "stream":
        pos = i * num_bits
    else:
        per = 32 // num_bits
        pos = (i // per) * 32 + (i % per) * num_bits
    w_idx, shift = pos >> 5, pos & 31
    mask = (1 << num_bits) - 1
    # The bits of every word the n codes use; anything else set is beyond the shape.
    used = torch.zeros(nw, dtype=torch.int64)
    used.index_put_((w_idx,), (mask << shift) & 0xFFFFFFFF, accumulate=True)  # disjoint: sum = or
    spill = shift + num_bits - 32
    has = spill > 0
    used.index_put_((w_idx[has] + 1,), (1 << spill[has]) - 1, accumulate=True)
    step = max(1, (1 << 22) // max(n, 1))
    for r0 in range(0, rows, step):
        u = words[r0:r0 + step].to(torch.int64) & 0xFFFFFFFF
        stray = u & ~used
        if stray.any():
            r, w = stray.nonzero()[0].tolist()
            raise ValueError(f"{where}: row {r0 + r}, int32 word {w} has bits set past the {n} codes of "
                             f"{num_bits} bits the declared shape holds (corrupted or mis-shaped)")
        # Codes that straddle two words read the next one too: a 64-bit window.
        nxt = torch.nn.functional.pad(u[:, 1:], (0, 1))
        win = u[:, w_idx] | (nxt[:, w_idx] << 32)
        out[r0:r0 + step] = ((win >> shift) & mask).to(torch.uint8)
    return out


# ---------------------------------------------------------------- config

def _args(d, where: str, what: str) -> dict:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: {what} must be an object, got {d!r}")
    return d


def _bits(args: dict, where: str) -> int:
    b = args.get("num_bits", 8)
    if not isinstance(b, int) or isinstance(b, bool) or not 1 <= b <= 8:
        raise ValueError(f"{where}: num_bits {b!r} is not supported (QuantLinear holds 1..8-bit integer codes)")
    if args.get("type", "int") != "int":
        raise ValueError(f"{where}: quantization type {args.get('type')!r}; llmpack reads integer ('int') "
                         "compressed-tensors weights")
    return b


def _strategy(args: dict):
    """The strategy, inferred as compressed-tensors' QuantizationArgs does when not given:
    no group_size -> tensor, group_size > 0 -> group, -1 -> channel."""
    strategy, gs = args.get("strategy"), args.get("group_size")
    if strategy is not None:
        return strategy
    if gs is None:
        return "tensor"
    return "channel" if gs == -1 else "group"


def _match_name(name: str, target: str) -> bool:
    if target.startswith("re:"):
        try:
            return re.match(target[3:], name) is not None
        except re.error as err:
            raise ValueError(f"config.json: quantization_config target/ignore {target!r} is not a valid "
                             f"regular expression: {err}") from None
    return target == name


def _match_class(module: nn.Module, target: str) -> bool:
    return any(c.__name__ == target for c in type(module).__mro__ if issubclass(c, nn.Module))


def scheme_for(name: str, module: nn.Module, groups: dict, ignore: list) -> tuple[str, dict] | None:
    """(config group name, scheme) compressed-tensors applies to ``module``, or None."""
    if any(_match_name(name, t) or _match_class(module, t) for t in ignore):
        return None
    target_to_group = {}
    for gname, scheme in groups.items():
        for t in scheme.get("targets") or []:
            target_to_group[t] = gname  # a later group's equal target wins, as in compressed-tensors
    ordered = sorted(target_to_group, key=lambda t: ("re:" in t, t))
    hits = [t for t in ordered if _match_name(name, t)] + [t for t in ordered if _match_class(module, t)]
    if not hits:
        return None
    g = target_to_group[hits[0]]
    return g, groups[g]


def _input_acts(scheme: dict, where: str) -> tuple[int, bool]:
    """(abits, act_symmetric) for the scheme's input activations."""
    ia = scheme.get("input_activations")
    if scheme.get("output_activations") is not None:
        raise ValueError(f"{where}: output activation quantization is not supported")
    if ia is None:
        return 16, False
    ia = _args(ia, where, "input_activations")
    if ia.get("type", "int") != "int":
        raise ValueError(f"{where}: input activations of type {ia.get('type')!r}; llmpack quantizes "
                         "activations to integers only")
    if ia.get("dynamic") is not True:
        raise ValueError(f"{where}: static (calibrated) input activation scales (dynamic: "
                         f"{ia.get('dynamic')!r}) are not supported; llmpack quantizes activations per token "
                         "at run time (dynamic: true)")
    if _strategy(ia) != "token":
        raise ValueError(f"{where}: input activation strategy {_strategy(ia)!r} "
                         f"(group_size {ia.get('group_size')!r}); llmpack quantizes activations per token")
    b = ia.get("num_bits", 8)
    if not isinstance(b, int) or isinstance(b, bool) or not 1 <= b <= 8:
        raise ValueError(f"{where}: input activations of num_bits {b!r}; llmpack quantizes them to 1..8 bits")
    sym = ia.get("symmetric", True)
    if not isinstance(sym, bool):
        raise ValueError(f"{where}: input_activations.symmetric must be true or false, got {sym!r}")
    return b, sym


# ---------------------------------------------------------------- tensors

def _header(reader, name: str, dtypes: dict, what: str):
    shape, st = reader.shape_dtype(name)
    if st not in dtypes:
        raise ValueError(f"tensor {name!r}: dtype {st}, expected {what}")
    return shape, dtypes[st]


def _group_layout(args: dict, lin: nn.Linear, where: str) -> tuple[int, int, int]:
    """(our group_size, compressed-tensors' columns per group, groups) for the weight args."""
    strategy = args.get("strategy")
    in_f = lin.in_features
    if strategy == "group":
        gs = args.get("group_size")
        if not isinstance(gs, int) or isinstance(gs, bool) or gs < 1:
            raise ValueError(f"{where}: group strategy with group_size {gs!r}")
        groups = -(-in_f // gs)
        if gs in _GROUP_SIZES:
            return gs, gs, groups
        if groups == 1:
            return -1, in_f, 1   # one group spans the row: the same as per channel
        raise ValueError(f"{where}: group_size {gs} is not supported by llmpack's kernels "
                         f"(32, 64, 128 or per channel)")
    if strategy in ("channel", "tensor"):
        return -1, in_f, 1
    raise ValueError(f"{where}: weight strategy {strategy!r} is not supported "
                     "(llmpack reads 'group', 'channel' and 'tensor')")


def _read_scales(reader, prefix: str, args: dict, lin: nn.Linear, groups: int) -> torch.Tensor:
    name = f"{prefix}.weight_scale"
    shape, _ = _header(reader, name, _SCALE_DTYPES, "float16, bfloat16 or float32")
    out_f = lin.out_features
    if args.get("strategy") == "tensor":
        if math.prod(shape) != 1 or len(shape) > 2:
            raise ValueError(f"tensor {name!r}: shape {list(shape)}, a per-tensor scale has one element")
        return reader.get(name).reshape(1, 1).expand(out_f, 1).contiguous()
    if shape != (out_f, groups):
        raise ValueError(f"tensor {name!r}: shape {list(shape)}, the {lin.in_features}->{out_f} Linear's "
                         f"{args.get('strategy')} quantization needs {[out_f, groups]}")
    return reader.get(name)


def _signed_to_unsigned(zp: torch.Tensor, b: int, name: str) -> torch.Tensor:
    lo, hi = -(1 << (b - 1)), (1 << (b - 1)) - 1
    zp = zp.to(torch.int64)
    bad = ((zp < lo) | (zp > hi)).nonzero()
    if len(bad):
        idx = bad[0].tolist()
        raise ValueError(f"tensor {name!r}: value {int(zp[tuple(idx)])} at {idx} is outside the signed "
                         f"{b}-bit range [{lo}, {hi}]")
    return (zp - lo).to(torch.uint8)


def _read_zeros(reader, prefix: str, args: dict, lin: nn.Linear, groups: int, b: int, packer: str | None,
                consumed: set) -> torch.Tensor:
    """Unsigned zero points uint8 [out, groups]: 2^(b-1) when symmetric."""
    name = f"{prefix}.weight_zero_point"
    out_f = lin.out_features
    present = name in reader.names_set
    sym = args.get("symmetric", True)
    if not isinstance(sym, bool):
        raise ValueError(f"{prefix}: weights.symmetric must be true or false, got {sym!r}")
    if sym and not present:
        return torch.full((out_f, groups), 1 << (b - 1), dtype=torch.uint8)
    if not present:
        raise ValueError(f"compressed-tensors module {prefix!r}: asymmetric weights but {name} is missing")
    consumed.add(name)
    if packer is not None and args.get("strategy") in ("group", "channel"):
        shape, _ = _header(reader, name, {"I32": torch.int32}, "int32 (packed zero points)")
        want = (packed_words(out_f, b, packer), groups)
        if shape != want:
            raise ValueError(f"tensor {name!r}: shape {list(shape)}, {out_f} packed {b}-bit zero points "
                             f"({packer} packer) per group need {list(want)}")
        z = unpack_rows(reader.get(name).t().contiguous(), b, out_f, packer, f"tensor {name!r}").t().contiguous()
    else:
        shape, _ = _header(reader, name, _SIGNED, "a signed integer dtype (zero points stored as is)")
        if args.get("strategy") == "tensor":
            if math.prod(shape) != 1 or len(shape) > 2:
                raise ValueError(f"tensor {name!r}: shape {list(shape)}, a per-tensor zero point has one element")
            z = _signed_to_unsigned(reader.get(name).reshape(1, 1), b, name).expand(out_f, groups).contiguous()
        else:
            if shape != (out_f, groups):
                raise ValueError(f"tensor {name!r}: shape {list(shape)}, expected {[out_f, groups]}")
            z = _signed_to_unsigned(reader.get(name), b, name)
    if sym and (z != (1 << (b - 1))).any():
        raise ValueError(f"tensor {name!r}: symmetric weights with nonzero zero points")
    return z


def _read_g_idx(reader, prefix: str, lin: nn.Linear, cols_per_group: int, groups: int, consumed: set):
    """The input permutation an act-order ``g_idx`` needs (None for column order): the columns sorted by
    group, so each group is a run of consecutive columns as QuantLinear's groups are. Every group must
    hold ``cols_per_group`` columns (the last one the rest), which is what compressed-tensors' own
    dequantization assumes when it reshapes the sorted columns by group size."""
    name = f"{prefix}.weight_g_idx"
    if name not in reader.names_set:
        return None
    shape, _ = _header(reader, name, _INT_DTYPES, "an integer dtype")
    if shape != (lin.in_features,):
        raise ValueError(f"tensor {name!r}: shape {list(shape)}, expected {[lin.in_features]}")
    consumed.add(name)
    g = reader.get(name).to(torch.int64)
    if bool((g == -1).any()) or torch.equal(g, torch.arange(lin.in_features) // cols_per_group):
        return None   # -1: compressed-tensors' "not set", column order
    bad = ((g < 0) | (g >= groups)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"tensor {name!r}: [{i}] = {int(g[i])} is not a group index (0..{groups - 1})")
    counts = torch.bincount(g, minlength=groups)
    want = torch.full((groups,), cols_per_group)
    want[-1] = lin.in_features - cols_per_group * (groups - 1)
    wrong = (counts != want).nonzero()
    if len(wrong):
        j = int(wrong[0])
        raise ValueError(f"tensor {name!r}: group {j} holds {int(counts[j])} columns, expected {int(want[j])} "
                         f"(group size {cols_per_group})")
    return torch.argsort(g, stable=True)


def _read_codes_packed(reader, prefix: str, lin: nn.Linear, b: int, packer: str, consumed: set):
    name, shape_name = f"{prefix}.weight_packed", f"{prefix}.weight_shape"
    for n in (name, shape_name):
        if n not in reader.names_set:
            raise ValueError(f"compressed-tensors module {prefix!r}: {n} is missing")
    sshape, _ = _header(reader, shape_name, _INT_DTYPES, "an integer dtype")
    if sshape != (2,):
        raise ValueError(f"tensor {shape_name!r}: shape {list(sshape)}, expected [2] (the dense [out, in])")
    dims = reader.get(shape_name).tolist()
    if dims != [lin.out_features, lin.in_features]:
        raise ValueError(f"tensor {shape_name!r}: dense shape {dims}, the model's {lin.in_features}->"
                         f"{lin.out_features} Linear is {[lin.out_features, lin.in_features]}")
    shape, _ = _header(reader, name, {"I32": torch.int32}, "int32")
    want = (lin.out_features, packed_words(lin.in_features, b, packer))
    if shape != want:
        other = "stream" if packer == "words" else "words"
        hint = ""
        if shape == (lin.out_features, packed_words(lin.in_features, b, other)):
            hint = (f" (that is the {'>= 0.18 continuous' if other == 'stream' else '<= 0.17 per-word'} packer's "
                    "layout: does quantization_config.version match the writer?)")
        raise ValueError(f"tensor {name!r}: shape {list(shape)}, {lin.in_features} {b}-bit codes per row "
                         f"({'continuous bit stream' if packer == 'stream' else f'{32 // b} per int32'}) need "
                         f"{list(want)}{hint}")
    codes = unpack_rows(reader.get(name), b, lin.in_features, packer, f"tensor {name!r}")
    consumed.update((name, shape_name))
    return codes


def _read_codes_int(reader, prefix: str, lin: nn.Linear, b: int, consumed: set):
    name = f"{prefix}.weight"
    shape, _ = _header(reader, name, {"I8": torch.int8}, "int8 (int-quantized codes)")
    if shape != (lin.out_features, lin.in_features):
        raise ValueError(f"tensor {name!r}: shape {list(shape)}, the model's {lin.in_features}->"
                         f"{lin.out_features} Linear needs {[lin.out_features, lin.in_features]}")
    consumed.add(name)
    return _signed_to_unsigned(reader.get(name), b, name)


def quant_linear_from(reader, prefix: str, lin: nn.Linear, fmt: str, scheme: dict, version):
    """The QuantLinear for one compressed-tensors Linear, and the file tensors it read."""
    from ..nn.quant_linear import QuantLinear

    where = f"compressed-tensors module {prefix!r}"
    args = _args(scheme.get("weights"), where, "the scheme's weights")
    b = _bits(args, where)
    abits, act_sym = _input_acts(scheme, where)
    if args.get("dynamic", False) is not False:
        raise ValueError(f"{where}: dynamic weight quantization (dynamic: {args.get('dynamic')!r}) is not supported")
    args = dict(args, strategy=_strategy(args))
    group_size, cols_per_group, groups = _group_layout(args, lin, where)
    consumed: set[str] = set()
    scale_name = f"{prefix}.weight_scale"
    if scale_name not in reader.names_set:
        raise ValueError(f"{where}: {scale_name} is missing")
    if fmt in _PACK_FORMATS:
        packer = packer_for(version, b, where)
        codes = _read_codes_packed(reader, prefix, lin, b, packer, consumed)
    else:
        packer = None
        codes = _read_codes_int(reader, prefix, lin, b, consumed)
    scales = _read_scales(reader, prefix, args, lin, groups)
    consumed.add(scale_name)
    zeros = _read_zeros(reader, prefix, args, lin, groups, b, packer, consumed)
    perm = _read_g_idx(reader, prefix, lin, cols_per_group, groups, consumed)
    if perm is not None:   # held in act order: column i of the codes is input perm[i]
        codes = codes[:, perm]
    bias = None
    if lin.bias is not None:
        bname = f"{prefix}.bias"
        if bname not in reader.names_set:
            raise ValueError(f"{where}: {bname} is missing")
        shape, _ = _header(reader, bname, _SCALE_DTYPES, "a float dtype")
        if shape != (lin.out_features,):
            raise ValueError(f"tensor {bname!r}: shape {list(shape)}, expected {[lin.out_features]}")
        bias = reader.get(bname)
        consumed.add(bname)
    mod = QuantLinear.from_codes(codes, scales, zeros, wbits=b, group_size=group_size, bias=bias, abits=abits,
                                 act_symmetric=act_sym, dtype=lin.weight.dtype, input_perm=perm)
    return mod, consumed


# ---------------------------------------------------------------- model

class _Files:
    """checkpoint's reader plus the set of its tensor names."""

    def __init__(self, reader):
        self.reader, self.names_set = reader, set(reader.names())

    def names(self):
        return self.reader.names()

    def shape_dtype(self, name):
        return self.reader.shape_dtype(name)

    def get(self, name):
        return self.reader.get(name)


_QUANT_SUFFIXES = (".weight_packed", ".weight_scale", ".weight_zero_point", ".weight_shape", ".weight_g_idx",
                   ".input_scale", ".input_zero_point", ".output_scale", ".output_zero_point")


def load_quantized(cfg: dict, qc: dict, reader, model):
    """Fill ``model`` from a compressed-tensors folder whose config groups are
    ``pack-quantized`` / ``int-quantized``: every targeted Linear becomes a
    QuantLinear holding the file's codes, scales and zero points as they are."""
    from .checkpoint import _set_module, fill_from_files

    status = qc.get("quantization_status", "compressed")
    if status != "compressed":
        raise ValueError(f"config.json: compressed-tensors quantization_status {status!r}; llmpack reads "
                         "'compressed' checkpoints (packed codes), not fake-quantized float weights")
    for key in ("kv_cache_scheme", "transform_config"):
        if qc.get(key):
            raise ValueError(f"config.json: compressed-tensors {key} is not supported by llmpack")
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or not all(isinstance(s, dict) for s in groups.values()):
        raise ValueError("config.json: quantization_config.config_groups must map names to schemes (objects)")
    ignore = qc.get("ignore") or []
    if not isinstance(ignore, list) or not all(isinstance(t, str) for t in ignore):
        raise ValueError("config.json: quantization_config.ignore must be a list of strings")
    for g, scheme in groups.items():
        targets = scheme.get("targets")
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise ValueError(f"config.json: config group {g!r}: targets must be a list of strings")
    version = ct_version(qc)
    reader = _Files(reader)
    names = reader.names_set
    done, consumed = set(), set()
    for name, lin in list(model.named_modules()):
        if not isinstance(lin, nn.Linear):
            continue
        hit = scheme_for(name, lin, groups, ignore)
        if hit is None or hit[1].get("weights") is None:
            if hit is not None and hit[1].get("input_activations") is not None:
                raise ValueError(f"compressed-tensors module {name!r}: activation-only quantization "
                                 f"(config group {hit[0]!r} has no weights) is not supported")
            continue
        gname, scheme = hit
        fmt = scheme.get("format") or qc.get("format")
        if fmt not in _PACK_FORMATS + _INT_FORMATS:
            raise ValueError(f"compressed-tensors module {name!r} (config group {gname!r}): format {fmt!r}; "
                             "llmpack reads 'pack-quantized' and 'int-quantized'")
        mod, used = quant_linear_from(reader, name, lin, fmt, scheme, version)
        _set_module(model, name, mod)
        consumed |= used
        done.update(f"{name}.{k}" for k in mod.state_dict())
    stray = sorted(n for n in names - consumed if n.endswith(_QUANT_SUFFIXES))
    if stray:
        mod = stray[0].rsplit(".", 1)[0]
        raise ValueError(f"tensor {stray[0]!r}: quantization tensors for module {mod!r}, which no config group "
                         "targets as a Linear (or whose scheme llmpack does not read)")
    return fill_from_files(model, reader.reader, {}, done=done, consumed=consumed)
