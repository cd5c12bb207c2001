// 2:4 CPU kernels, AVX-512 build (F/BW/VL/DQ; flags: cmake/LlmpackIsa.cmake).
//
// Linear inner loop, per chunk of 32 K-positions (8 groups, 16 kept values,
// 4 metadata bytes): the 16 values widen to one zmm of fp32; the 16 2-bit
// positions in the 32-bit metadata word become lane indices with one variable
// shift (value j's index sits at bits 2j..2j+1 by the nibble layout) plus the
// group base 4*(j/2); vpermt2ps then gathers the matching x entries out of the
// two zmm holding x[32c .. 32c+31]. One FMA per 16 MACs, and only the packed
// bytes (values + meta) stream from memory: x rows stay in L1/L2.
#include <immintrin.h>

#define LLMPACK_ISA_NS avx512
#include "sparse24/sparse24_cpu_kernels.h"

namespace llmpack::sparse24::avx512 {
namespace {

constexpr int kChunk = 32;  // K-positions per vector step

inline __m512i chunk_indices(uint32_t meta32) {
  const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
  const __m512i pos = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(int(meta32)), shifts),
                                       _mm512_set1_epi32(3));
  return _mm512_add_epi32(pos, base);
}

template <class T>
inline __m512 load16(const T* v, DType dt) {
  if constexpr (sizeof(T) == 4) {
    return _mm512_loadu_ps(v);
  } else {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v));
    if (dt == DType::bf16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
  }
}

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t u;
  std::memcpy(&u, p, 4);
  return u;
}

template <class T>
struct Avx512Kernel {
  // MB rows of x share each decoded weight chunk; U independent accumulator
  // chains per row hide FMA latency when MB is small.
  template <int MB>
  static uint32_t block(const LinearCtx& c, DType dt, const T* v, const uint8_t* mt, int64_t m0, float* acc) {
    constexpr int U = MB == 1 ? 4 : (MB == 2 ? 2 : 1);
    const int64_t chunks = c.k / kChunk;
    __m512 a[MB][U];
    for (int i = 0; i < MB; ++i)
      for (int u = 0; u < U; ++u) a[i][u] = _mm512_setzero_ps();
    const float* x0 = c.x + m0 * c.k;
    uint32_t invalid = 0;
    auto step = [&](int64_t ch, int u) {
      const uint32_t word = load_u32(mt + 4 * ch);
      invalid |= invalid_nibbles(word);
      const __m512i idx = chunk_indices(word);
      const __m512 w = load16(v + 16 * ch, dt);
      for (int i = 0; i < MB; ++i) {
        const float* xr = x0 + i * c.k + kChunk * ch;
        const __m512 g = _mm512_permutex2var_ps(_mm512_loadu_ps(xr), idx, _mm512_loadu_ps(xr + 16));
        a[i][u] = _mm512_fmadd_ps(w, g, a[i][u]);
      }
    };
    int64_t ch = 0;
    for (; ch + U <= chunks; ch += U)
      for (int u = 0; u < U; ++u) step(ch + u, u);
    for (; ch < chunks; ++ch) step(ch, 0);
    for (int i = 0; i < MB; ++i) {
      __m512 s = a[i][0];
      for (int u = 1; u < U; ++u) s = _mm512_add_ps(s, a[i][u]);
      acc[m0 + i] += _mm512_reduce_add_ps(s);
    }
    return invalid;
  }

  static bool dot(const LinearCtx& c, DType dt, int64_t row, float* acc) {
    const T* v = static_cast<const T*>(c.values) + row * values_cols(c.k);
    const uint8_t* mt = c.meta + row * meta_cols(c.k);
    uint32_t invalid = 0;
    int64_t m0 = 0;
    for (; m0 + 4 <= c.m; m0 += 4) invalid |= block<4>(c, dt, v, mt, m0, acc);
    switch (c.m - m0) {
      case 3: invalid |= block<3>(c, dt, v, mt, m0, acc); break;
      case 2: invalid |= block<2>(c, dt, v, mt, m0, acc); break;
      case 1: invalid |= block<1>(c, dt, v, mt, m0, acc); break;
      default: break;
    }
    // K tail that does not fill a 32-wide chunk.
    const int64_t g_done = c.k / kChunk * (kChunk / kGroup);
    const bool tail_ok = dot_rows_scalar<T>(c, dt, row, g_done, c.k / kGroup, 0, c.m, acc);
    return tail_ok && invalid == 0;
  }
};

void linear(const LinearParams& p) { linear_dispatch<Avx512Kernel>(p); }

}  // namespace
}  // namespace llmpack::sparse24::avx512

namespace llmpack::sparse24 {
extern const CpuKernels kCpuAvx512;
const CpuKernels kCpuAvx512 = {&avx512::compress, &avx512::decompress, &avx512::linear};
}  // namespace llmpack::sparse24
