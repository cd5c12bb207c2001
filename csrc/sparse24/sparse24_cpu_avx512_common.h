// AVX-512 helpers shared by the avx512, avx512_bf16 and amx units. Each unit
// defines LLMPACK_ISA_NS, includes sparse24_cpu_kernels.h, then this file, and
// compiles it with its own flags (anonymous namespace on purpose: no COMDAT
// sharing between ISA units).
#pragma once
#ifndef LLMPACK_ISA_NS
#error "include sparse24_cpu_kernels.h (with LLMPACK_ISA_NS) first"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace llmpack::sparse24::LLMPACK_ISA_NS {
namespace {

constexpr int kBlockRows = 4;  // weight rows per block of the gather kernels

// vpternlogd immediate for (A & B) | C: masks a 2-bit metadata field and ORs
// in its group base (whose two low bits are clear) in one op.
constexpr int kAndOr = 0xEA;

// Horizontal sums of four vectors at once: {sum(a), sum(b), sum(c), sum(d)}.
// ~13 ops for four rows instead of ~8 (half of them shuffles) per row.
inline __m128 reduce_add4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));  // a0+a2 b0+b2 a1+a3 b1+b3
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const __m512 s = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xEE));  // a b c d per lane
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// Epilogue of a block kernel: acc[(r0 + r) * m + m0 + i] += sum of the U
// partial accumulators a[r][i][*] of weight row r and x row i.
template <int R, int MB, int U>
inline void add_block_sums(__m512 (&a)[R][MB][U], float* acc, int r0, int64_t m, int64_t m0) {
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < MB; ++i)
      for (int u = 1; u < U; ++u) a[r][i][0] = _mm512_add_ps(a[r][i][0], a[r][i][u]);
  for (int i = 0; i < MB; ++i) {
    if constexpr (R == 4) {
      alignas(16) float s[4];
      _mm_store_ps(s, reduce_add4(a[0][i][0], a[1][i][0], a[2][i][0], a[3][i][0]));
      for (int r = 0; r < 4; ++r) acc[(r0 + r) * m + m0 + i] += s[r];
    } else {
      for (int r = 0; r < R; ++r) acc[(r0 + r) * m + m0 + i] += _mm512_reduce_add_ps(a[r][i][0]);
    }
  }
}

// Metadata validation: invalid_nibbles() (sparse24.h) on 16 words per vector.
// The block kernels validate a row's whole metadata in one pass of a few
// vector ops per 64 bytes instead of ~7 scalar ops per word in the inner loop.

// Bit 2 of every invalid nibble of the 16 words in v (0 = all valid).
inline __m512i invalid_nibbles_x16(__m512i v) {
  const __m512i i0 = _mm512_and_si512(v, _mm512_set1_epi32(0x33333333));
  const __m512i i1 = _mm512_and_si512(_mm512_srli_epi32(v, 2), _mm512_set1_epi32(0x33333333));
  const __m512i t = _mm512_sub_epi32(_mm512_sub_epi32(_mm512_or_si512(i1, _mm512_set1_epi32(0x44444444)), i0),
                                     _mm512_set1_epi32(0x11111111));
  return _mm512_andnot_si512(t, _mm512_set1_epi32(0x44444444));
}

// ORs into `bad` the invalid-nibble bits of the `words` 32-bit metadata
// words at m (one horizontal test per row block, not per row).
inline __m512i or_invalid_meta_words(__m512i bad, const uint8_t* m, int64_t words) {
  for (int64_t w0 = 0; w0 < words; w0 += 16) {
    const __mmask16 lanes = __mmask16((1u << std::min<int64_t>(16, words - w0)) - 1);
    // Lanes past the end read as 0 (an invalid word) and are masked out.
    bad = _mm512_mask_or_epi32(bad, lanes, bad, invalid_nibbles_x16(_mm512_maskz_loadu_epi32(lanes, m + 4 * w0)));
  }
  return bad;
}

// One block of up to kBlockRows weight rows for the gather kernels:
// validates the metadata of the full chunks (chunk_k K-positions each) in one
// vector pass, runs the SIMD blocks (run_blocks(rb)), then the scalar K tail
// (which validates its own groups and the padding nibble).
template <class T, class Block>
bool dot_block(const LinearCtx& c, DType dt, int64_t row0, int64_t nrows, float* acc, int chunk_k,
               Block&& run_blocks) {
  const RowBlock<T, kBlockRows> rb(c, row0, nrows);
  const int64_t words = c.k / chunk_k * (chunk_k / 32);
  __m512i bad = _mm512_setzero_si512();
  for (int r = 0; r < kBlockRows; ++r) bad = or_invalid_meta_words(bad, rb.m[r], words);
  run_blocks(rb);
  bool tail_ok = true;
  const int64_t g_done = c.k / chunk_k * (chunk_k / kGroup);
  if (g_done < c.k / kGroup)  // K % chunk_k != 0 (otherwise no tail and no padding nibble)
    for (int64_t r = 0; r < nrows; ++r)
      tail_ok &= dot_rows_scalar<T>(c, dt, row0 + r, g_done, c.k / kGroup, 0, c.m, acc + r * c.m);
  return tail_ok && _mm512_test_epi32_mask(bad, bad) == 0;
}

}  // namespace
}  // namespace llmpack::sparse24::LLMPACK_ISA_NS
