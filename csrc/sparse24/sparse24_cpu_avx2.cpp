// 2:4 CPU kernels, AVX2 build (AVX2 + FMA + F16C; flags: cmake/LlmpackIsa.cmake).
//
// Linear inner loop, per chunk of 16 K-positions (4 groups, 8 kept values,
// 2 metadata bytes): values 0..3 come from x[16c .. 16c+7] and values 4..7
// from x[16c+8 .. 16c+15], so two in-lane-agnostic vpermps (one per half of
// x) and one blend gather the 8 x entries; then one FMA per 8 MACs.
#include <immintrin.h>

#define LLMPACK_ISA_NS avx2
#include "sparse24/sparse24_cpu_kernels.h"

namespace llmpack::sparse24::avx2 {
namespace {

constexpr int kChunk = 16;

inline __m256i chunk_indices(uint32_t meta16) {
  const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  // Group base within its 8-wide half of x.
  const __m256i base = _mm256_setr_epi32(0, 0, 4, 4, 0, 0, 4, 4);
  const __m256i pos = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(meta16)), shifts),
                                       _mm256_set1_epi32(3));
  return _mm256_add_epi32(pos, base);
}

template <class T>
inline __m256 load8(const T* v, DType dt) {
  if constexpr (sizeof(T) == 4) {
    return _mm256_loadu_ps(v);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(v));
    if (dt == DType::bf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
  }
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <class T>
struct Avx2Kernel {
  template <int MB>
  static uint32_t block(const LinearCtx& c, DType dt, const T* v, const uint8_t* mt, int64_t m0, float* acc) {
    constexpr int U = MB == 1 ? 4 : 2;  // >= 4 independent FMA/dot chains in flight
    const int64_t chunks = c.k / kChunk;
    __m256 a[MB][U];
    for (int i = 0; i < MB; ++i)
      for (int u = 0; u < U; ++u) a[i][u] = _mm256_setzero_ps();
    const float* x0 = c.x + m0 * c.k;
    uint32_t invalid = 0;
    auto step = [&](int64_t ch, auto u) {
      const uint32_t m16 = uint32_t(mt[2 * ch]) | (uint32_t(mt[2 * ch + 1]) << 8);
      invalid |= invalid_nibbles(m16) & 0x4444u;  // upper nibbles are not ours
      const __m256i idx = chunk_indices(m16);
      const __m256 w = load8(v + 8 * ch, dt);
      unroll<MB>([&](auto i) {  // constant indices: accumulators stay in registers
        const float* xr = x0 + i * c.k + kChunk * ch;
        const __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xr), idx);
        const __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xr + 8), idx);
        a[i][u] = _mm256_fmadd_ps(w, _mm256_blend_ps(lo, hi, 0xF0), a[i][u]);
      });
    };
    int64_t ch = 0;
    for (; ch + U <= chunks; ch += U) unroll<U>([&](auto u) { step(ch + u, u); });
    for (; ch < chunks; ++ch) step(ch, std::integral_constant<int, 0>{});
    for (int i = 0; i < MB; ++i) {
      __m256 s = a[i][0];
      for (int u = 1; u < U; ++u) s = _mm256_add_ps(s, a[i][u]);
      acc[m0 + i] += hsum(s);
    }
    return invalid;
  }

  static constexpr int kRows = 1;
  static bool dot(const LinearCtx& c, DType dt, int64_t row, int64_t /*nrows == 1*/, float* acc) {
    const T* v = static_cast<const T*>(c.values) + row * values_cols(c.k);
    const uint8_t* mt = c.meta + row * meta_cols(c.k);
    const uint32_t invalid = for_row_blocks(
        c.m, [&](auto mb, int64_t m0) { return block<decltype(mb)::value>(c, dt, v, mt, m0, acc); });
    const int64_t g_done = c.k / kChunk * (kChunk / kGroup);
    const bool tail_ok = dot_rows_scalar<T>(c, dt, row, g_done, c.k / kGroup, 0, c.m, acc);
    return tail_ok && invalid == 0;
  }
};

void linear(const LinearParams& p) { linear_dispatch<Avx2Kernel>(p); }

}  // namespace
}  // namespace llmpack::sparse24::avx2

namespace llmpack::sparse24 {
extern const CpuKernels kCpuAvx2;
const CpuKernels kCpuAvx2 = {&avx2::compress, &avx2::decompress, &avx2::linear};
}  // namespace llmpack::sparse24
