// Small SIMD helpers shared by the per-ISA CPU units. `static`: each unit
// gets its own copy compiled with its own flags (an inline function with
// external linkage would let the linker hand the AVX-512 unit's encoding to
// the AVX2 unit).
#pragma once

#if defined(__AVX2__)
#include <immintrin.h>

namespace llmpack {

// Sum of the 8 lanes.
static inline float hsum256(__m256 a) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

}  // namespace llmpack
#endif
