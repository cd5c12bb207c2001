// 2:4 CPU kernels, AVX2 build (AVX2 + FMA + F16C; flags: cmake/LlmpackIsa.cmake).
//
// Linear inner loop, per chunk of 16 K-positions (4 groups, 8 kept values,
// 2 metadata bytes). x is re-laid out once per call so that each chunk's 16
// floats are stored as A = [x0..3 | x8..11] and B = [x4..7 | x12..15]: group g
// of the chunk then fills one 128-bit lane (groups 0, 2 in A; 1, 3 in B), and
// value j's partner x[4g + i_j] is picked by vpermilps, an in-lane permute that
// reads only the low 2 bits of each index, so the index is the metadata word
// shifted by 2j and nothing else (no mask, no group base). Per 8 MACs: one
// variable shift, two vpermilps, one blend, one FMA. The permutes bound the
// loop on the shuffle port(s) (one on Haswell/Skylake: 2 cycles per 8 MACs;
// in-lane shuffles get a second port on Ice Lake+ and Zen), so nothing else
// may go there: metadata is validated in a vector pre-pass, not with scalar
// ops in the loop, and broadcast from memory, not from a register. Blocks of up to 4 weight rows share each x
// load and keep 8 FMA chains in flight at M = 1.
#include <immintrin.h>

#include <vector>

#define LLMPACK_ISA_NS avx2
#include "sparse24/sparse24_cpu_kernels.h"

namespace llmpack::sparse24::avx2 {
namespace {

constexpr int kChunk = 16;     // K-positions per vector step
constexpr int kBlockRows = 4;  // weight rows per block
// Software prefetch, always on here (unlike the AVX-512 units): this kernel
// is bound by the shuffle port, so the prefetches' load-port slots are free,
// and they are what makes cold weights stream (bench/sparse24.py, cold rows:
// 4096^2 bf16 at M = 1 went from 1.5-1.8x to 1.95-2.2x dense bf16 and to
// ~the DRAM read roof; 576^2 from 0.9x to 1.2x dense). Two streams per row:
// the next block's row at the same offset into L2, this row 32 chunks (512 B
// of bf16) ahead into L1 (measured: 8..32 chunks within the noise, 32 best).
constexpr int kAheadChunks = 32;

// x [m, k] (fp32 or converted) -> the A/B layout above for every full chunk;
// the K tail (k % 16) is left as is at the end of each row.
std::vector<float> relayout_x(const LinearParams& p) {
  std::vector<float> out(size_t(p.m * p.k));
  const int64_t full = p.k / kChunk * kChunk;
  for (int64_t i = 0; i < p.m; ++i) {
    float* dst = out.data() + i * p.k;
    for (int64_t j = 0; j < p.k; ++j) {
      float v;
      if (p.dtype == DType::f32)
        v = static_cast<const float*>(p.x)[i * p.k + j];
      else {
        const uint16_t h = static_cast<const uint16_t*>(p.x)[i * p.k + j];
        v = p.dtype == DType::bf16 ? bf16_to_f32(h) : f16_to_f32(h);
      }
      if (j >= full) {
        dst[j] = v;
        continue;
      }
      // Position q in the chunk, group g = q / 4: A holds groups 0, 2 (at
      // 0..3, 4..7), B holds groups 1, 3 (at 8..11, 12..15).
      const int64_t c = j / kChunk, q = j % kChunk, g = q / 4;
      dst[c * kChunk + (g & 1) * 8 + (g >> 1) * 4 + q % 4] = v;
    }
  }
  return out;
}

template <class T, bool kBf16>
inline __m256 load8(const T* v) {
  if constexpr (sizeof(T) == 4) {
    return _mm256_loadu_ps(v);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(v));
    if constexpr (kBf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
  }
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Nonzero when a metadata nibble of the first `bytes` bytes at m is invalid
// (invalid_nibbles(), sparse24.h, on 8 words per vector; the < 4 leftover
// bytes one word at a time with the high bytes forced valid).
inline uint32_t invalid_meta_bytes(const uint8_t* m, int64_t bytes) {
  const __m256i c33 = _mm256_set1_epi32(0x33333333), c44 = _mm256_set1_epi32(0x44444444),
                c11 = _mm256_set1_epi32(0x11111111);
  __m256i bad = _mm256_setzero_si256();
  int64_t b = 0;
  for (; b + 32 <= bytes; b += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + b));
    const __m256i i0 = _mm256_and_si256(v, c33), i1 = _mm256_and_si256(_mm256_srli_epi32(v, 2), c33);
    bad = _mm256_or_si256(
        bad, _mm256_andnot_si256(_mm256_sub_epi32(_mm256_sub_epi32(_mm256_or_si256(i1, c44), i0), c11), c44));
  }
  uint32_t bad_tail = 0;
  for (; b < bytes; b += 4) {
    uint32_t w = 0x44444444u;  // valid filler for bytes past the end
    std::memcpy(&w, m + b, size_t(std::min<int64_t>(4, bytes - b)));
    bad_tail |= invalid_nibbles(w);
  }
  return bad_tail | uint32_t(!_mm256_testz_si256(bad, bad));
}

template <class T>
struct Avx2Kernel {
  static constexpr int kRows = kBlockRows;

  // R weight rows (from rb, starting at r0) x MB rows of x; U chains per pair
  // hide FMA latency at MB = 1. Compile-time indices keep the accumulators in
  // registers; noinline keeps GCC scalarising them (see the avx512 unit).
  template <int MB, int R, bool kBf16>
  [[gnu::noinline]] static void block(const LinearCtx& c, const RowBlock<T, kBlockRows>& rb, int r0, int64_t m0,
                                      float* acc) {
    constexpr int U = MB == 1 ? 2 : 1;
    const int64_t chunks = c.k / kChunk, k = c.k;
    __m256 a[R][MB][U];
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < MB; ++i)
        for (int u = 0; u < U; ++u) a[r][i][u] = _mm256_setzero_ps();
    const float* x0 = c.x + m0 * k;
    // Index of value j = the chunk's metadata shifted right by 2j (vpermilps
    // ignores the bits above). A pair of chunks shares one 32-bit metadata
    // word, broadcast straight from memory (a load; broadcasting from a
    // register would take the shuffle port twice): the second chunk of the
    // pair shifts 16 further. A last unpaired chunk loads its 16 bits alone.
    const __m256i shifts0 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i shifts1 = _mm256_add_epi32(shifts0, _mm256_set1_epi32(16));
    auto step = [&](int64_t ch, auto u, auto half, auto paired) {  // u: FMA chain; half: chunk's place in its pair
      __m256 xa[MB], xb[MB];
      unroll<MB>([&](auto i) {
        xa[i] = _mm256_loadu_ps(x0 + i * k + kChunk * ch);
        xb[i] = _mm256_loadu_ps(x0 + i * k + kChunk * ch + 8);
      });
      unroll<R>([&](auto r) {
        __m256i idx;
        if constexpr (decltype(paired)::value) {
          const uint8_t* pair_word = rb.m[r0 + r] + 2 * (ch - half);
          // memcpy: the word is not 4-byte aligned (a float* to it would be
          // UB); the compilers still emit one vpbroadcastd from memory.
          uint32_t w32;
          std::memcpy(&w32, pair_word, 4);
          const __m256i word = _mm256_set1_epi32(static_cast<int>(w32));
          idx = _mm256_srlv_epi32(word, half == 0 ? shifts0 : shifts1);
        } else {
          uint16_t m16;
          std::memcpy(&m16, rb.m[r0 + r] + 2 * ch, 2);
          idx = _mm256_srlv_epi32(_mm256_set1_epi32(m16), shifts0);
        }
        // One prefetch per chunk pair (32 B of bf16 values, 64 B of fp32).
        if constexpr (decltype(half)::value == 0) {
          // The same offset in the next block's row r, into L2: a block's rows
          // are one page each or more, and a hardware prefetcher stops at
          // page ends, so it is the software that keeps the next rows coming.
          // (Past the last block this points beyond W: a prefetch never faults.)
          const T* next_v = rb.v[r0 + r] + kBlockRows * values_cols(c.k);
          _mm_prefetch(reinterpret_cast<const char*>(next_v + 8 * ch), _MM_HINT_T1);
          if (ch % 32 == 0)  // metadata: 2 bytes per chunk, one line per 32 chunks
            _mm_prefetch(reinterpret_cast<const char*>(rb.m[r0 + r] + kBlockRows * meta_cols(c.k) + 2 * ch), _MM_HINT_T1);
          if constexpr (kAheadChunks > 0)
            _mm_prefetch(reinterpret_cast<const char*>(rb.v[r0 + r] + 8 * (ch + kAheadChunks)), _MM_HINT_T0);
        }
        const __m256 w = load8<T, kBf16>(rb.v[r0 + r] + 8 * ch);
        unroll<MB>([&](auto i) {
          const __m256 g = _mm256_blend_ps(_mm256_permutevar_ps(xa[i], idx), _mm256_permutevar_ps(xb[i], idx), 0xCC);
          a[r][i][u] = _mm256_fmadd_ps(w, g, a[r][i][u]);
        });
      });
    };
    using Paired = std::integral_constant<bool, true>;
    using Single = std::integral_constant<bool, false>;
    int64_t ch = 0;
    for (; ch + 2 <= chunks; ch += 2)
      unroll<2>([&](auto half) { step(ch + half, std::integral_constant<int, half % U>{}, half, Paired{}); });
    if (ch < chunks) step(ch, std::integral_constant<int, 0>{}, std::integral_constant<int, 0>{}, Single{});
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < MB; ++i) {
        __m256 s = a[r][i][0];
        for (int u = 1; u < U; ++u) s = _mm256_add_ps(s, a[r][i][u]);
        acc[(r0 + r) * c.m + m0 + i] += hsum(s);
      }
  }

  template <bool kBf16>
  static void blocks(const LinearCtx& c, const RowBlock<T, kBlockRows>& rb, float* acc) {
    for_row_blocks(c.m, [&](auto mb, int64_t m0) {
      constexpr int MB = decltype(mb)::value;
      if constexpr (MB == 1) {
        block<1, 4, kBf16>(c, rb, 0, m0, acc);
      } else if constexpr (MB == 2) {  // 16 ymm registers: fewer rows per pass
        block<2, 2, kBf16>(c, rb, 0, m0, acc);
        block<2, 2, kBf16>(c, rb, 2, m0, acc);
      } else {
        unroll<kBlockRows>([&](auto r) { block<MB, 1, kBf16>(c, rb, r, m0, acc); });
      }
      return 0u;
    });
  }

  static bool dot(const LinearCtx& c, DType dt, int64_t row0, int64_t nrows, float* acc) {
    const RowBlock<T, kBlockRows> rb(c, row0, nrows);
    const int64_t chunks = c.k / kChunk;
    uint32_t invalid = 0;
    for (int r = 0; r < kBlockRows; ++r) invalid |= invalid_meta_bytes(rb.m[r], 2 * chunks);
    constexpr bool kMaybeBf16 = sizeof(T) == 2;  // fp32 instantiates one flavour only
    const bool bf16 = kMaybeBf16 && dt == DType::bf16;
    bf16 ? blocks<kMaybeBf16>(c, rb, acc) : blocks<false>(c, rb, acc);
    bool tail_ok = true;
    const int64_t g_done = chunks * (kChunk / kGroup);
    if (g_done < c.k / kGroup)  // K % 16 != 0: scalar tail (validates its groups and the padding nibble)
      for (int64_t r = 0; r < nrows; ++r)
        tail_ok &= dot_rows_scalar<T>(c, dt, row0 + r, g_done, c.k / kGroup, 0, c.m, acc + r * c.m);
    return tail_ok && invalid == 0;
  }
};

void linear(const LinearParams& p) {
  // The tail of each x row keeps its place, so dot_rows_scalar reads it as is.
  const std::vector<float> xr = relayout_x(p);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const DType dt = p.dtype;
    linear_driver<T, kBlockRows>(
        p, [dt](const LinearCtx& c, int64_t row0, int64_t nrows, float* acc) {
          return Avx2Kernel<T>::dot(c, dt, row0, nrows, acc);
        },
        /*needs_f32_x=*/true, xr.data());
  };
  if (p.dtype == DType::f32)
    run(float{});
  else
    run(uint16_t{});
}

}  // namespace
}  // namespace llmpack::sparse24::avx2

namespace llmpack::sparse24 {
extern const CpuKernels kCpuAvx2;
const CpuKernels kCpuAvx2 = {&avx2::compress, &avx2::decompress, &avx2::linear};
}  // namespace llmpack::sparse24
