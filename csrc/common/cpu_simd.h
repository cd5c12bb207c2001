// Small SIMD helpers shared by the per-ISA CPU units. `static`: each unit
// gets its own copy compiled with its own flags (an inline function with
// external linkage would let the linker hand the AVX-512 unit's encoding to
// the AVX2 unit).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/cpu_convert.h"

#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

namespace llmpack {

#if defined(__AVX2__)
// Sum of the 8 lanes.
static inline float hsum256(__m256 a) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}
#endif

#if defined(__AVX2__)
// 8 bf16 values as fp32: a 16-bit shift into the high half.
static inline __m256 load_bf16x8(const uint16_t* h) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
#endif

#if defined(__AVX2__) && defined(__FMA__)
// e^x in the 8 lanes, to ~2 ulp: x = n ln2 + r with |r| <= ln2 / 2 (ln2 in
// two parts, so r is exact), e^r by its degree-6 Taylor-like polynomial
// (minimax coefficients of the classic single-precision expf), times 2^n
// built in the exponent field. Below -87.3 (2^n would leave the normal
// range) the result is 0, above 88.37 +Inf (a little early: e^x reaches
// FLT_MAX at 88.72; callers here pass x <= 0); NaN stays NaN.
static inline __m256 exp256(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.37f), lo = _mm256_set1_ps(-87.3f);
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ), over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);  // NaN: max/min return the 2nd operand...
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 poly = _mm256_set1_ps(1.9875691500e-4f);
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.3981999507e-3f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(8.3334519073e-3f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(4.1665795894e-2f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.6666665459e-1f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(5.0000001201e-1f));
  poly = _mm256_fmadd_ps(poly, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 y = _mm256_mul_ps(poly, _mm256_castsi256_ps(e));
  y = _mm256_andnot_ps(under, y);
  y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), over);
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));  // ...so NaN is put back here
}
#endif

// n bf16 values as fp32.
static inline void widen_bf16(const uint16_t* h, int64_t n, float* out) {
  int64_t i = 0;
#if defined(__AVX2__)
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load_bf16x8(h + i));
#endif
  for (; i < n; ++i) out[i] = bf16_to_f32(h[i]);
}

#if defined(__F16C__)
// 8 fp16 values as fp32.
static inline __m256 load_f16x8(const uint16_t* h) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
}
#endif

// n fp16 values as fp32 (F16C where the unit has it).
static inline void widen_f16(const uint16_t* h, int64_t n, float* out) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load_f16x8(h + i));
#endif
  for (; i < n; ++i) out[i] = f16_to_f32(h[i]);
}

// Float sums are not reassociated by the compiler, so the dot product is
// written with independent vector accumulators.
static inline float dot_f32(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float s = 0.f;
#if defined(__AVX512F__)
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  for (; i + 32 <= n; i += 32) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), a1);
  }
  for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), a0);
  const __m512 t = _mm512_add_ps(a0, a1);  // (not _mm512_reduce_add_ps: GCC 12 warns on its undefined lanes)
  s = hsum256(_mm256_add_ps(_mm512_castps512_ps256(t), _mm512_extractf32x8_ps(t, 1)));
#elif defined(__AVX2__)
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), a1);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
  s = hsum256(_mm256_add_ps(a0, a1));
#else
  float p[4] = {0.f, 0.f, 0.f, 0.f};
  for (; i + 4 <= n; i += 4)
    for (int j = 0; j < 4; ++j) p[j] += a[i + j] * b[i + j];
  s = (p[0] + p[1]) + (p[2] + p[3]);
#endif
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace llmpack
