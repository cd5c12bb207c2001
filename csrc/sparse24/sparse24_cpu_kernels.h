// Body of the 2:4 pack CPU kernels, compiled once per ISA level: each
// sparse24_cpu_<isa>.cpp defines LLMPACK_ISA_NS and includes this file, so the
// same source is built with that unit's flags (the avx2/avx512 units let the
// compiler vectorize the group loops with wider registers). Packing is
// memory-bound and offline; the hand-written SIMD lives in the GEMM kernels.
#pragma once
#ifndef LLMPACK_ISA_NS
#error "define LLMPACK_ISA_NS before including sparse24_cpu_kernels.h"
#endif

#include <atomic>
#include <cstring>

#include "common/parallel.h"
#include "sparse24/sparse24.h"

namespace llmpack::sparse24::LLMPACK_ISA_NS {
namespace {

inline void record_min(std::atomic<int64_t>& slot, int64_t v) {
  int64_t cur = slot.load(std::memory_order_relaxed);
  while (v < cur && !slot.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

template <class Bits>
void compress_rows(const CompressParams& p, int64_t r0, int64_t r1, std::atomic<int64_t>& bad) {
  const int64_t groups = p.cols / kGroup, mcols = meta_cols(p.cols);
  for (int64_t r = r0; r < r1; ++r) {
    const Bits* w = static_cast<const Bits*>(p.w) + r * p.cols;
    Bits* v = static_cast<Bits*>(p.values) + r * values_cols(p.cols);
    uint8_t* m = p.meta + r * mcols;
    if (groups & 1) m[mcols - 1] = 0;  // padding nibble
    for (int64_t g = 0; g < groups; ++g) {
      const Bits* x = w + g * kGroup;
      unsigned mask = 0;
      for (int i = 0; i < kGroup; ++i) mask |= unsigned(is_nonzero_bits(x[i], sizeof(Bits))) << i;
      const uint8_t nib = nibble_for_mask(mask);
      if (nib == 0) {  // > 2 nonzeros: stop this chunk, report the earliest
        record_min(bad, r * groups + g);
        return;
      }
      v[2 * g] = x[nib & 3];
      v[2 * g + 1] = x[nib >> 2];
      uint8_t& byte = m[g >> 1];
      byte = (g & 1) ? uint8_t((byte & 0x0F) | (nib << 4)) : nib;
    }
  }
}

template <class Bits>
void decompress_rows(const DecompressParams& p, int64_t r0, int64_t r1,
                     std::atomic<int64_t>& bad) {
  const int64_t groups = p.cols / kGroup, mcols = meta_cols(p.cols);
  for (int64_t r = r0; r < r1; ++r) {
    const Bits* v = static_cast<const Bits*>(p.values) + r * values_cols(p.cols);
    const uint8_t* m = p.meta + r * mcols;
    Bits* w = static_cast<Bits*>(p.w) + r * p.cols;
    if ((groups & 1) && (m[mcols - 1] >> 4) != 0) {
      record_min(bad, r * mcols + mcols - 1);
      return;
    }
    for (int64_t g = 0; g < groups; ++g) {
      const unsigned nib = (m[g >> 1] >> ((g & 1) * 4)) & 0xF;
      if (!valid_nibble(nib)) {
        record_min(bad, r * mcols + (g >> 1));
        return;
      }
      Bits* x = w + g * kGroup;
      for (int i = 0; i < kGroup; ++i) x[i] = 0;
      x[nib & 3] = v[2 * g];
      x[nib >> 2] = v[2 * g + 1];
    }
  }
}

template <class Params, class Fn>
void run_rows(const Params& p, int64_t* first_bad, Fn body) {
  std::atomic<int64_t> bad{kNoError};
  parallel_for(0, p.rows, grain_for(p.cols), [&](int64_t r0, int64_t r1) { body(p, r0, r1, bad); });
  *first_bad = bad.load();
}

void compress(const CompressParams& p) {
  if (p.elem_bytes == 2)
    run_rows(p, p.first_bad_group, compress_rows<uint16_t>);
  else
    run_rows(p, p.first_bad_group, compress_rows<uint32_t>);
}

void decompress(const DecompressParams& p) {
  if (p.elem_bytes == 2)
    run_rows(p, p.first_bad_byte, decompress_rows<uint16_t>);
  else
    run_rows(p, p.first_bad_byte, decompress_rows<uint32_t>);
}

}  // namespace
}  // namespace llmpack::sparse24::LLMPACK_ISA_NS
