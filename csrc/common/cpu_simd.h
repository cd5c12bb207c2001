// Small SIMD helpers shared by the per-ISA CPU units. `static`: each unit
// gets its own copy compiled with its own flags (an inline function with
// external linkage would let the linker hand the AVX-512 unit's encoding to
// the AVX2 unit).
#pragma once

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

// n bf16 values as fp32.
static inline void widen_bf16(const uint16_t* h, int64_t n, float* out) {
  int64_t i = 0;
#if defined(__AVX2__)
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load_bf16x8(h + i));
#endif
  for (; i < n; ++i) out[i] = bf16_to_f32(h[i]);
}

// n fp16 values as fp32 (F16C where the unit has it).
static inline void widen_f16(const uint16_t* h, int64_t n, float* out) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
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
