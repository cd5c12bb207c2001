// 2:4 CPU kernels, AMX build (AVX-512 + BF16 + VBMI2 + AMX-TILE/BF16; flags:
// cmake/LlmpackIsa.cmake). Only the bf16 linear differs from the
// avx512_bf16 level: everything else reuses that level's kernels.
//
// Why AMX: at M = 4..32 the gather kernels are bound by one shuffle per 16-32
// useful MACs, while torch's dense bf16 GEMM runs on the AMX tile unit. Here
// the packed weight is unpacked tile by tile *in registers* and fed to the
// same unit, so only the packed bytes stream from memory and the math is
// AMX-speed:
//   A tile (16 weight rows x 32 K, bf16): per row one vpexpandw places the 16
//     kept values at their positions, the expand mask coming from the 8
//     metadata nibbles (nibble -> 4-bit keep mask, two nibbles per byte, via
//     a 256-entry table). Stored to a 1 KiB L1 buffer, then tileloadd.
//   B tile (32 K x 16 rows of x, "VNNI" pairs): x is rearranged once per call
//     so that each 32-K step's B tile is 1 KiB of contiguous memory.
//   C tile (16 weight rows x 16 x rows, fp32) += A . B with tdpbf16ps; up to
//     two C/B tile pairs share each A tile (M <= 32 per pass).
// fp16 runs the same way on exact bf16 hi/lo splits of W and x (four tile
// products per step). Requires K % 32 == 0 (every shape of the models we
// target); other K and fp32 go to the avx512_bf16 kernels.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#define LLMPACK_ISA_NS amx
#include "sparse24/sparse24_cpu_kernels.h"
#include "sparse24/sparse24_cpu_avx512_common.h"

namespace llmpack::sparse24 {
extern const CpuKernels kCpuAvx512Bf16;
}

namespace llmpack::sparse24::amx {
namespace {

constexpr int kTileRows = 16;  // weight rows per A tile / C tile rows
constexpr int kTileK = 32;     // K per A tile (16 bf16 pairs)
constexpr int kTileM = 16;     // x rows per B / C tile
// C tiles (16 x rows each) per pass: W is unpacked once per pass. bf16: up
// to 4 (M <= 64); fp16 needs hi and lo tiles of A and B, which leaves room
// for 2.
constexpr int kMaxB = 4;
template <bool kF16>
constexpr int kMaxBFor = kF16 ? 2 : 4;
constexpr int kAhead = 3;      // A tiles unpacked ahead of their use
// Measured on SmolLM2-sized matrices: the gather kernels are faster below
// (bf16: the vdpbf16ps kernel; fp16: the fp32 kernel, which at M = 8 beats
// four tile products per step).
constexpr int kMinMBf16 = 8, kMinMF16 = 12;
constexpr int kRing = 4;       // A tile buffers (> kAhead)

// Palette 1, all 8 tiles 16 rows x 64 B. bf16: 0..3 = C for x rows 0..15,
// .., 48..63 (fp32); 4 = A; 6, 7 = B, alternating between x blocks so a
// tile load never waits for the previous product to release its tile (tiles
// are not renamed). fp16: 0, 1 = C; 4, 5 = A (hi, lo); 6, 7 = B hi, lo for
// x rows 0..15 and 2, 3 for rows 16..31. (GCC's tile intrinsics paste tile
// numbers into the asm text: literals only, hence numbers, not constants.)
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

void configure_tiles() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  _tile_loadconfig(&cfg);
}

// x [m, k] -> per (32-K step s, 16-row block b, part) a 1 KiB B tile: row r
// (K pair 2r, 2r+1 of the step) holds, for each of 16 x rows j, the pair
// (x[j][32s + 2r], x[j][32s + 2r + 1]); rows of x past m are zero. bf16 x has
// one part; fp16 x has two, hi = bf16(x) and lo = bf16(x - hi), which sum to
// x exactly (an fp16 significand has 11 bits, hi keeps 8, the rest fits lo).
std::vector<uint32_t> x_to_tiles(const uint16_t* x, int64_t m0, int64_t mb, int64_t k, int nb, bool f16) {
  const int64_t steps = k / kTileK;
  const int parts = f16 ? 2 : 1;
  std::vector<uint32_t> out(size_t(steps * nb * parts * 256), 0u);
  // The 32 elements of one x row and step are, read as 16 uint32, exactly the
  // 16 pairs that go down column j of the tile: one vector load, one
  // 16-lane scatter with a stride of one tile row (16 uint32).
  const __m512i tile_rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                               _mm512_set1_epi32(16));
  auto widen = [](__m256i bf) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bf), 16)); };
  for (int64_t j = 0; j < mb; ++j) {
    const uint16_t* src = x + (m0 + j) * k;
    for (int64_t s = 0; s < steps; ++s) {
      uint32_t* tile = out.data() + (s * nb + j / kTileM) * parts * 256 + j % kTileM;
      const __m512i v = _mm512_loadu_si512(src + s * kTileK);
      if (!f16) {
        _mm512_i32scatter_epi32(tile, tile_rows, v, 4);
        continue;
      }
      const __m512 lo = _mm512_cvtph_ps(_mm512_castsi512_si256(v));
      const __m512 hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(v, 1));
      const __m512i h = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);  // elements 0..15 from lo, 16..31 from hi
      const __m512 h_lo = widen(_mm512_castsi512_si256(h)), h_hi = widen(_mm512_extracti64x4_epi64(h, 1));
      const __m512i l = (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(hi, h_hi), _mm512_sub_ps(lo, h_lo));
      _mm512_i32scatter_epi32(tile, tile_rows, h, 4);
      _mm512_i32scatter_epi32(tile + 256, tile_rows, l, 4);
    }
  }
  return out;
}

// Keep masks (bit i = K-position i of the 32-wide step is kept) for rows
// [n0, n0+16) x all steps, row-major [16][steps], 0 for rows past n. 16 steps
// of a row are 64 contiguous metadata bytes, so one vpshufb per nibble half
// maps them all (nibble -> 4-bit keep mask) and the same vector is validated
// with the SWAR test: ~10 vector ops per 16 steps instead of ~14 scalar ops
// per step. Returns the invalid-nibble mask of the rows.
uint32_t keep_masks(const LinearCtx& c, int64_t n0, int64_t steps, uint32_t* masks) {
  const __m512i lut = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 0, 0, 0, 0x3, 0, 0, 0, 0x5, 0x6, 0, 0, 0x9, 0xA, 0xC, 0));
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  __m512i bad = _mm512_setzero_si512();
  for (int r = 0; r < kTileRows; ++r) {
    uint32_t* out = masks + r * steps;
    const int64_t row = n0 + r;
    if (row >= c.n) {
      std::memset(out, 0, size_t(steps) * 4);
      continue;
    }
    const uint8_t* m = c.meta + row * meta_cols(c.k);
    for (int64_t s0 = 0; s0 < steps; s0 += 16) {
      const __mmask16 lanes = __mmask16((1u << std::min<int64_t>(16, steps - s0)) - 1);
      const __m512i v = _mm512_maskz_loadu_epi32(lanes, m + 4 * s0);
      const __m512i lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(v, low4));
      const __m512i hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(v, 4), low4));
      _mm512_mask_storeu_epi32(out + s0, lanes, _mm512_or_si512(lo, _mm512_slli_epi16(hi, 4)));
      // Lanes past the end read as 0 and are masked out of the check.
      bad = _mm512_mask_or_epi32(bad, lanes, bad, invalid_nibbles_x16(v));
    }
  }
  return uint32_t(_mm512_reduce_or_epi32(bad));
}

// Unpack rows [n0, n0+16) x K-step s into a dense 16 x 32 bf16 tile (rows
// past n are zero), one vpexpandw per row. fp16 weights are split like x
// (hi = bf16(w), lo = bf16(w - hi)) into a second tile.
template <bool kF16>
inline void unpack_a_tile(const LinearCtx& c, int64_t n0, int64_t s, int64_t steps, const uint32_t* masks,
                          uint16_t* hi_tile, uint16_t* lo_tile) {
  const uint16_t* vals = static_cast<const uint16_t*>(c.values);
  for (int r = 0; r < kTileRows; ++r) {
    const int64_t row = n0 + r;
    __m512i hi = _mm512_setzero_si512(), lo = _mm512_setzero_si512();
    if (row < c.n) {
      const __mmask32 keep = __mmask32(masks[r * steps + s]);
      __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(vals + row * values_cols(c.k) + 16 * s));
      if constexpr (kF16) {
        const __m512 w = _mm512_cvtph_ps(packed);
        const __m256i w_hi = (__m256i)_mm512_cvtneps_pbh(w);
        const __m512 w_hi_f = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(w_hi), 16));
        const __m256i w_lo = (__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(w, w_hi_f));
        lo = _mm512_maskz_expand_epi16(keep, _mm512_castsi256_si512(w_lo));
        packed = w_hi;
      }
      hi = _mm512_maskz_expand_epi16(keep, _mm512_castsi256_si512(packed));
    }
    _mm512_store_si512(hi_tile + r * kTileK, hi);
    if constexpr (kF16) _mm512_store_si512(lo_tile + r * kTileK, lo);
  }
}

// C tile J (x rows 16J..16J+15) += A . B_J for one step: b points at the
// step's B tiles, kParts per 16 x rows; BH, BL: the B tiles to use (above).
#define LLMPACK_AMX_STEP_C(J, BH, BL)                         \
  do {                                                        \
    _tile_loadd(BH, b + (J) * kParts * 256, 64);              \
    _tile_dpbf16ps(J, 4, BH);                                 \
    if constexpr (kF16) {                                     \
      _tile_loadd(BL, b + (J) * kParts * 256 + 256, 64);      \
      _tile_dpbf16ps(J, 4, BL);                               \
      _tile_dpbf16ps(J, 5, BH);                               \
      _tile_dpbf16ps(J, 5, BL);                               \
    }                                                         \
  } while (0)

// One pass over all weight rows for x rows [m0, m0 + mb), mb <= 64. bf16:
// C += A.B per step. fp16: C += A_hi.B_hi + A_hi.B_lo + A_lo.B_hi + A_lo.B_lo,
// all four products exact in fp32, so the result is as accurate as the fp32
// gather kernel's; the unpack (the bottleneck) merely doubles.
template <int NB, bool kF16>
void pass(const LinearParams& p, const LinearCtx& c, int64_t m0, int64_t mb, std::atomic<int64_t>& bad) {
  constexpr int kParts = kF16 ? 2 : 1;
  const std::vector<uint32_t> xt = x_to_tiles(static_cast<const uint16_t*>(p.x), m0, mb, p.k, NB, kF16);
  const int64_t steps = p.k / kTileK, ntiles = (p.n + kTileRows - 1) / kTileRows;
  const uint16_t* bias = static_cast<const uint16_t*>(p.bias);
  uint16_t* y = static_cast<uint16_t*>(p.y);
  // ~64 Ki useful MACs per task at least.
  parallel_for(0, ntiles, grain_for(int64_t(kTileRows) * p.k / 2 * mb, 1 << 16), [&](int64_t t0, int64_t t1) {
    configure_tiles();  // tile state is per thread
    alignas(64) uint16_t a_ring[kRing][kParts][kTileRows * kTileK];
    std::vector<uint32_t> masks(size_t(kTileRows * steps));
    alignas(64) float c_out[kMaxB][kTileRows * kTileM];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n0 = t * kTileRows;
      const uint32_t invalid = keep_masks(c, n0, steps, masks.data());
      _tile_zero(0);
      if constexpr (NB > 1) _tile_zero(1);
      if constexpr (NB > 2) _tile_zero(2);
      if constexpr (NB > 3) _tile_zero(3);
      // AMX tile loads get no store forwarding: a tile unpacked by ordinary
      // stores is loaded only kAhead steps later, once those stores are in L1.
      auto unpack = [&](int64_t s) {
        uint16_t* slot = a_ring[s % kRing][0];
        unpack_a_tile<kF16>(c, n0, s, steps, masks.data(), slot, slot + (kParts - 1) * kTileRows * kTileK);
      };
      for (int64_t s = 0; s < std::min<int64_t>(kAhead, steps); ++s) unpack(s);
      for (int64_t s = 0; s < steps; ++s) {
        if (s + kAhead < steps) unpack(s + kAhead);
        _tile_loadd(4, a_ring[s % kRing][0], 64);
        if constexpr (kF16) _tile_loadd(5, a_ring[s % kRing][1], 64);
        // One A tile (16 weight rows) against every 16-row block of x.
        const uint32_t* b = xt.data() + (s * NB) * kParts * 256;
        if constexpr (kF16) {
          static_assert(NB <= 2);
          LLMPACK_AMX_STEP_C(0, 6, 7);
          if constexpr (NB > 1) LLMPACK_AMX_STEP_C(1, 2, 3);
        } else {
          LLMPACK_AMX_STEP_C(0, 6, 7);
          if constexpr (NB > 1) LLMPACK_AMX_STEP_C(1, 7, 6);
          if constexpr (NB > 2) LLMPACK_AMX_STEP_C(2, 6, 7);
          if constexpr (NB > 3) LLMPACK_AMX_STEP_C(3, 7, 6);
        }
      }
      if (invalid) {  // find the row for the message; the result is discarded
        for (int r = 0; r < kTileRows && n0 + r < p.n; ++r) {
          uint32_t bad_row = 0;
          for (int64_t s = 0; s < steps; ++s) {
            uint32_t w;
            std::memcpy(&w, c.meta + (n0 + r) * meta_cols(p.k) + 4 * s, 4);
            bad_row |= invalid_nibbles(w);
          }
          if (bad_row) {
            record_min(bad, n0 + r);
            break;
          }
        }
        continue;
      }
      _tile_stored(0, c_out[0], 64);
      if constexpr (NB > 1) _tile_stored(1, c_out[1], 64);
      if constexpr (NB > 2) _tile_stored(2, c_out[2], 64);
      if constexpr (NB > 3) _tile_stored(3, c_out[3], 64);
      // C row r holds weight row n0 + r against x rows j: add the bias and
      // round 16 at a time (vector RNE conversions; per-element scalar
      // rounding cost more than the tile products at K = 576), then store
      // each to y[j, n0 + r].
      alignas(64) uint16_t out16[kMaxB * kTileM];
      for (int r = 0; r < kTileRows && n0 + r < p.n; ++r) {
        const int64_t n = n0 + r;
        const __m512 b = _mm512_set1_ps(!bias ? 0.f : kF16 ? f16_to_f32(bias[n]) : bf16_to_f32(bias[n]));
        for (int t = 0; t < NB; ++t) {
          const __m512 v = _mm512_add_ps(_mm512_load_ps(c_out[t] + r * kTileM), b);
          const __m256i h = kF16 ? _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
                                 : (__m256i)_mm512_cvtneps_pbh(v);
          _mm256_store_si256(reinterpret_cast<__m256i*>(out16 + t * kTileM), h);
        }
        for (int64_t j = 0; j < mb; ++j) y[(m0 + j) * p.n + n] = out16[j];
      }
    }
    _tile_release();
  });
}

template <bool kF16>
void linear_amx(const LinearParams& p) {
  const LinearCtx c{nullptr, p.x, p.values, p.meta, p.m, p.n, p.k, false};
  std::atomic<int64_t> bad{kNoError};
  // Every weight tile re-reads the pass's x tiles (steps x blocks x 1 KiB).
  // At small K a 4th block pushes them out of L1 and costs ~2.5x the others
  // (measured at K = 576); at larger K they come from L2 anyway and 4 blocks
  // per pass unpack W least often.
  const int64_t steps = p.k / kTileK;
  const int blocks_per_pass = kF16 ? kMaxBFor<kF16> : steps <= 24 ? 3 : kMaxBFor<kF16>;
  const int64_t rows_per_pass = int64_t(blocks_per_pass) * kTileM;
  for (int64_t m0 = 0; m0 < p.m; m0 += rows_per_pass) {
    const int64_t mb = std::min<int64_t>(rows_per_pass, p.m - m0);
    switch ((mb + kTileM - 1) / kTileM) {
      case 1: pass<1, kF16>(p, c, m0, mb, bad); break;
      case 2: pass<2, kF16>(p, c, m0, mb, bad); break;
      case 3: if constexpr (!kF16) pass<3, kF16>(p, c, m0, mb, bad); break;
      default: if constexpr (!kF16) pass<4, kF16>(p, c, m0, mb, bad); break;
    }
  }
  *p.first_bad_row = bad.load();
}

void linear(const LinearParams& p) {
  // Below kMinM* the gather kernels win: a tile always computes 16 x rows, and
  // unpacking W costs more than gathering x for a few rows.
  if (p.dtype == DType::f32 || p.k % kTileK != 0 || p.m < (p.dtype == DType::bf16 ? kMinMBf16 : kMinMF16)) {
    kCpuAvx512Bf16.linear(p);
    return;
  }
  if (p.dtype == DType::bf16)
    linear_amx<false>(p);
  else
    linear_amx<true>(p);
}

void decompress_expand(const DecompressParams& p) {
  if (p.elem_bytes == 4) {  // the avx512 level's vexpandps unpack
    kCpuAvx512Bf16.decompress(p);
    return;
  }
  if (p.cols % kTileK != 0) {
    decompress(p);
    return;
  }
  expand_rows<uint16_t>(p, [](const uint16_t* v, uint32_t keep, uint16_t* w) {
    const __m256i vals = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v));
    _mm512_storeu_si512(w, _mm512_maskz_expand_epi16(__mmask32(keep), _mm512_castsi256_si512(vals)));
  });
}

}  // namespace
}  // namespace llmpack::sparse24::amx

namespace llmpack::sparse24 {
extern const CpuKernels kCpuAmx;
const CpuKernels kCpuAmx = {&amx::compress, &amx::decompress_expand, &amx::linear};
}  // namespace llmpack::sparse24
