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
    constexpr int U = MB == 1 ? 4 : 2;  // >= 4 independent FMA/dot chains in flight
    const int64_t chunks = c.k / kChunk;
    __m512 a[MB][U];
    for (int i = 0; i < MB; ++i)
      for (int u = 0; u < U; ++u) a[i][u] = _mm512_setzero_ps();
    const float* x0 = c.x + m0 * c.k;
    uint32_t invalid = 0;
    auto step = [&](int64_t ch, int u) {
      _mm_prefetch(reinterpret_cast<const char*>(v + 16 * (ch + 32)), _MM_HINT_T0);  // ~1 KiB ahead
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
    const uint32_t invalid = for_row_blocks(
        c.m, [&](auto mb, int64_t m0) { return block<decltype(mb)::value>(c, dt, v, mt, m0, acc); });
    // K tail that does not fill a 32-wide chunk.
    const int64_t g_done = c.k / kChunk * (kChunk / kGroup);
    const bool tail_ok = dot_rows_scalar<T>(c, dt, row, g_done, c.k / kGroup, 0, c.m, acc);
    return tail_ok && invalid == 0;
  }
};

void linear(const LinearParams& p) { linear_dispatch<Avx512Kernel>(p); }

// fp32 unpack with two vexpandps per 32 K-positions (16 kept values): the
// large-M path (unpack W tiles + GEMM) is bound by the unpack. 16-bit types
// (vpexpandw needs VBMI2: the amx unit has it) and K % 32 != 0 use the
// shared template.
void decompress_expand(const DecompressParams& p) {
  if (p.elem_bytes != 4 || p.cols % kChunk != 0) {
    decompress(p);
    return;
  }
  expand_rows<float>(p, [](const float* v, uint32_t keep, float* w) {
    const __m512 vals = _mm512_loadu_ps(v);
    _mm512_storeu_ps(w, _mm512_maskz_expand_ps(__mmask16(keep), vals));
    // The high 16 positions take the 8 values the low half did not use.
    const __m512 rest = _mm512_castps256_ps512(_mm512_extractf32x8_ps(vals, 1));
    _mm512_storeu_ps(w + 16, _mm512_maskz_expand_ps(__mmask16(keep >> 16), rest));
  });
}

// ---------------------------------------------------------------------------
// avx512_bf16 level: bf16 weights and activations multiply in bf16 pairs.
//
// Per chunk of 64 K-positions (16 groups, 32 kept values = one zmm of bf16,
// 8 metadata bytes): value j pairs with x[4*(j/2) + i_j], an index in 0..63,
// so one vpermt2w gathers all 32 partners out of the two zmm holding
// x[64c .. 64c+63] (bf16), and one vdpbf16ps does 32 MACs (each fp32 lane
// accumulates its group's two products; bf16*bf16 products are exact in fp32).
// Twice the MACs per permute of the fp32 path, which is what bounds it.
// ---------------------------------------------------------------------------
#define LLMPACK_BF16 __attribute__((target("avx512bf16")))

constexpr int kChunk64 = 64;
constexpr int kPrefetchChunks = 16;  // 1 KiB of values ahead

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
LLMPACK_BF16 inline __m512i chunk64_indices(uint64_t meta64) {
  const __m512i qshift = _mm512_setr_epi64(0, 8, 16, 24, 32, 40, 48, 56);
  __m512i t = _mm512_srlv_epi64(_mm512_set1_epi64(int64_t(meta64)), qshift);
  t = _mm512_shuffle_epi8(t, _mm512_load_si512(kSpreadByte));
  t = _mm512_srlv_epi16(t, _mm512_load_si512(kWordShift));
  t = _mm512_and_si512(t, _mm512_set1_epi16(3));
  return _mm512_add_epi16(t, _mm512_load_si512(kWordBase));
}

template <int MB>
LLMPACK_BF16 uint32_t block_bf16(const LinearCtx& c, const uint16_t* v, const uint8_t* mt, int64_t m0,
                                 float* acc) {
  constexpr int U = MB == 1 ? 4 : 2;  // >= 4 independent FMA/dot chains in flight
  const int64_t chunks = c.k / kChunk64;
  __m512 a[MB][U];
  for (int i = 0; i < MB; ++i)
    for (int u = 0; u < U; ++u) a[i][u] = _mm512_setzero_ps();
  const uint16_t* x0 = static_cast<const uint16_t*>(c.x_raw) + m0 * c.k;
  uint32_t invalid = 0;
  auto step = [&](int64_t ch, int u) LLMPACK_BF16 {
    // Ahead of the hardware streamer: a single core otherwise leaves L3/DRAM
    // bandwidth unused at decode shapes (few misses in flight).
    _mm_prefetch(reinterpret_cast<const char*>(v + 32 * (ch + kPrefetchChunks)), _MM_HINT_T0);
    uint64_t word;
    std::memcpy(&word, mt + 8 * ch, 8);
    invalid |= invalid_nibbles(uint32_t(word)) | invalid_nibbles(uint32_t(word >> 32));
    const __m512i idx = chunk64_indices(word);
    const __m512i w = _mm512_loadu_si512(v + 32 * ch);
    for (int i = 0; i < MB; ++i) {
      const uint16_t* xr = x0 + i * c.k + kChunk64 * ch;
      const __m512i g = _mm512_permutex2var_epi16(_mm512_loadu_si512(xr), idx, _mm512_loadu_si512(xr + 32));
      a[i][u] = _mm512_dpbf16_ps(a[i][u], (__m512bh)w, (__m512bh)g);
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

LLMPACK_BF16 bool dot_bf16(const LinearCtx& c, int64_t row, float* acc) {
  const uint16_t* v = static_cast<const uint16_t*>(c.values) + row * values_cols(c.k);
  const uint8_t* mt = c.meta + row * meta_cols(c.k);
  const uint32_t invalid = for_row_blocks(
      c.m, [&](auto mb, int64_t m0) LLMPACK_BF16 { return block_bf16<decltype(mb)::value>(c, v, mt, m0, acc); });
  const int64_t g_done = c.k / kChunk64 * (kChunk64 / kGroup);
  const bool tail_ok = dot_rows_scalar<uint16_t>(c, DType::bf16, row, g_done, c.k / kGroup, 0, c.m, acc);
  return tail_ok && invalid == 0;
}

// bf16 takes the dot-product path; fp32 and fp16 (whose values bf16 cannot
// hold exactly) keep the fp32 path.
void linear_bf16(const LinearParams& p) {
  if (p.dtype == DType::bf16)
    linear_driver<uint16_t>(
        p, [](const LinearCtx& c, int64_t row, float* acc) { return dot_bf16(c, row, acc); },
        /*needs_f32_x=*/p.k % kChunk64 != 0);  // only the scalar K tail reads fp32 x
  else
    linear_dispatch<Avx512Kernel>(p);
}

}  // namespace
}  // namespace llmpack::sparse24::avx512

namespace llmpack::sparse24 {
extern const CpuKernels kCpuAvx512, kCpuAvx512Bf16;
const CpuKernels kCpuAvx512 = {&avx512::compress, &avx512::decompress_expand, &avx512::linear};
const CpuKernels kCpuAvx512Bf16 = {&avx512::compress, &avx512::decompress_expand, &avx512::linear_bf16};
}  // namespace llmpack::sparse24
