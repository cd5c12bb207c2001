// 2:4 CPU kernels, AVX-512 build (F/BW/VL/DQ; flags: cmake/LlmpackIsa.cmake).
//
// Linear inner loop, per chunk of 32 K-positions (8 groups, 16 kept values,
// 4 metadata bytes): the 16 values widen to one zmm of fp32; the 16 2-bit
// positions in the 32-bit metadata word become lane indices with one variable
// shift (value j's index sits at bits 2j..2j+1 by the nibble layout) and one
// vpternlogd that masks the field and ORs in the group base 4*(j/2);
// vpermt2ps then gathers the matching x entries out of the two zmm holding
// x[32c .. 32c+31]. Four vector-port ops per 16 MACs (shift, ternlog, permute,
// FMA), and only the packed bytes (values + meta) stream from memory: x rows
// stay in L1/L2. Blocks of 4 weight rows share each x load and one pass of
// metadata validation, and keep 8 FMA chains in flight at M = 1.
#include <immintrin.h>

#include <cstring>

#define LLMPACK_ISA_NS avx512
#include "sparse24/sparse24_cpu_kernels.h"
#include "sparse24/sparse24_cpu_avx512_common.h"

namespace llmpack::sparse24::avx512 {
namespace {

constexpr int kChunk = 32;  // K-positions per vector step
constexpr int kAheadChunks = 16;  // prefetch 1 KiB of values ahead per row (x4 rows); measured best of 8..64

// Lane indices of a chunk from its 4 metadata bytes, broadcast straight from
// memory (a load, not a shuffle-port op).
inline __m512i chunk_indices(const uint8_t* meta4) {
  const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
  int32_t w;  // metadata of odd-width rows sits at any byte offset: memcpy, not an int32_t load
  std::memcpy(&w, meta4, sizeof w);
  const __m512i word = _mm512_broadcastd_epi32(_mm_cvtsi32_si128(w));
  return _mm512_ternarylogic_epi32(_mm512_srlv_epi32(word, shifts), _mm512_set1_epi32(3), base, kAndOr);
}

template <class T, bool kBf16>
inline __m512 load16(const T* v) {
  if constexpr (sizeof(T) == 4) {
    return _mm512_loadu_ps(v);
  } else {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v));
    if constexpr (kBf16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
  }
}

template <class T>
struct Avx512Kernel {
  static constexpr int kRows = kBlockRows;

  // R weight rows (from rb, starting at r0) x MB rows of x: R*MB*U
  // accumulators, 2*MB x registers; U chains per pair hide FMA latency at
  // MB = 1. Everything the inner loop branches on is a template parameter.
  // noinline: GCC scalarises the accumulator array into registers only while
  // this is its own function; inlined into the driver it stays on the stack.
  template <int MB, int R, bool kPrefetch, bool kBf16>
  [[gnu::noinline]] static void block(const LinearCtx& c, const RowBlock<T, kBlockRows>& rb, int r0, int64_t m0,
                                      float* acc) {
    constexpr int U = MB == 1 ? 2 : 1;
    const int64_t chunks = c.k / kChunk;
    __m512 a[R][MB][U];
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < MB; ++i)
        for (int u = 0; u < U; ++u) a[r][i][u] = _mm512_setzero_ps();
    const float* x0 = c.x + m0 * c.k;
    const int64_t k = c.k;
    // Every accumulator index is a compile-time constant (unroll), so the
    // accumulators live in registers.
    auto step = [&](int64_t ch, auto u) {
      __m512 xl[MB], xh[MB];
      unroll<MB>([&](auto i) {
        xl[i] = _mm512_loadu_ps(x0 + i * k + kChunk * ch);
        xh[i] = _mm512_loadu_ps(x0 + i * k + kChunk * ch + 16);
      });
      unroll<R>([&](auto r) {
        const T* v = rb.v[r0 + r];
        // At MB = 1 the prefetch decision is compile-time. At MB >= 2 it stays
        // a run-time branch on purpose: GCC then keeps the x chunk in
        // registers for the whole step instead of re-loading it into every
        // row's permute (measured: ~20 % faster at M = 4..16).
        if constexpr (MB == 1) {
          if constexpr (kPrefetch) {
            _mm_prefetch(reinterpret_cast<const char*>(v + 16 * (ch + kAheadChunks)), _MM_HINT_T0);
            // The next block's row r and its metadata into L2 (see the bf16
            // block in sparse24_cpu_avx512_bf16.cpp: M = 1 bf16 cold 4096^2
            // ~35 -> ~42 GB/s on Zen 5). One line: 1 (fp32) or 2 chunks of
            // values, 16 chunks of metadata.
            if (sizeof(T) == 4 || ch % 2 == 0)
              _mm_prefetch(reinterpret_cast<const char*>(v + kBlockRows * values_cols(c.k) + 16 * ch), _MM_HINT_T1);
            if (ch % 16 == 0)
              _mm_prefetch(reinterpret_cast<const char*>(rb.m[r0 + r] + kBlockRows * meta_cols(c.k) + 4 * ch),
                           _MM_HINT_T1);
          }
        } else if (c.prefetch) {
          _mm_prefetch(reinterpret_cast<const char*>(v + 16 * (ch + kAheadChunks)), _MM_HINT_T0);
        }
        const __m512i idx = chunk_indices(rb.m[r0 + r] + 4 * ch);
        const __m512 w = load16<T, kBf16>(v + 16 * ch);
        unroll<MB>([&](auto i) {
          a[r][i][u] = _mm512_fmadd_ps(w, _mm512_permutex2var_ps(xl[i], idx, xh[i]), a[r][i][u]);
        });
      });
    };
    int64_t ch = 0;
    for (; ch + U <= chunks; ch += U) unroll<U>([&](auto u) { step(ch + u, u); });
    for (; ch < chunks; ++ch) step(ch, std::integral_constant<int, 0>{});
    add_block_sums(a, acc, r0, c.m, m0);
  }

  template <bool kPrefetch, bool kBf16>
  static void blocks(const LinearCtx& c, const RowBlock<T, kBlockRows>& rb, float* acc) {
    for_row_blocks(c.m, [&](auto mb, int64_t m0) {
      constexpr int MB = decltype(mb)::value;
      if constexpr (MB <= 2) {
        block<MB, 4, kPrefetch, kBf16>(c, rb, 0, m0, acc);
      } else {  // register budget: 2 weight rows at a time
        block<MB, 2, kPrefetch, kBf16>(c, rb, 0, m0, acc);
        block<MB, 2, kPrefetch, kBf16>(c, rb, 2, m0, acc);
      }
      return 0u;
    });
  }

  static bool dot(const LinearCtx& c, DType dt, int64_t row0, int64_t nrows, float* acc) {
    return dot_block<T>(c, dt, row0, nrows, acc, kChunk, [&](const RowBlock<T, kBlockRows>& rb) {
      constexpr bool kMaybeBf16 = sizeof(T) == 2;  // fp32 instantiates one flavour only
      if (c.prefetch)
        kMaybeBf16 && dt == DType::bf16 ? blocks<true, kMaybeBf16>(c, rb, acc) : blocks<true, false>(c, rb, acc);
      else
        kMaybeBf16 && dt == DType::bf16 ? blocks<false, kMaybeBf16>(c, rb, acc) : blocks<false, false>(c, rb, acc);
    });
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

}  // namespace
}  // namespace llmpack::sparse24::avx512

namespace llmpack::sparse24 {
extern const CpuKernels kCpuAvx512;
const CpuKernels kCpuAvx512 = {&avx512::compress, &avx512::decompress_expand, &avx512::linear};
}  // namespace llmpack::sparse24
