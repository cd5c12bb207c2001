// The BTC activation quantizer (the rule is in btc.h), compiled once: it
// reads each activation once and is a small share of a linear layer's time,
// so one portable copy serves every ISA level, written with SSE2 (the x86-64
// baseline) where the compiler has it: the plain loops called fminf / fmaxf /
// nearbyintf per element (library calls on the baseline ISA), ~10 % of a W4A8
// layer at M = 16, and the compiler does not vectorize those reductions.
#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "btc/btc.h"
#include "common/parallel.h"

namespace llmpack::btc {

namespace {

// nearbyint(v) under the default rounding mode, for the values the clamp to
// [0, top] can tell apart: below 2^22 in magnitude, adding and taking away
// 1.5 * 2^23 rounds to an integer, ties to even, exactly as nearbyint does;
// larger values are left as they are and clamp to 0 or top either way.
constexpr float kRoundMagic = 0x1.8p23f, kRoundLimit = 0x1p22f;

inline float round_for_clamp(float v) {
  return std::fabs(v) < kRoundLimit ? (v + kRoundMagic) - kRoundMagic : v;
}

inline uint8_t code_of(float x, float scale, float zero, float top) {
  float v = round_for_clamp(x / scale) + zero;
  v = v < 0.f ? 0.f : v;
  return uint8_t(v > top ? top : v);
}

struct Range {
  float lo, hi;
  bool nan;
};

// Plain compares (min/max keep the running value against a NaN, counted
// apart) and see an Inf, so for a finite row lo / hi equal the rule's
// fmin / fmax.
Range row_range(const float* x, int64_t k) {
  Range r{x[0], x[0], false};
  int64_t i = 0;
#if defined(__SSE2__)
  __m128 lo = _mm_set1_ps(x[0]), hi = lo, nan = _mm_setzero_ps();
  for (; i + 4 <= k; i += 4) {
    const __m128 v = _mm_loadu_ps(x + i);
    nan = _mm_or_ps(nan, _mm_cmpunord_ps(v, v));
    lo = _mm_min_ps(v, lo);  // NaN in v: lo is kept
    hi = _mm_max_ps(v, hi);
  }
  alignas(16) float l[4], h[4];
  _mm_store_ps(l, lo);
  _mm_store_ps(h, hi);
  for (int j = 0; j < 4; ++j) {
    r.lo = l[j] < r.lo ? l[j] : r.lo;
    r.hi = h[j] > r.hi ? h[j] : r.hi;
  }
  r.nan = _mm_movemask_ps(nan) != 0;
#endif
  for (; i < k; ++i) {
    r.nan |= x[i] != x[i];
    r.lo = x[i] < r.lo ? x[i] : r.lo;
    r.hi = x[i] > r.hi ? x[i] : r.hi;
  }
  return r;
}

// The codes of one full chunk (kWordBits elements) into q; returns their sum.
int32_t quantize_chunk(const float* x, float scale, float zero, float top, uint8_t* q) {
#if defined(__SSE2__)
  const __m128 vs = _mm_set1_ps(scale), vz = _mm_set1_ps(zero), vt = _mm_set1_ps(top), magic = _mm_set1_ps(kRoundMagic),
               limit = _mm_set1_ps(kRoundLimit), abs_mask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff)),
               zero_v = _mm_setzero_ps();
  __m128i sum = _mm_setzero_si128();
  for (int b = 0; b < kWordBits; b += 16) {
    __m128i w[4];
    for (int j = 0; j < 4; ++j) {
      const __m128 v = _mm_div_ps(_mm_loadu_ps(x + b + 4 * j), vs);
      const __m128 small = _mm_cmplt_ps(_mm_and_ps(v, abs_mask), limit);
      const __m128 rounded = _mm_sub_ps(_mm_add_ps(v, magic), magic);
      __m128 c = _mm_add_ps(_mm_or_ps(_mm_and_ps(small, rounded), _mm_andnot_ps(small, v)), vz);
      c = _mm_min_ps(_mm_max_ps(c, zero_v), vt);
      w[j] = _mm_cvttps_epi32(c);
    }
    const __m128i bytes = _mm_packus_epi16(_mm_packs_epi32(w[0], w[1]), _mm_packs_epi32(w[2], w[3]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b), bytes);
    sum = _mm_add_epi64(sum, _mm_sad_epu8(bytes, _mm_setzero_si128()));
  }
  return int32_t(_mm_cvtsi128_si32(sum) + _mm_cvtsi128_si32(_mm_unpackhi_epi64(sum, sum)));
#else
  int32_t sum = 0;
  for (int j = 0; j < kWordBits; ++j) sum += q[j] = code_of(x[j], scale, zero, top);
  return sum;
#endif
}

}  // namespace

void quantize_acts_cpu(const QuantParams& p) {
  const int64_t padded = p.kw * kWordBits, top = (int64_t(1) << p.abits) - 1;
  const float ftop = float(top);
  parallel_for(0, p.m, grain_for(p.k), [&](int64_t b, int64_t e) {
    uint8_t local[kWordBits];
    for (int64_t t = b; t < e; ++t) {
      const float* x = p.x + t * p.k;
      const Range r = row_range(x, p.k);
      bool finite = !r.nan && std::isfinite(r.lo) && std::isfinite(r.hi);
      const float amax = std::fmax(std::fabs(r.lo), std::fabs(r.hi));
      float scale, zero = 0.f;
      if (p.symmetric) {
        scale = amax / float((int64_t(1) << (p.abits - 1)) - 1);
        zero = float(int64_t(1) << (p.abits - 1));
      } else {
        scale = (r.hi - r.lo) / ftop;
      }
      if (scale == 0.f) scale = 1.f;
      finite &= std::isfinite(scale);
      if (!p.symmetric && finite) zero = std::fmin(std::fmax(std::nearbyint(-r.lo / scale), 0.f), ftop);
      if (!finite) {
        scale = NAN;
        zero = 0.f;
      }
      p.scales[t] = scale;
      p.zeros[t] = int32_t(zero);
      uint8_t* codes = p.codes ? p.codes + t * padded : nullptr;
      uint32_t* planes = p.planes ? p.planes + t * p.kw * p.abits : nullptr;
      int32_t* sums = p.code_sums + t * p.groups;
      std::memset(sums, 0, sizeof(int32_t) * size_t(p.groups));
      for (int64_t c = 0; c < p.kw; ++c) {
        // kw pads K past its last chunk (btc.h): those chunks are all zero.
        const int64_t i0 = c * kWordBits, n = finite ? std::clamp<int64_t>(p.k - i0, 0, kWordBits) : 0;
        int32_t chunk_sum = 0;
        if (n == kWordBits) {
          chunk_sum = quantize_chunk(x + i0, scale, zero, ftop, local);
        } else {  // the last, partial chunk, the padding past K, or a non-finite row (zeros)
          for (int64_t j = 0; j < n; ++j) chunk_sum += local[j] = code_of(x[i0 + j], scale, zero, ftop);
          std::memset(local + n, 0, size_t(kWordBits - n));
        }
        // A chunk lies in one group: group sizes are multiples of the chunk.
        // Padding chunks past K belong to no group (their index would be
        // past the last one), and their sum is zero anyway.
        if (i0 < p.k) sums[p.group_size > 0 ? i0 / p.group_size : 0] += chunk_sum;
        if (codes) std::memcpy(codes + i0, local, kWordBits);
        if (planes) codes_to_planes(local, p.abits, planes + c * p.abits);
      }
    }
  });
}

}  // namespace llmpack::btc
