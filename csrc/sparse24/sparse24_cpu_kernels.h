// Body of the 2:4 pack CPU kernels, compiled once per ISA level: each
// sparse24_cpu_<isa>.cpp defines LLMPACK_ISA_NS and includes this file, so the
// same source is built with that unit's flags (the avx2/avx512 units let the
// compiler vectorize the group loops with wider registers). Packing is
// memory-bound and offline. The linear kernel's inner loop is the part worth
// hand-written SIMD: each ISA unit supplies its own `dot_rows` and shares the
// driver below (x conversion, row split over threads, bias, output rounding).
#pragma once
#ifndef LLMPACK_ISA_NS
#error "define LLMPACK_ISA_NS before including sparse24_cpu_kernels.h"
#endif

#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>
#include <utility>

#include <vector>

#include "common/cpu_convert.h"
#include "common/parallel.h"
#include "sparse24/sparse24.h"

namespace llmpack::sparse24::LLMPACK_ISA_NS {
namespace {

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

// Byte of canonical meta (two nibbles) -> 8-bit keep mask (two 4-bit masks),
// so 4 metadata bytes give the 32-bit element mask an AVX-512 expand needs.
struct KeepTable {
  uint8_t t[256];
  constexpr KeepTable() : t() {
    for (int b = 0; b < 256; ++b) {
      auto keep = [](int nib) { return ((1 << (nib & 3)) | (1 << (nib >> 2))) & 0xF; };
      t[b] = uint8_t(keep(b & 0xF) | (keep(b >> 4) << 4));
    }
  }
};
constexpr KeepTable kKeep;

inline uint32_t keep_mask32(const uint8_t* meta4) {
  return uint32_t(kKeep.t[meta4[0]]) | (uint32_t(kKeep.t[meta4[1]]) << 8) | (uint32_t(kKeep.t[meta4[2]]) << 16) |
         (uint32_t(kKeep.t[meta4[3]]) << 24);
}

// Validates the metadata of row r; records its first bad byte. For the SIMD
// unpackers, which only learn *that* a row is bad.
inline void record_bad_meta_byte(const uint8_t* m, int64_t mcols, int64_t r, std::atomic<int64_t>& bad) {
  for (int64_t b = 0; b < mcols; ++b)
    if (!valid_nibble(m[b] & 0xF) || !valid_nibble(m[b] >> 4)) {
      record_min(bad, r * mcols + b);
      return;
    }
}

// Shared driver of the SIMD unpackers (K % 32 == 0): rows are split over
// threads; per 32-K step the metadata word is validated and turned into a
// keep mask, and expand(values16, keep, out32) writes the step's 32 outputs
// from its 16 kept values.
template <class Bits, class Expand>
void expand_rows(const DecompressParams& p, Expand expand) {
  constexpr int64_t kStep = 32;
  const int64_t steps = p.cols / kStep, mcols = meta_cols(p.cols);
  std::atomic<int64_t> bad{kNoError};
  parallel_for(0, p.rows, grain_for(p.cols), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const Bits* v = static_cast<const Bits*>(p.values) + r * values_cols(p.cols);
      const uint8_t* m = p.meta + r * mcols;
      Bits* w = static_cast<Bits*>(p.w) + r * p.cols;
      uint32_t invalid = 0;
      for (int64_t s = 0; s < steps; ++s) {
        uint32_t word;
        std::memcpy(&word, m + 4 * s, 4);
        invalid |= invalid_nibbles(word);
        expand(v + 16 * s, keep_mask32(m + 4 * s), w + kStep * s);
      }
      if (invalid) {  // rare: name the exact byte
        record_bad_meta_byte(m, mcols, r, bad);
        return;
      }
    }
  });
  *p.first_bad_byte = bad.load();
}

// One group of 4 elements as a single integer store: the two kept elements
// shifted into their slots, zeros elsewhere. Branch-free, one store per group
// instead of four element writes (2x faster on the memory-bound unpack).
template <class Bits>
using GroupWord = std::conditional_t<sizeof(Bits) == 2, uint64_t, unsigned __int128>;

template <class Bits>
void decompress_rows(const DecompressParams& p, int64_t r0, int64_t r1,
                     std::atomic<int64_t>& bad) {
  using Word = GroupWord<Bits>;
  constexpr int kBits = 8 * sizeof(Bits);
  const int64_t groups = p.cols / kGroup, mcols = meta_cols(p.cols);
  for (int64_t r = r0; r < r1; ++r) {
    const Bits* v = static_cast<const Bits*>(p.values) + r * values_cols(p.cols);
    const uint8_t* m = p.meta + r * mcols;
    uint8_t* w = static_cast<uint8_t*>(p.w) + r * p.cols * sizeof(Bits);
    if ((groups & 1) && (m[mcols - 1] >> 4) != 0) {
      record_min(bad, r * mcols + mcols - 1);
      return;
    }
    unsigned invalid = 0;
    for (int64_t g = 0; g < groups; ++g) {
      const unsigned nib = (m[g >> 1] >> ((g & 1) * 4)) & 0xF;
      invalid |= !valid_nibble(nib);
      const Word word = (Word(v[2 * g]) << (kBits * (nib & 3))) | (Word(v[2 * g + 1]) << (kBits * (nib >> 2)));
      std::memcpy(w + g * sizeof(Word), &word, sizeof(Word));
    }
    if (invalid) {  // rare: find the exact byte for the message
      for (int64_t g = 0; g < groups; ++g)
        if (!valid_nibble((m[g >> 1] >> ((g & 1) * 4)) & 0xF)) {
          record_min(bad, r * mcols + (g >> 1));
          return;
        }
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

// ---------------------------------------------------------------------------
// Linear: y[m, n] = sum_k x[m, k] W[n, k] (+ bias[n]).
// ---------------------------------------------------------------------------

// What a dot_rows kernel sees: x in fp32 (and as given), weights still packed.
struct LinearCtx {
  const float* x;       // [m, k] fp32
  const void* x_raw;    // [m, k] in the op's dtype (the bf16 dot-product path reads this)
  const void* values;   // [n, k/2], dtype
  const uint8_t* meta;  // [n, meta_cols(k)]
  int64_t m, n, k;
  // Software prefetch of the value stream: only when W does not fit in the
  // caches (on a cache-resident W the prefetches are wasted load-port ops).
  bool prefetch;
};

template <class T>
static inline float to_f32(T v, DType dt) {
  if constexpr (sizeof(T) == 4) {
    return v;
  } else {
    return dt == DType::bf16 ? bf16_to_f32(v) : f16_to_f32(v);
  }
}

// Scalar dot of packed row `row`, groups [g0, g1), with x rows [m0, m0+mb):
// acc[i] += ... . Used by the generic unit for everything and by the SIMD
// units for the K tail that doesn't fill a vector. Returns false on invalid
// metadata (including a nonzero padding nibble).
template <class T>
bool dot_rows_scalar(const LinearCtx& c, DType dt, int64_t row, int64_t g0, int64_t g1, int64_t m0,
                     int64_t mb, float* acc) {
  const T* v = static_cast<const T*>(c.values) + row * values_cols(c.k);
  const uint8_t* mt = c.meta + row * meta_cols(c.k);
  bool ok = !(g1 & 1) || (mt[g1 >> 1] >> 4) == 0;
  for (int64_t g = g0; g < g1; ++g) {
    const unsigned nib = (mt[g >> 1] >> ((g & 1) * 4)) & 0xF;
    ok = ok && valid_nibble(nib);
    const float w0 = to_f32<T>(v[2 * g], dt), w1 = to_f32<T>(v[2 * g + 1], dt);
    const int64_t k0 = 4 * g + (nib & 3), k1 = 4 * g + (nib >> 2);
    for (int64_t i = 0; i < mb; ++i) {
      const float* xr = c.x + (m0 + i) * c.k;
      acc[i] += w0 * xr[k0] + w1 * xr[k1];
    }
  }
  return ok;
}

// Calls f(std::integral_constant<int, i>{}) for i = 0..N-1. The SIMD kernels
// unroll their accumulator chains with it: an accumulator array indexed by a
// runtime counter lives on the stack (GCC keeps it there, one store-forwarding
// round trip per FMA), a compile-time index keeps it in registers.
template <int N, class F>
inline void unroll(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) { (f(std::integral_constant<int, I>{}), ...); }(
      std::make_integer_sequence<int, N>{});
}

// Calls block(std::integral_constant<int, MB>, m0) over the rows of x in
// blocks of MB = 4 and one remainder block of 1..3 (MB is a compile-time
// constant, so each SIMD kernel keeps its MB accumulators in registers), and
// ORs together the invalid-metadata masks the blocks return.
template <class Block>
uint32_t for_row_blocks(int64_t m, Block&& block) {
  uint32_t invalid = 0;
  int64_t m0 = 0;
  for (; m0 + 4 <= m; m0 += 4) invalid |= block(std::integral_constant<int, 4>{}, m0);
  switch (m - m0) {
    case 3: invalid |= block(std::integral_constant<int, 3>{}, m0); break;
    case 2: invalid |= block(std::integral_constant<int, 2>{}, m0); break;
    case 1: invalid |= block(std::integral_constant<int, 1>{}, m0); break;
    default: break;
  }
  return invalid;
}

// W larger than ~1 MiB per core (half this machine class's L2) comes from
// L3/DRAM on every call.
inline bool streams_from_memory(const LinearParams& p) {
  const int64_t bytes = p.n * (values_cols(p.k) * (p.dtype == DType::f32 ? 4 : 2) + meta_cols(p.k));
  return bytes > (int64_t(1) << 20) * num_threads();
}

// True when weight row `row`'s metadata is all valid nibbles (and a padding
// nibble is 0). The error path of the block kernels uses it to name the row.
inline bool row_meta_valid(const LinearCtx& c, int64_t row) {
  const int64_t groups = c.k / kGroup;
  const uint8_t* mt = c.meta + row * meta_cols(c.k);
  for (int64_t g = 0; g < groups; ++g)
    if (!valid_nibble((mt[g >> 1] >> ((g & 1) * 4)) & 0xF)) return false;
  return !(groups & 1) || (mt[groups >> 1] >> 4) == 0;
}

// Pointers to a block of up to R packed weight rows. Rows past the real
// count alias the last real row: the kernel computes them (cheap, a block tail
// at most once per thread) and the driver drops their results. This keeps
// every block kernel a single compile-time shape.
template <class T, int R>
struct RowBlock {
  const T* v[R];
  const uint8_t* m[R];
  RowBlock(const LinearCtx& c, int64_t row0, int64_t nrows) {
    for (int r = 0; r < R; ++r) {
      const int64_t row = row0 + (r < nrows ? r : nrows - 1);
      v[r] = static_cast<const T*>(c.values) + row * values_cols(c.k);
      m[r] = c.meta + row * meta_cols(c.k);
    }
  }
};

// Driver shared by every ISA. DotRows(ctx, row0, nrows, acc) adds to
// acc[r * m + i] the dot products of weight rows row0 + r (r < nrows <=
// kRows) with x rows i, and returns false on invalid metadata in any of
// those rows. Blocks of kRows weight rows share each x load and amortise the
// per-row horizontal reductions; at decode shapes (m small) the work is
// streaming W once, so blocks are split over torch's threads along N and each
// thread streams its own slice. needs_f32_x = false when the kernel reads only
// ctx.x_raw (the bf16 dot-product kernel with no scalar K tail): then x is not
// converted at all. x_f32: the kernel's own fp32 copy of x (any layout it
// likes, e.g. re-laid out for its shuffles), used as ctx.x instead.
template <class T, int kRows, class DotRows>
void linear_driver(const LinearParams& p, DotRows dot_rows, bool needs_f32_x = true, const float* x_f32 = nullptr) {
  std::vector<float> xbuf;
  const float* xf = x_f32 ? x_f32 : sizeof(T) == 4 ? static_cast<const float*>(p.x) : nullptr;
  if (sizeof(T) == 2 && needs_f32_x && !x_f32) {
    xbuf.resize(size_t(p.m * p.k));
    const T* xs = static_cast<const T*>(p.x);
    for (int64_t i = 0; i < p.m * p.k; ++i) xbuf[i] = to_f32<T>(xs[i], p.dtype);
    xf = xbuf.data();
  }
  const LinearCtx c{xf, p.x, p.values, p.meta, p.m, p.n, p.k, streams_from_memory(p)};
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);
  std::atomic<int64_t> bad{kNoError};
  const int64_t blocks = (p.n + kRows - 1) / kRows;
  // Each block costs kRows * k/2 weights times m; aim for >= ~16 Ki MACs per task
  // (measured: smaller tasks lose more to the fork/join than they gain).
  parallel_for(0, blocks, grain_for(kRows * p.k / 2 * p.m, 1 << 14), [&](int64_t b0, int64_t b1) {
    std::vector<float> acc(size_t(p.m * kRows));
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t row0 = b * kRows, nrows = std::min<int64_t>(kRows, p.n - row0);
      for (auto& a : acc) a = 0.f;
      if (!dot_rows(c, row0, nrows, acc.data())) {
        int64_t r = 0;  // name the first bad row (the block's last if none shows: never silent)
        while (r + 1 < nrows && row_meta_valid(c, row0 + r)) ++r;
        record_min(bad, row0 + r);
        return;
      }
      for (int64_t r = 0; r < nrows; ++r) {
        const int64_t row = row0 + r;
        const float bv = bias ? to_f32<T>(bias[row], p.dtype) : 0.f;
        for (int64_t i = 0; i < p.m; ++i) {
          const float v = acc[r * p.m + i] + bv;
          if constexpr (sizeof(T) == 4)
            y[i * p.n + row] = v;
          else
            y[i * p.n + row] = p.dtype == DType::bf16 ? f32_to_bf16(v) : f32_to_f16(v);
        }
      }
    }
  });
  *p.first_bad_row = bad.load();
}

// Dispatch on the element type: Kernel<T>::kRows and
// bool Kernel<T>::dot(ctx, dtype, row0, nrows, acc), as DotRows above.
template <template <class> class Kernel>
void linear_dispatch(const LinearParams& p) {
  auto run = [&](auto tag, DType dt) {
    using T = decltype(tag);
    linear_driver<T, Kernel<T>::kRows>(p, [dt](const LinearCtx& c, int64_t row0, int64_t nrows, float* acc) {
      return Kernel<T>::dot(c, dt, row0, nrows, acc);
    });
  };
  if (p.dtype == DType::f32)
    run(float{}, DType::f32);
  else
    run(uint16_t{}, p.dtype);
}

}  // namespace
}  // namespace llmpack::sparse24::LLMPACK_ISA_NS
