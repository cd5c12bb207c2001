// Body of the DFloat11 CPU kernels, compiled once per ISA level: each
// df11_cpu_<isa>.cpp defines LLMPACK_ISA_NS and includes this file, so the
// same source is built with that unit's flags. The Huffman walk is a serial
// chain of table lookups per chunk (its speed is the lookup latency, not the
// vector width); what the wider units vectorise is splitting values into
// exponent / sign+mantissa bytes, joining them back into bf16, and the fused
// linear's dot products (bf16 -> fp32 FMAs).
#pragma once
#ifndef LLMPACK_ISA_NS
#error "define LLMPACK_ISA_NS before including df11_cpu_kernels.h"
#endif

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "common/parallel.h"
#include "df11/df11.h"

namespace llmpack::df11::LLMPACK_ISA_NS {
namespace {

// --------------------------------------------------------------- encoding

void histogram(const uint16_t* w, int64_t n, uint8_t* sm, uint8_t* exponents, int64_t* counts) {
  std::atomic<int64_t> total[kSymbols];
  for (auto& t : total) t.store(0, std::memory_order_relaxed);
  parallel_for(0, num_chunks(n), grain_for(kChunk, 1 << 16), [&](int64_t c0, int64_t c1) {
    int64_t local[kSymbols] = {0};
    const int64_t e = std::min(n, c1 * kChunk);
    for (int64_t i = c0 * kChunk; i < e; ++i) {  // vectorised by the compiler
      const uint16_t v = w[i];
      exponents[i] = static_cast<uint8_t>((v >> 7) & 0xFF);
      sm[i] = static_cast<uint8_t>(((v >> 8) & 0x80) | (v & 0x7F));
    }
    for (int64_t i = c0 * kChunk; i < e; ++i) local[exponents[i]]++;
    for (int s = 0; s < kSymbols; ++s)
      if (local[s]) total[s].fetch_add(local[s], std::memory_order_relaxed);
  });
  for (int s = 0; s < kSymbols; ++s) counts[s] = total[s].load(std::memory_order_relaxed);
}

// Chunk c's codes into stream[offsets[c] .. offsets[c + 1]), 64-bit bit buffer.
void encode(const uint8_t* exponents, int64_t n, const uint8_t* lengths, const uint32_t* code,
            const uint32_t* offsets, uint8_t* stream) {
  parallel_for(0, num_chunks(n), grain_for(kChunk, 1 << 15), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      uint8_t* out = stream + offsets[c];
      uint64_t acc = 0;
      int bits = 0;
      const int64_t e = std::min(n, (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < e; ++i) {
        const uint8_t s = exponents[i];
        acc |= uint64_t(code[s]) << bits;
        bits += lengths[s];
        if (bits >= 32) {
          const uint32_t word = static_cast<uint32_t>(acc);
          std::memcpy(out, &word, 4);
          out += 4;
          acc >>= 32;
          bits -= 32;
        }
      }
      for (; bits > 0; bits -= 8, acc >>= 8) *out++ = static_cast<uint8_t>(acc);
    }
  });
}

// --------------------------------------------------------------- decoding

// Exponents of chunk c into exp[0 .. count) (exp has 2 slack bytes: an entry
// writes its 3 symbols unconditionally). False when the bits are not
// exactly `count` codes inside the chunk's bytes.
inline bool decode_chunk_exponents(const DecodeParams& p, int64_t c, int64_t count, uint8_t* exp,
                                   const uint8_t* lengths_of) {
  uint64_t pos = uint64_t(p.offsets[c]) * 8;
  const uint64_t end = uint64_t(p.offsets[c + 1]) * 8;
  int64_t i = 0;
  // Whole entries while at least 3 values remain; each check of `pos < end`
  // keeps every 64-bit read inside the chunk's bytes + the stream's guard.
  while (i + 3 <= count) {
    if (pos >= end) return false;
    const uint64_t bits = peek64(p.stream, pos);
    const uint32_t e0 = p.lut[bits & (kLutSize - 1)];
    const unsigned n0 = lut_count(e0), b0 = lut_bits(e0);
    std::memcpy(exp + i, &e0, 3);  // little endian: s0 s1 s2 in bytes 0..2
    i += n0;
    if (n0 == 0) return false;
    pos += b0;
  }
  // Tail: one value at a time, by its code length.
  while (i < count) {
    if (pos >= end) return false;
    const uint32_t e = p.lut[peek64(p.stream, pos) & (kLutSize - 1)];
    if (lut_count(e) == 0) return false;
    const unsigned s = lut_symbol(e, 0);
    exp[i++] = static_cast<uint8_t>(s);
    pos += lengths_of[s];
  }
  return pos <= end;
}

inline void join(const uint8_t* exp, const uint8_t* sm, uint16_t* out, int64_t count) {
  for (int64_t i = 0; i < count; ++i) out[i] = combine(exp[i], sm[i]);  // vectorised by the compiler
}

void decode_chunks(const DecodeParams& p, int64_t c0, int64_t c1, std::atomic<int64_t>& bad, uint16_t* out_base,
                   int64_t out_first) {
  alignas(64) uint8_t exp[kChunk + 4];
  for (int64_t c = c0; c < c1; ++c) {
    const int64_t first = c * kChunk, count = std::min<int64_t>(kChunk, p.n - first);
    if (!decode_chunk_exponents(p, c, count, exp, p.lengths)) {
      record_min(bad, c);
      return;
    }
    join(exp, p.sm + first, out_base + (first - out_first), count);
  }
}

void decode(const DecodeParams& p) {
  std::atomic<int64_t> bad{kNoError};
  parallel_for(0, num_chunks(p.n), 4, [&](int64_t c0, int64_t c1) { decode_chunks(p, c0, c1, bad, p.out, 0); });
  *p.first_bad_chunk = bad.load();
}

// --------------------------------------------------------------- fused linear

inline float bf16f(uint16_t v) {
  uint32_t u = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t f2bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
}

// sum_k w[k] * x[k], w bf16 bits, x fp32.
inline float dot_bf16(const uint16_t* w, const float* x, int64_t k) {
  int64_t j = 0;
  float s = 0.f;
#if defined(__AVX2__)
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; j + 16 <= k; j += 16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + j));
    const __m256 lo = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(v)), 16));
    const __m256 hi = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(v, 1)), 16));
    a0 = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x + j), a0);
    a1 = _mm256_fmadd_ps(hi, _mm256_loadu_ps(x + j + 8), a1);
  }
  const __m256 a = _mm256_add_ps(a0, a1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  s = _mm_cvtss_f32(h);
#endif
  for (; j < k; ++j) s += bf16f(w[j]) * x[j];
  return s;
}

void linear(const LinearParams& p) {
  const int64_t k = p.k, m = p.m, n = p.n;
  std::vector<float> xf(size_t(m * k));
  for (int64_t i = 0; i < m * k; ++i) xf[i] = bf16f(p.x[i]);
  // A tile of rows decoded at once: ~64 KiB of bf16, L2-resident while the
  // dot products read it.
  const int64_t tile_rows = std::max<int64_t>(1, (int64_t(32) << 10) / std::max<int64_t>(k, 1));
  const int64_t tiles = (n + tile_rows - 1) / tile_rows;
  std::atomic<int64_t> bad{kNoError};
  parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
    std::vector<uint16_t> buf;
    for (int64_t t = t0; t < t1 && bad.load(std::memory_order_relaxed) == kNoError; ++t) {
      const int64_t r0 = t * tile_rows, r1 = std::min(n, r0 + tile_rows);
      const int64_t e0 = r0 * k, e1 = r1 * k;
      const int64_t c0 = e0 / kChunk, c1 = (e1 + kChunk - 1) / kChunk;
      buf.resize(size_t((c1 - c0) * kChunk));
      decode_chunks(p.w, c0, c1, bad, buf.data(), c0 * kChunk);
      if (bad.load(std::memory_order_relaxed) != kNoError) return;
      const uint16_t* w0 = buf.data() + (e0 - c0 * kChunk);
      for (int64_t r = r0; r < r1; ++r) {
        const uint16_t* wr = w0 + (r - r0) * k;
        const float bv = p.bias ? bf16f(p.bias[r]) : 0.f;
        for (int64_t i = 0; i < m; ++i) p.y[i * n + r] = f2bf16(dot_bf16(wr, xf.data() + i * k, k) + bv);
      }
    }
  });
  *p.w.first_bad_chunk = bad.load();
}

}  // namespace
}  // namespace llmpack::df11::LLMPACK_ISA_NS
