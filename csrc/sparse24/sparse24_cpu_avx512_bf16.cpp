// 2:4 CPU kernels, avx512_bf16 build (the avx512 flags + AVX512_BF16; flags:
// cmake/LlmpackIsa.cmake). Only the bf16 linear differs from the avx512 level.
// A unit of its own, not a target attribute inside the avx512 unit: GCC does
// not inline a bf16-target function into the target-less unroll helpers, and
// an out-of-line call per FMA costs more than the kernel.
//
// bf16 weights and activations multiply in bf16 pairs. Per chunk of 64
// K-positions (16 groups, 32 kept values = one zmm of bf16, 8 metadata bytes):
// value j pairs with x[4*(j/2) + i_j], an index in 0..63, so one vpermt2w
// gathers all 32 partners out of the two zmm holding x[64c .. 64c+63] (bf16),
// and one vdpbf16ps does 32 MACs (each fp32 lane accumulates its group's two
// products; bf16*bf16 products are exact in fp32). Twice the MACs per permute
// of the fp32 path, which is what bounds it.
#include <immintrin.h>

#include <cstring>

#define LLMPACK_ISA_NS avx512_bf16
#include "sparse24/sparse24_cpu_kernels.h"
#include "sparse24/sparse24_cpu_avx512_common.h"

namespace llmpack::sparse24 {
extern const CpuKernels kCpuAvx512;
}

namespace llmpack::sparse24::avx512_bf16 {
namespace {

constexpr int kChunk64 = 64;
constexpr int kPrefetchChunks = 8;  // 512 B of values ahead per row (x4 rows); measured best of 4..64

alignas(64) constexpr uint16_t kWordShift[32] = {0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6,
                                                 0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6};
alignas(64) constexpr uint16_t kWordBase[32] = {0,  0,  4,  4,  8,  8,  12, 12, 16, 16, 20, 20, 24, 24, 28, 28,
                                                32, 32, 36, 36, 40, 40, 44, 44, 48, 48, 52, 52, 56, 56, 60, 60};
// pshufb control: byte 0 of each qword into the low byte of its 4 words (high bytes zeroed).
alignas(64) constexpr uint8_t kSpreadByte[64] = {
    0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80, 8, 0x80, 8, 0x80, 8, 0x80, 8, 0x80,
    0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80, 8, 0x80, 8, 0x80, 8, 0x80, 8, 0x80,
    0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80, 8, 0x80, 8, 0x80, 8, 0x80, 8, 0x80,
    0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80, 8, 0x80, 8, 0x80, 8, 0x80, 8, 0x80};

// 32 word indices (0..63) for a 64-bit metadata word: value j's field sits at
// bits 2j..2j+1; qword q of the vector serves words 4q..4q+3, whose fields
// are byte q of the metadata word.
inline __m512i chunk64_indices(const uint8_t* meta8) {
  const __m512i qshift = _mm512_setr_epi64(0, 8, 16, 24, 32, 40, 48, 56);
  int64_t w;  // metadata of odd-width rows sits at any byte offset: memcpy, not an int64_t load
  std::memcpy(&w, meta8, sizeof w);
  const __m512i word = _mm512_set1_epi64(w);
  __m512i t = _mm512_srlv_epi64(word, qshift);
  t = _mm512_shuffle_epi8(t, _mm512_load_si512(kSpreadByte));
  t = _mm512_srlv_epi16(t, _mm512_load_si512(kWordShift));
  return _mm512_ternarylogic_epi32(t, _mm512_set1_epi16(3), _mm512_load_si512(kWordBase), kAndOr);
}

// R weight rows (from rb, starting at r0) x MB rows of x, as the fp32 block
// (sparse24_cpu_avx512.cpp). Two copies of one skeleton on purpose: a shared
// policy template (chunk ops as static members) measured 5-10 % slower at
// M = 3..16, GCC folding the weight load into every FMA or spilling.
template <int MB, int R, bool kPrefetch>
[[gnu::noinline]] void block_bf16(const LinearCtx& c, const RowBlock<uint16_t, kBlockRows>& rb, int r0, int64_t m0,
                             float* acc) {
  constexpr int U = MB == 1 ? 2 : 1;
  const int64_t chunks = c.k / kChunk64;
  __m512 a[R][MB][U];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < MB; ++i)
      for (int u = 0; u < U; ++u) a[r][i][u] = _mm512_setzero_ps();
  const uint16_t* x0 = static_cast<const uint16_t*>(c.x_raw) + m0 * c.k;
  auto step = [&](int64_t ch, auto u) {
    __m512i xl[MB], xh[MB];
    unroll<MB>([&](auto i) {
      xl[i] = _mm512_loadu_si512(x0 + i * c.k + kChunk64 * ch);
      xh[i] = _mm512_loadu_si512(x0 + i * c.k + kChunk64 * ch + 32);
    });
    unroll<R>([&](auto r) {
      const uint16_t* v = rb.v[r0 + r];
      // Ahead of the hardware streamer: a single core otherwise leaves L3/DRAM
      // bandwidth unused at decode shapes (few misses in flight).
      // Compile-time at MB = 1, a run-time branch at MB >= 2: see the fp32
      // block in sparse24_cpu_avx512.cpp (it keeps x in registers).
      if constexpr (MB == 1) {
        if constexpr (kPrefetch) {
          _mm_prefetch(reinterpret_cast<const char*>(v + 32 * (ch + kPrefetchChunks)), _MM_HINT_T0);
          // The same line of the next block's row r (and its metadata, one
          // line per 8 chunks) into L2, as the avx2 unit does: a block's rows
          // are a page or more apart, where the hardware streamer stops, and
          // the next block's metadata check reads its words first thing
          // (M = 1 bf16 cold 4096^2 ~35 -> ~42 GB/s on Zen 5).
          // (Past the last block this points beyond W: a prefetch never faults.)
          _mm_prefetch(reinterpret_cast<const char*>(v + kBlockRows * values_cols(c.k) + 32 * ch), _MM_HINT_T1);
          if (ch % 8 == 0)
            _mm_prefetch(reinterpret_cast<const char*>(rb.m[r0 + r] + kBlockRows * meta_cols(c.k) + 8 * ch),
                         _MM_HINT_T1);
        }
      } else if (c.prefetch) {
        _mm_prefetch(reinterpret_cast<const char*>(v + 32 * (ch + kPrefetchChunks)), _MM_HINT_T0);
      }
      const __m512i idx = chunk64_indices(rb.m[r0 + r] + 8 * ch);
      const __m512i w = _mm512_loadu_si512(v + 32 * ch);
      unroll<MB>([&](auto i) {
        a[r][i][u] = _mm512_dpbf16_ps(a[r][i][u], (__m512bh)w, (__m512bh)_mm512_permutex2var_epi16(xl[i], idx, xh[i]));
      });
    });
  };
  int64_t ch = 0;
  for (; ch + U <= chunks; ch += U) unroll<U>([&](auto u) { step(ch + u, u); });
  for (; ch < chunks; ++ch) step(ch, std::integral_constant<int, 0>{});
  add_block_sums(a, acc, r0, c.m, m0);
}

template <bool kPrefetch>
void blocks_bf16(const LinearCtx& c, const RowBlock<uint16_t, kBlockRows>& rb, float* acc) {
  for_row_blocks(c.m, [&](auto mb, int64_t m0) {
    constexpr int MB = decltype(mb)::value;
    if constexpr (MB <= 2) {
      block_bf16<MB, 4, kPrefetch>(c, rb, 0, m0, acc);
    } else {  // register budget: 2 weight rows at a time
      block_bf16<MB, 2, kPrefetch>(c, rb, 0, m0, acc);
      block_bf16<MB, 2, kPrefetch>(c, rb, 2, m0, acc);
    }
    return 0u;
  });
}

bool dot_bf16(const LinearCtx& c, int64_t row0, int64_t nrows, float* acc) {
  return dot_block<uint16_t>(c, DType::bf16, row0, nrows, acc, kChunk64, [&](const RowBlock<uint16_t, kBlockRows>& rb) {
    c.prefetch ? blocks_bf16<true>(c, rb, acc) : blocks_bf16<false>(c, rb, acc);
  });
}

// bf16 takes the dot-product path; fp32 and fp16 (whose values bf16 cannot
// hold exactly) keep the avx512 level's fp32 kernel.
void linear(const LinearParams& p) {
  if (p.dtype != DType::bf16) {
    kCpuAvx512.linear(p);
    return;
  }
  linear_driver<uint16_t, kBlockRows>(
      p, [](const LinearCtx& c, int64_t row0, int64_t nrows, float* acc) { return dot_bf16(c, row0, nrows, acc); },
      /*needs_f32_x=*/p.k % kChunk64 != 0);  // only the scalar K tail reads fp32 x
}

// The avx512 level's vectorised unpack (called through its table at run time,
// not copied at static-initialisation time).
void decompress_expand(const DecompressParams& p) { kCpuAvx512.decompress(p); }

}  // namespace
}  // namespace llmpack::sparse24::avx512_bf16

namespace llmpack::sparse24 {
extern const CpuKernels kCpuAvx512Bf16;
const CpuKernels kCpuAvx512Bf16 = {&avx512_bf16::compress, &avx512_bf16::decompress_expand, &avx512_bf16::linear};
}  // namespace llmpack::sparse24
