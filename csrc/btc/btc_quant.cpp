// The BTC activation quantizer (the rule is in btc.h), compiled once: it
// reads each activation once and is a small share of a linear layer's time,
// so one portable copy serves every ISA level.
#include <cmath>
#include <cstring>

#include "btc/btc.h"
#include "common/parallel.h"

namespace llmpack::btc {

void quantize_acts_cpu(const QuantParams& p) {
  const int64_t padded = p.kw * kWordBits, top = (int64_t(1) << p.abits) - 1;
  parallel_for(0, p.m, grain_for(p.k), [&](int64_t b, int64_t e) {
    uint8_t local[kWordBits];
    for (int64_t t = b; t < e; ++t) {
      const float* x = p.x + t * p.k;
      float lo = 0.f, hi = 0.f, amax = 0.f;
      bool finite = true;
      if (p.k > 0) lo = hi = x[0];
      for (int64_t i = 0; i < p.k; ++i) {
        finite &= std::isfinite(x[i]);
        lo = std::fmin(lo, x[i]);
        hi = std::fmax(hi, x[i]);
        amax = std::fmax(amax, std::fabs(x[i]));
      }
      float scale, zero;
      if (p.symmetric) {
        scale = amax / float((int64_t(1) << (p.abits - 1)) - 1);
        zero = float(int64_t(1) << (p.abits - 1));
      } else {
        scale = (hi - lo) / float(top);
      }
      if (scale == 0.f) scale = 1.f;
      finite &= std::isfinite(scale);
      if (!p.symmetric && finite) zero = std::fmin(std::fmax(std::nearbyint(-lo / scale), 0.f), float(top));
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
        for (int e2 = 0; e2 < kWordBits; ++e2) {
          const int64_t i = c * kWordBits + e2;
          uint8_t q = 0;
          if (i < p.k && finite) q = uint8_t(std::fmin(std::fmax(std::nearbyint(x[i] / scale) + zero, 0.f), float(top)));
          local[e2] = q;
          if (i < p.k) sums[p.group_size > 0 ? i / p.group_size : 0] += q;
        }
        if (codes) std::memcpy(codes + c * kWordBits, local, kWordBits);
        if (planes) codes_to_planes(local, p.abits, planes + c * p.abits);
      }
    }
  });
}

}  // namespace llmpack::btc
