"""Minimal reader for R's serialization format (the bytes behind .rds files and
lazy-load databases, .rdb/.rdx).

Only what is needed to pull plain data (character/numeric vectors, lists) out of
R packages such as janeaustenr, without R installed. Supports the binary XDR
format ("X\\n", versions 2 and 3), gzip/bzip2/xz-compressed .rds files and
lazy-load databases whose entries are zlib/bzip2/xz compressed. Closures,
byte code and environments are read structurally but not interpreted.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from pathlib import Path

NA_INTEGER = -(2**31)

# SEXP type codes (R Internals, "Serialization Formats").
_NILSXP, _SYMSXP, _LISTSXP, _CLOSXP, _ENVSXP, _PROMSXP, _LANGSXP = 0, 1, 2, 3, 4, 5, 6
_SPECIALSXP, _BUILTINSXP, _CHARSXP, _LGLSXP, _INTSXP, _REALSXP = 7, 8, 9, 10, 13, 14
_CPLXSXP, _STRSXP, _DOTSXP, _VECSXP, _EXPRSXP, _BCODESXP = 15, 16, 17, 19, 20, 21
_EXTPTRSXP, _WEAKREFSXP, _RAWSXP, _S4SXP = 22, 23, 24, 25
# Pseudo-types that only occur in serialized streams.
_REFSXP, _NILVALUE_SXP, _GLOBALENV_SXP, _UNBOUNDVALUE_SXP = 255, 254, 253, 252
_MISSINGARG_SXP, _BASENAMESPACE_SXP, _NAMESPACESXP, _PACKAGESXP = 251, 250, 249, 248
_PERSISTSXP, _EMPTYENV_SXP, _BASEENV_SXP = 247, 242, 241
_ATTRLANGSXP, _ATTRLISTSXP, _ALTREP_SXP = 240, 239, 238

_SPECIAL_ENVS = {
    _GLOBALENV_SXP: "<R_GlobalEnv>",
    _EMPTYENV_SXP: "<R_EmptyEnv>",
    _BASEENV_SXP: "<R_BaseEnv>",
    _BASENAMESPACE_SXP: "<R_BaseNamespace>",
    _UNBOUNDVALUE_SXP: "<R_UnboundValue>",
    _MISSINGARG_SXP: "<R_MissingArg>",
}


class RFormatError(ValueError):
    pass


class RObject:
    """A non-vector R object (symbol, environment, closure, pairlist, ...)."""

    def __init__(self, kind, value=None, attributes=None):
        self.kind, self.value, self.attributes = kind, value, attributes or {}

    def __repr__(self):
        return f"RObject({self.kind!r}, {self.value!r})"


class RVector(list):
    """An R vector (atomic or list) with its attributes (names, class, ...)."""

    attributes: dict

    def __init__(self, items=(), attributes=None):
        super().__init__(items)
        self.attributes = attributes or {}

    @property
    def names(self):
        return self.attributes.get("names")


class _Reader:
    def __init__(self, data: bytes):
        self.buf, self.pos, self.refs = memoryview(data), 0, []

    def _take(self, n):
        if self.pos + n > len(self.buf):
            raise RFormatError("truncated R serialization stream")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self):
        return struct.unpack(">i", self._take(4))[0]

    def ints(self, n):
        return list(struct.unpack(f">{n}i", self._take(4 * n)))

    def doubles(self, n):
        return list(struct.unpack(f">{n}d", self._take(8 * n)))

    def length(self):
        n = self.int()
        if n == -1:  # long vector: two more ints, upper and lower halves
            hi, lo = self.int(), self.int()
            n = (hi << 32) + (lo & 0xFFFFFFFF)
        return n

    def header(self):
        fmt = bytes(self._take(2))
        if fmt != b"X\n":
            raise RFormatError(f"only XDR ('X') R serialization is supported, got {fmt!r}")
        version = self.int()
        self.int(), self.int()  # writer version, minimal reader version
        if version == 3:
            self._take(self.int())  # native encoding name
        elif version != 2:
            raise RFormatError(f"unsupported R serialization version {version}")

    def string_vec(self):
        if self.int() != 0:
            raise RFormatError("bad persistent string vector")
        return [self.item() for _ in range(self.int())]

    def attributes(self, has_attr):
        if not has_attr:
            return {}
        pairs = self.item()
        return dict(pairs.value) if isinstance(pairs, RObject) else {}

    def item(self):
        flags = self.int()
        t, levels = flags & 0xFF, flags >> 12
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))

        if t == _NILVALUE_SXP:
            return None
        if t in _SPECIAL_ENVS:
            return RObject(_SPECIAL_ENVS[t])
        if t == _REFSXP:
            idx = flags >> 8 or self.int()
            return self.refs[idx - 1]
        if t in (_PERSISTSXP, _NAMESPACESXP, _PACKAGESXP):
            obj = RObject({_PERSISTSXP: "persist", _NAMESPACESXP: "namespace"}.get(t, "package"),
                          self.string_vec())
            self.refs.append(obj)
            return obj
        if t == _SYMSXP:
            obj = RObject("symbol", self.item())
            self.refs.append(obj)
            return obj
        if t == _ENVSXP:
            obj = RObject("environment")
            self.refs.append(obj)  # registered before its contents: they may refer back
            locked = self.int()
            enclos, frame, hashtab, attr = self.item(), self.item(), self.item(), self.item()
            obj.value = {"locked": bool(locked), "enclos": enclos, "frame": frame, "hashtab": hashtab}
            obj.attributes = dict(attr.value) if isinstance(attr, RObject) else {}
            return obj
        if t in (_LISTSXP, _LANGSXP, _CLOSXP, _PROMSXP, _DOTSXP, _ATTRLANGSXP, _ATTRLISTSXP):
            return self._pairlist(t, has_attr, has_tag)
        if t == _CHARSXP:
            n = self.int()
            if n == -1:
                return None  # NA_character_
            raw = bytes(self._take(n))
            if has_attr:  # only written by very old R versions; R ignores it too
                self.item()
            # levels bit 2 = latin1; everything else (UTF-8, ASCII, native) decodes as UTF-8.
            return raw.decode("latin-1" if levels & 4 else "utf-8", errors="replace")
        if t == _ALTREP_SXP:
            return self._altrep()
        if t in (_SPECIALSXP, _BUILTINSXP):
            return RObject("builtin", bytes(self._take(self.int())).decode())
        if t in (_EXTPTRSXP, _WEAKREFSXP):
            obj = RObject("externalptr" if t == _EXTPTRSXP else "weakref")
            self.refs.append(obj)
            if t == _EXTPTRSXP:
                obj.value = (self.item(), self.item())
            obj.attributes = self.attributes(has_attr)
            return obj
        if t == _S4SXP:
            return RObject("S4", None, self.attributes(has_attr))
        if t == _BCODESXP:
            raise RFormatError("R byte code is not supported")

        n = self.length()
        if t in (_LGLSXP, _INTSXP):
            vals = self.ints(n)
            if t == _LGLSXP:
                vals = [None if v == NA_INTEGER else bool(v) for v in vals]
            else:
                vals = [None if v == NA_INTEGER else v for v in vals]
        elif t == _REALSXP:
            vals = self.doubles(n)
        elif t == _CPLXSXP:
            d = self.doubles(2 * n)
            vals = [complex(d[2 * i], d[2 * i + 1]) for i in range(n)]
        elif t in (_STRSXP, _VECSXP, _EXPRSXP):
            vals = [self.item() for _ in range(n)]
        elif t == _RAWSXP:
            vals = bytes(self._take(n))
        else:
            raise RFormatError(f"unsupported SEXP type {t}")
        return RVector(vals, self.attributes(has_attr))

    def _pairlist(self, t, has_attr, has_tag):
        # Pairlists are read iteratively along CDR to avoid deep recursion on long lists.
        pairs, attributes = [], {}
        while True:
            attr = self.attributes(has_attr)
            attributes = attributes or attr
            tag = self.item() if has_tag else None
            car = self.item()
            name = tag.value if isinstance(tag, RObject) and tag.kind == "symbol" else tag
            pairs.append((name, car))
            flags = self.int()
            nt = flags & 0xFF
            if nt != t or t not in (_LISTSXP, _ATTRLISTSXP):
                self.pos -= 4
                cdr = self.item()
                if cdr is not None:
                    pairs.append((None, cdr))
                break
            has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        kind = {_LANGSXP: "call", _ATTRLANGSXP: "call", _CLOSXP: "closure",
                _PROMSXP: "promise", _DOTSXP: "dots"}.get(t, "pairlist")
        return RObject(kind, pairs, attributes)

    def _altrep(self):
        info, state, attr = self.item(), self.item(), self.item()
        cls = info.value[0].value if isinstance(info, RObject) else None
        if cls in ("compact_intseq", "compact_realseq"):
            n, start, step = state
            vals = [start + i * step for i in range(int(n))]
            out = RVector([int(v) for v in vals] if cls == "compact_intseq" else vals)
        elif cls and cls.startswith("wrap_"):
            out = RVector(state.value[0][1])  # (payload, metadata)
        elif cls == "deferred_string":
            # state is (original vector, scipen info): R would format numbers lazily.
            out = RVector([str(v) for v in state.value[0][1]])
        else:
            raise RFormatError(f"unsupported ALTREP class {cls!r}")
        if isinstance(attr, RObject):
            out.attributes = dict(attr.value)
        return out


def unserialize(data: bytes):
    """Decode one uncompressed R serialization stream (starting with 'X\\n')."""
    r = _Reader(data)
    r.header()
    return r.item()


def _decompress_file(raw: bytes) -> bytes:
    if raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    if raw[:3] == b"BZh":
        return bz2.decompress(raw)
    if raw[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(raw)
    return raw


def read_rds(path) -> object:
    """Read an .rds file (what R's saveRDS writes)."""
    return unserialize(_decompress_file(Path(path).read_bytes()))


def _decompress_entry(blob: bytes, compressed) -> bytes:
    # Each lazy-load entry: 4-byte big-endian uncompressed length, then for
    # compression types 2/3 one type byte ('Z' zlib, '2' bzip2, 'X' xz, '0' none).
    size = struct.unpack(">I", blob[:4])[0]
    if compressed in (2, 3):
        kind, body = blob[4:5], blob[5:]
        if kind == b"0":
            out = body
        elif kind == b"Z":
            out = zlib.decompress(body)
        elif kind == b"2":
            out = bz2.decompress(body)
        elif kind == b"X":
            out = lzma.decompress(body, format=lzma.FORMAT_XZ)
        else:
            raise RFormatError(f"unknown lazy-load compression type {kind!r}")
    else:  # TRUE / 1: zlib
        out = zlib.decompress(blob[4:])
    if len(out) != size:
        raise RFormatError("lazy-load entry has the wrong uncompressed size")
    return out


def read_lazyload_db(base) -> dict:
    """Read every variable of an R lazy-load database (base.rdx + base.rdb).

    `base` is the path without extension, e.g. ``.../janeaustenr/data/Rdata``.
    Returns {variable name: decoded value}.
    """
    base = Path(base)
    index = read_rds(base.with_suffix(".rdx"))
    fields = dict(zip(index.names, index))
    compressed = fields.get("compressed")
    compressed = compressed[0] if compressed else True
    variables = fields["variables"]
    db = base.with_suffix(".rdb").read_bytes()
    out = {}
    for name, (offset, length) in zip(variables.names, variables):
        out[name] = unserialize(_decompress_entry(db[offset : offset + length], compressed))
    return out
