// __half / __nv_bfloat16 for the SIMT emulator (host C++): the subset of
// cuda_fp16.h / cuda_bf16.h that our kernels use, with the same names and
// the same numerics as the hardware conversion instructions:
//   * float -> half / bf16 round to nearest even by default (cvt.rn), with
//     _rz / _rd / _ru variants; overflow follows the rounding mode (RN -> Inf,
//     RZ -> max finite, ...); subnormals are kept, not flushed.
//   * a NaN converts to the canonical NaN 0x7FFF, as cvt.rn.f16.f32 and
//     cvt.rn.bf16.f32 produce (the bits of the payload are not kept).
//   * half / bf16 arithmetic (+ - * /, fma) is computed exactly or in a wider
//     format and rounded once (float has >= 2p+2 bits for both formats, so
//     the double rounding through float is exact), which is what the
//     correctly rounded hardware instructions return.
// Storage is 16 bits; both types are trivially copyable and trivially default
// constructible, so they can live in static __shared__ arrays and unions.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace llmpack::simt::fp {

enum class Round { nearest, zero, down, up };

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Rounds the magnitude q + frac (frac given as remainder `rem` of `den`,
// den a power of two) to an integer per `mode` for a value of sign `neg`.
inline uint64_t round_magnitude(uint64_t q, uint64_t rem, uint64_t den, bool neg, Round mode) {
  if (rem == 0) return q;
  switch (mode) {
    case Round::nearest: {
      const uint64_t half = den >> 1;
      if (rem > half || (rem == half && (q & 1))) ++q;
      return q;
    }
    case Round::zero: return q;
    case Round::down: return neg ? q + 1 : q;
    case Round::up: return neg ? q : q + 1;
  }
  return q;
}

// float -> IEEE binary16 bits.
inline uint16_t f32_to_f16_bits(float f, Round mode = Round::nearest) {
  const uint32_t x = f32_bits(f);
  const bool neg = x >> 31;
  const uint16_t sign = neg ? 0x8000 : 0;
  const uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return 0x7FFF;                 // NaN -> canonical NaN
  if (ax == 0x7F800000u) return sign | 0x7C00;         // Inf
  if (ax == 0) return sign;
  // |f| = m * 2^E exactly.
  int e = static_cast<int>(ax >> 23);
  uint64_t m = ax & 0x7FFFFF;
  if (e == 0) {
    e = 1;  // float subnormal
  } else {
    m |= 0x800000;
  }
  const int E = e - 150;
  // Exponent of the leading bit.
  int lead = 63 - __builtin_clzll(m) + E;
  // Half: normal if lead >= -14 (unit 2^(lead-10)), else subnormal (unit 2^-24).
  const int unit = lead >= -14 ? lead - 10 : -24;
  const int shift = unit - E;  // bits of m below the unit (> 0 here)
  uint64_t q, rem, den;
  if (shift >= 62) {
    q = 0;
    rem = 1;  // nonzero, below half a unit
    den = uint64_t(1) << 62;
  } else if (shift > 0) {
    den = uint64_t(1) << shift;
    q = m >> shift;
    rem = m & (den - 1);
  } else {
    q = m << -shift;
    rem = 0;
    den = 1;
  }
  q = round_magnitude(q, rem, den, neg, mode);
  // Compose: normals are ((lead + 15) << 10) + (q - 1024), which carries into
  // the exponent when rounding overflows the significand.
  uint64_t bits = lead >= -14 ? (uint64_t(lead + 15) << 10) + q - 1024 : q;
  if (bits >= 0x7C00) {
    const bool to_inf = mode == Round::nearest || (mode == Round::up && !neg) || (mode == Round::down && neg);
    bits = to_inf ? 0x7C00 : 0x7BFF;
  }
  return static_cast<uint16_t>(sign | bits);
}

inline float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  if (exp == 0x1F) return bits_f32(sign | 0x7F800000u | (mant << 13));
  if (exp == 0) {
    const float v = std::ldexp(static_cast<float>(mant), -24);  // exact
    return sign ? -v : v;
  }
  return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

// float -> bfloat16 bits.
inline uint16_t f32_to_bf16_bits(float f, Round mode = Round::nearest) {
  const uint32_t x = f32_bits(f);
  const bool neg = x >> 31;
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;  // NaN -> canonical NaN
  if ((x & 0x7FFFFFFFu) == 0x7F800000u) return static_cast<uint16_t>(x >> 16);
  uint32_t q = x >> 16;  // sign | exponent | 7 mantissa bits: rounding the magnitude
  const uint32_t rem = x & 0xFFFF;
  const uint32_t mag = round_magnitude(q & 0x7FFF, rem, 0x10000, neg, mode);
  uint32_t bits = mag;
  if (bits >= 0x7F80) {
    const bool to_inf = mode == Round::nearest || (mode == Round::up && !neg) || (mode == Round::down && neg);
    bits = to_inf ? 0x7F80 : 0x7F7F;
  }
  return static_cast<uint16_t>((neg ? 0x8000 : 0) | bits);
}

inline float bf16_bits_to_f32(uint16_t b) { return bits_f32(uint32_t(b) << 16); }

}  // namespace llmpack::simt::fp

struct __half_raw {
  unsigned short x;
};
struct __nv_bfloat16_raw {
  unsigned short x;
};

// The two 16-bit float types share one implementation; Tag picks the format.
namespace llmpack::simt::fp {
struct HalfTag {
  static uint16_t from(float f, Round r) { return f32_to_f16_bits(f, r); }
  static float to(uint16_t b) { return f16_bits_to_f32(b); }
};
struct Bf16Tag {
  static uint16_t from(float f, Round r) { return f32_to_bf16_bits(f, r); }
  static float to(uint16_t b) { return bf16_bits_to_f32(b); }
};
}  // namespace llmpack::simt::fp

struct __half {
  unsigned short __x;
  __half() = default;
  __half(const __half_raw& r) : __x(r.x) {}
  __half(float f) : __x(llmpack::simt::fp::f32_to_f16_bits(f)) {}
  __half(double d) : __half(static_cast<float>(d)) {}  // via float, as cuda_fp16 does
  __half(int i) : __half(static_cast<float>(i)) {}
  __half(unsigned i) : __half(static_cast<float>(i)) {}
  __half(short i) : __half(static_cast<float>(i)) {}
  __half(unsigned short i) : __half(static_cast<float>(i)) {}
  __half(long long i) : __half(static_cast<float>(i)) {}
  __half(unsigned long long i) : __half(static_cast<float>(i)) {}
  operator float() const { return llmpack::simt::fp::f16_bits_to_f32(__x); }
  operator __half_raw() const { return {__x}; }
  __half& operator=(const __half_raw& r) {
    __x = r.x;
    return *this;
  }
};

struct __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  __nv_bfloat16(const __nv_bfloat16_raw& r) : __x(r.x) {}
  __nv_bfloat16(float f) : __x(llmpack::simt::fp::f32_to_bf16_bits(f)) {}
  __nv_bfloat16(double d) : __nv_bfloat16(static_cast<float>(d)) {}
  __nv_bfloat16(int i) : __nv_bfloat16(static_cast<float>(i)) {}
  __nv_bfloat16(unsigned i) : __nv_bfloat16(static_cast<float>(i)) {}
  __nv_bfloat16(short i) : __nv_bfloat16(static_cast<float>(i)) {}
  __nv_bfloat16(unsigned short i) : __nv_bfloat16(static_cast<float>(i)) {}
  __nv_bfloat16(long long i) : __nv_bfloat16(static_cast<float>(i)) {}
  __nv_bfloat16(unsigned long long i) : __nv_bfloat16(static_cast<float>(i)) {}
  operator float() const { return llmpack::simt::fp::bf16_bits_to_f32(__x); }
  operator __nv_bfloat16_raw() const { return {__x}; }
  __nv_bfloat16& operator=(const __nv_bfloat16_raw& r) {
    __x = r.x;
    return *this;
  }
};

struct alignas(4) __half2 {
  __half x, y;
  __half2() = default;
  __half2(__half a, __half b) : x(a), y(b) {}
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
  __nv_bfloat162() = default;
  __nv_bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) : x(a), y(b) {}
};

typedef __half half;
typedef __half2 half2;
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;

static_assert(sizeof(__half) == 2 && sizeof(__nv_bfloat16) == 2 && sizeof(__half2) == 4 &&
              sizeof(__nv_bfloat162) == 4);

// ---- conversions -----------------------------------------------------------
namespace llmpack::simt::fp {
inline __half mk_half(uint16_t b) {
  __half h;
  h.__x = b;
  return h;
}
inline __nv_bfloat16 mk_bf16(uint16_t b) {
  __nv_bfloat16 h;
  h.__x = b;
  return h;
}
}  // namespace llmpack::simt::fp


inline __half __float2half(float f) { return llmpack::simt::fp::mk_half(llmpack::simt::fp::f32_to_f16_bits(f)); }
inline __half __float2half_rn(float f) { return __float2half(f); }
inline __half __float2half_rz(float f) { return llmpack::simt::fp::mk_half(llmpack::simt::fp::f32_to_f16_bits(f, llmpack::simt::fp::Round::zero)); }
inline __half __float2half_rd(float f) { return llmpack::simt::fp::mk_half(llmpack::simt::fp::f32_to_f16_bits(f, llmpack::simt::fp::Round::down)); }
inline __half __float2half_ru(float f) { return llmpack::simt::fp::mk_half(llmpack::simt::fp::f32_to_f16_bits(f, llmpack::simt::fp::Round::up)); }
inline __half __double2half(double d) { return __float2half(static_cast<float>(d)); }
inline float __half2float(__half h) { return llmpack::simt::fp::f16_bits_to_f32(h.__x); }
inline __half __int2half_rn(int i) { return __float2half(static_cast<float>(i)); }
inline __half __uint2half_rn(unsigned i) { return __float2half(static_cast<float>(i)); }
inline int __half2int_rz(__half h) { return static_cast<int>(std::trunc(__half2float(h))); }
inline int __half2int_rn(__half h) { return static_cast<int>(std::nearbyint(__half2float(h))); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline short __half_as_short(__half h) { return static_cast<short>(h.__x); }
inline __half __ushort_as_half(unsigned short u) { return llmpack::simt::fp::mk_half(u); }
inline __half __short_as_half(short s) { return llmpack::simt::fp::mk_half(static_cast<uint16_t>(s)); }

inline __nv_bfloat16 __float2bfloat16(float f) { return llmpack::simt::fp::mk_bf16(llmpack::simt::fp::f32_to_bf16_bits(f)); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rz(float f) { return llmpack::simt::fp::mk_bf16(llmpack::simt::fp::f32_to_bf16_bits(f, llmpack::simt::fp::Round::zero)); }
inline __nv_bfloat16 __float2bfloat16_rd(float f) { return llmpack::simt::fp::mk_bf16(llmpack::simt::fp::f32_to_bf16_bits(f, llmpack::simt::fp::Round::down)); }
inline __nv_bfloat16 __float2bfloat16_ru(float f) { return llmpack::simt::fp::mk_bf16(llmpack::simt::fp::f32_to_bf16_bits(f, llmpack::simt::fp::Round::up)); }
inline __nv_bfloat16 __double2bfloat16(double d) { return __float2bfloat16(static_cast<float>(d)); }
inline float __bfloat162float(__nv_bfloat16 b) { return llmpack::simt::fp::bf16_bits_to_f32(b.__x); }
inline __nv_bfloat16 __int2bfloat16_rn(int i) { return __float2bfloat16(static_cast<float>(i)); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
inline short __bfloat16_as_short(__nv_bfloat16 b) { return static_cast<short>(b.__x); }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return llmpack::simt::fp::mk_bf16(u); }
inline __nv_bfloat16 __short_as_bfloat16(short s) { return llmpack::simt::fp::mk_bf16(static_cast<uint16_t>(s)); }

// half2 / bfloat162 packing: .x is the low 16 bits, as in a .f16x2 register.
inline __half2 __halves2half2(__half lo, __half hi) { return __half2(lo, hi); }
inline __half2 make_half2(__half x, __half y) { return __half2(x, y); }
inline __half2 __half2half2(__half h) { return __half2(h, h); }
inline __half2 __float2half2_rn(float f) { return __half2(__float2half(f), __float2half(f)); }
inline __half2 __floats2half2_rn(float lo, float hi) { return __half2(__float2half(lo), __float2half(hi)); }
inline __half __low2half(__half2 h) { return h.x; }
inline __half __high2half(__half2 h) { return h.y; }
inline float __low2float(__half2 h) { return __half2float(h.x); }
inline float __high2float(__half2 h) { return __half2float(h.y); }
inline __half2 __lows2half2(__half2 a, __half2 b) { return __half2(a.x, b.x); }
inline __half2 __highs2half2(__half2 a, __half2 b) { return __half2(a.y, b.y); }

inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 lo, __nv_bfloat16 hi) { return __nv_bfloat162(lo, hi); }
inline __nv_bfloat162 make_bfloat162(__nv_bfloat16 x, __nv_bfloat16 y) { return __nv_bfloat162(x, y); }
inline __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 h) { return __nv_bfloat162(h, h); }
inline __nv_bfloat162 __float2bfloat162_rn(float f) { return __nv_bfloat162(__float2bfloat16(f), __float2bfloat16(f)); }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
  return __nv_bfloat162(__float2bfloat16(lo), __float2bfloat16(hi));
}
inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 h) { return h.x; }
inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 h) { return h.y; }
inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }

// float2 conversions need float2 (types.h); declared there.

// ---- arithmetic --------------------------------------------------------------
// One template per operation for both formats; each result is the exact
// result rounded once to the 16-bit format.
namespace llmpack::simt::fp {
template <class T>
struct Traits;
template <>
struct Traits<__half> {
  static float to(__half h) { return f16_bits_to_f32(h.__x); }
  static __half from(float f) { return llmpack::simt::fp::mk_half(f32_to_f16_bits(f)); }
  static __half from_d(double d) {
    // double -> half in one rounding: go through float only when exact.
    const float f = static_cast<float>(d);
    if (static_cast<double>(f) == d) return from(f);
    // Not exact in float: nudge toward d so that a tie in half cannot be
    // created by the float rounding (round-to-odd on the float step).
    uint32_t u = f32_bits(f);
    const bool below = std::fabs(static_cast<double>(f)) < std::fabs(d);
    if (!(u & 1)) u = below ? u + 1 : u - 1;
    return from(bits_f32(u));
  }
};
template <>
struct Traits<__nv_bfloat16> {
  static float to(__nv_bfloat16 h) { return bf16_bits_to_f32(h.__x); }
  static __nv_bfloat16 from(float f) { return llmpack::simt::fp::mk_bf16(f32_to_bf16_bits(f)); }
  static __nv_bfloat16 from_d(double d) {
    const float f = static_cast<float>(d);
    if (static_cast<double>(f) == d) return from(f);
    uint32_t u = f32_bits(f);
    const bool below = std::fabs(static_cast<double>(f)) < std::fabs(d);
    if (!(u & 1)) u = below ? u + 1 : u - 1;
    return from(bits_f32(u));
  }
};
template <class T>
T add(T a, T b) { return Traits<T>::from(Traits<T>::to(a) + Traits<T>::to(b)); }
template <class T>
T sub(T a, T b) { return Traits<T>::from(Traits<T>::to(a) - Traits<T>::to(b)); }
template <class T>
T mul(T a, T b) { return Traits<T>::from(Traits<T>::to(a) * Traits<T>::to(b)); }
template <class T>
T div(T a, T b) { return Traits<T>::from(Traits<T>::to(a) / Traits<T>::to(b)); }
template <class T>
T fma(T a, T b, T c) {
  // a*b is exact in double; the sum is rounded to double then (round-to-odd
  // guarded) to the 16-bit format.
  const double p = static_cast<double>(Traits<T>::to(a)) * static_cast<double>(Traits<T>::to(b));
  return Traits<T>::from_d(p + static_cast<double>(Traits<T>::to(c)));
}
}  // namespace llmpack::simt::fp

#define LLMPACK_SIMT_HALF_OPS(T, T2)                                                                \
  inline T __hadd(T a, T b) { return llmpack::simt::fp::add(a, b); }                                \
  inline T __hsub(T a, T b) { return llmpack::simt::fp::sub(a, b); }                                \
  inline T __hmul(T a, T b) { return llmpack::simt::fp::mul(a, b); }                                \
  inline T __hdiv(T a, T b) { return llmpack::simt::fp::div(a, b); }                                \
  inline T __hfma(T a, T b, T c) { return llmpack::simt::fp::fma(a, b, c); }                        \
  inline T __hneg(T a) {                                                                            \
    T r = a;                                                                                        \
    r.__x ^= 0x8000;                                                                                \
    return r;                                                                                       \
  }                                                                                                 \
  inline T __habs(T a) {                                                                            \
    T r = a;                                                                                        \
    r.__x &= 0x7FFF;                                                                                \
    return r;                                                                                       \
  }                                                                                                 \
  inline bool __hisnan(T a) { return std::isnan(static_cast<float>(a)); }                           \
  inline bool __hisinf(T a) { return std::isinf(static_cast<float>(a)); }                           \
  inline bool __heq(T a, T b) { return static_cast<float>(a) == static_cast<float>(b); }            \
  inline bool __hne(T a, T b) { return !std::isnan(float(a)) && !std::isnan(float(b)) && float(a) != float(b); } \
  inline bool __hlt(T a, T b) { return static_cast<float>(a) < static_cast<float>(b); }             \
  inline bool __hle(T a, T b) { return static_cast<float>(a) <= static_cast<float>(b); }            \
  inline bool __hgt(T a, T b) { return static_cast<float>(a) > static_cast<float>(b); }             \
  inline bool __hge(T a, T b) { return static_cast<float>(a) >= static_cast<float>(b); }            \
  inline T __hmax(T a, T b) {                                                                       \
    if (__hisnan(a)) return b;                                                                      \
    if (__hisnan(b)) return a;                                                                      \
    return float(a) > float(b) ? a : b;                                                             \
  }                                                                                                 \
  inline T __hmin(T a, T b) {                                                                       \
    if (__hisnan(a)) return b;                                                                      \
    if (__hisnan(b)) return a;                                                                      \
    return float(a) < float(b) ? a : b;                                                             \
  }                                                                                                 \
  inline T operator+(const T& a, const T& b) { return __hadd(a, b); }                               \
  inline T operator-(const T& a, const T& b) { return __hsub(a, b); }                               \
  inline T operator*(const T& a, const T& b) { return __hmul(a, b); }                               \
  inline T operator/(const T& a, const T& b) { return __hdiv(a, b); }                               \
  inline T operator-(const T& a) { return __hneg(a); }                                              \
  inline T operator+(const T& a) { return a; }                                                      \
  inline T& operator+=(T& a, const T& b) { return a = __hadd(a, b); }                               \
  inline T& operator-=(T& a, const T& b) { return a = __hsub(a, b); }                               \
  inline T& operator*=(T& a, const T& b) { return a = __hmul(a, b); }                               \
  inline T& operator/=(T& a, const T& b) { return a = __hdiv(a, b); }                               \
  inline bool operator==(const T& a, const T& b) { return __heq(a, b); }                            \
  inline bool __hneu(T a, T b) { return !(float(a) == float(b)); }                                \
  inline bool operator!=(const T& a, const T& b) { return __hneu(a, b); }                           \
  inline bool operator<(const T& a, const T& b) { return __hlt(a, b); }                             \
  inline bool operator<=(const T& a, const T& b) { return __hle(a, b); }                            \
  inline bool operator>(const T& a, const T& b) { return __hgt(a, b); }                             \
  inline bool operator>=(const T& a, const T& b) { return __hge(a, b); }                            \
  inline T2 __hadd2(T2 a, T2 b) { return T2(__hadd(a.x, b.x), __hadd(a.y, b.y)); }                  \
  inline T2 __hsub2(T2 a, T2 b) { return T2(__hsub(a.x, b.x), __hsub(a.y, b.y)); }                  \
  inline T2 __hmul2(T2 a, T2 b) { return T2(__hmul(a.x, b.x), __hmul(a.y, b.y)); }                  \
  inline T2 __h2div(T2 a, T2 b) { return T2(__hdiv(a.x, b.x), __hdiv(a.y, b.y)); }                  \
  inline T2 __hfma2(T2 a, T2 b, T2 c) { return T2(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)); }  \
  inline T2 __hneg2(T2 a) { return T2(__hneg(a.x), __hneg(a.y)); }                                  \
  inline T2 __habs2(T2 a) { return T2(__habs(a.x), __habs(a.y)); }                                  \
  inline T2 __hmax2(T2 a, T2 b) { return T2(__hmax(a.x, b.x), __hmax(a.y, b.y)); }                  \
  inline T2 __hmin2(T2 a, T2 b) { return T2(__hmin(a.x, b.x), __hmin(a.y, b.y)); }                  \
  inline T2 operator+(const T2& a, const T2& b) { return __hadd2(a, b); }                           \
  inline T2 operator-(const T2& a, const T2& b) { return __hsub2(a, b); }                           \
  inline T2 operator*(const T2& a, const T2& b) { return __hmul2(a, b); }                           \
  inline T2& operator+=(T2& a, const T2& b) { return a = __hadd2(a, b); }                           \
  inline T2& operator*=(T2& a, const T2& b) { return a = __hmul2(a, b); }

LLMPACK_SIMT_HALF_OPS(__half, __half2)
LLMPACK_SIMT_HALF_OPS(__nv_bfloat16, __nv_bfloat162)
#undef LLMPACK_SIMT_HALF_OPS
