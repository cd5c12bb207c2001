// Scalar fp16 / bf16 <-> fp32 conversions for CPU kernels, exact and
// round-to-nearest-even like torch's. Portable C++: the generic unit can't
// assume F16C, and the SIMD units use these only for tails.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace llmpack {

static inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
static inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

static inline float bf16_to_f32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

static inline uint16_t f32_to_bf16(float f) {
  uint32_t x = f32_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((x >> 16) | 0x40);  // quiet NaN
  x += 0x7FFFu + ((x >> 16) & 1u);
  return uint16_t(x >> 16);
}

static inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  if (exp == 0) {  // zero / subnormal: exact in fp32
    float v = std::ldexp(float(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_f32(sign | 0x7F800000u | (mant << 13));
  return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

static inline uint16_t f32_to_f16(float f) {
  uint32_t x = f32_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  x &= 0x7FFFFFFFu;
  if (x > 0x7F800000u) return sign | 0x7E00u;            // NaN
  if (x >= 0x477FF000u) return sign | 0x7C00u;           // rounds to Inf
  if (x < 0x38800000u) {                                 // fp16 subnormal range
    // value / 2^-24, rounded to nearest even integer (default FP rounding).
    return sign | uint16_t(std::nearbyint(bits_f32(x) * 16777216.0f));
  }
  x += 0xC8000FFFu + ((x >> 13) & 1u);                   // rebias 127->15, round
  return sign | uint16_t(x >> 13);
}

}  // namespace llmpack
