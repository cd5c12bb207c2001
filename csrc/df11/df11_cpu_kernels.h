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
#include <type_traits>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "common/cpu_simd.h"
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

// 64 stream bits at bit `pos` as one unaligned load (peek64 in df11.h is the
// portable byte-wise form the CUDA kernel uses).
inline uint64_t load_bits(const uint8_t* stream, uint64_t pos) {
  uint64_t w;
  std::memcpy(&w, stream + (pos >> 3), 8);
  return w >> (pos & 7);
}

// The decoder state of one chunk.
struct Cursor {
  uint64_t pos, end;
  int64_t i, count;
  uint8_t* exp;
};

inline Cursor cursor(const DecodeParams& p, int64_t c, uint8_t* exp) {
  const int64_t first = c * kChunk;
  return {uint64_t(p.offsets[c]) * 8, uint64_t(p.offsets[c + 1]) * 8, 0, std::min<int64_t>(kChunk, p.n - first), exp};
}

// The rest of a chunk on its own: whole table entries while >= 4 values are
// left, then one value at a time by its code length; then the chunk must
// end inside its bytes. Each `pos < end` check keeps every 64-bit read inside
// the chunk's bytes + the stream's guard. False on a corrupted stream.
inline bool finish(const DecodeParams& p, Cursor& k) {
  while (k.i + int64_t(kLutMaxSymbols) <= k.count) {
    if (k.pos >= k.end) return false;
    const uint64_t e = p.lut[load_bits(p.stream, k.pos) & (kLutSize - 1)];
    if (!lut_valid(e)) return false;
    std::memcpy(k.exp + k.i, &e, 4);  // little endian: s0..s3 in bytes 0..3
    k.i += lut_count(e);
    k.pos += lut_bits(e);
  }
  while (k.i < k.count) {
    if (k.pos >= k.end) return false;
    const uint64_t e = p.lut[load_bits(p.stream, k.pos) & (kLutSize - 1)];
    if (!lut_valid(e)) return false;
    const unsigned s = lut_symbol(e, 0);
    k.exp[k.i++] = static_cast<uint8_t>(s);
    k.pos += p.lengths[s];
  }
  return k.pos <= k.end;
}

// Exponents of chunks c .. c + W - 1 (all full) decoded together: W
// independent lookup chains in flight hide the load latency that bounds one
// chain. A chain's whole state is one register, `bit position << 16 | values
// done`, which a table entry advances with one add (df11.h), so W = 8 chains
// fit in registers with room for the temporaries (a state per field spilled
// to the stack, and the store-to-load forwarding on it halved the speed).
// Per lookup: one unaligned 64-bit read at the chain's bit position, one
// table load, one 4-byte store of up to 4 exponents, one add. Bounds are
// checked once per round of 4 lookups per chain (<= 16 values, <= 44 bits:
// a round reads at most 13 bytes past a chunk's end, inside the 16 guard
// bytes); a bad code's count (kBadCount) makes its chain's values-done
// overshoot the chunk, and stores stay inside the buffer because their
// offset is masked to the chunk. Returns the index of a bad chunk, or -1.
template <int W>
int64_t decode_group(const DecodeParams& p, int64_t c, uint8_t (*exp)[kChunk + 8]) {
  static_assert((kChunk & (kChunk - 1)) == 0 && kChunk + 4 * kBadCount < (1 << 16), "state layout");
  uint64_t st[W], end[W];
  for (int j = 0; j < W; ++j) {
    st[j] = (uint64_t(p.offsets[c + j]) * 8) << 16;
    end[j] = (uint64_t(p.offsets[c + j + 1]) * 8) << 16;  // st < end <=> position < end bit
  }
  const uint64_t* lut = p.lut;
  const uint8_t* stream = p.stream;
  for (;;) {
    bool go = true;
    for (int j = 0; j < W; ++j) go &= (st[j] & 0xFFFF) + 4 * kLutMaxSymbols <= uint64_t(kChunk) && st[j] < end[j];
    if (!go) break;
    for (int r = 0; r < 4; ++r)
      for (int j = 0; j < W; ++j) {
        uint64_t bits;
        std::memcpy(&bits, stream + (st[j] >> 19), 8);
        const uint64_t e = lut[(bits >> ((st[j] >> 16) & 7)) & (kLutSize - 1)];
        std::memcpy(exp[j] + (st[j] & (kChunk - 1)), &e, 4);  // up to 4 exponents (+ slack)
        st[j] += e >> 32;
      }
  }
  bool valid = true;
  for (int j = 0; j < W; ++j) valid &= (st[j] & 0xFFFF) <= uint64_t(kChunk);
  for (int j = 0; j < W; ++j) {
    Cursor k{st[j] >> 16, end[j] >> 16, int64_t(st[j] & 0xFFFF), kChunk, exp[j]};
    if (!valid || !finish(p, k)) {
      for (int q = 0; q < W; ++q) {  // name the first chunk that fails on its own
        Cursor alone = cursor(p, c + q, exp[q]);
        if (!finish(p, alone)) return c + q;
      }
      return c + j;
    }
  }
  return -1;
}

// The next group's stream and sign+mantissa bytes, requested while this
// group decodes: 2W sequential streams (plus W outputs) are more than the
// hardware prefetchers follow, and a cold group otherwise waits on DRAM.
inline void prefetch_group(const DecodeParams& p, int64_t c0, int64_t c1) {
  if (c0 >= c1) return;
  for (uint64_t b = p.offsets[c0]; b < p.offsets[c1]; b += 64) __builtin_prefetch(p.stream + b);
  const uint8_t* sm = p.sm + c0 * kChunk;
  const int64_t n = std::min(p.n, c1 * kChunk) - c0 * kChunk;
  for (int64_t b = 0; b < n; b += 64) __builtin_prefetch(sm + b);
}

inline void join(const uint8_t* exp, const uint8_t* sm, uint16_t* out, int64_t count) {
  for (int64_t i = 0; i < count; ++i) out[i] = combine(exp[i], sm[i]);  // vectorised by the compiler
}

// Outputs at least this large are written with stores that bypass the cache:
// the bf16 output is 2/3 of the bytes a decode moves, and a normal store
// first reads each output line (read for ownership). Measured on 4096 x 4096
// tensors, cold: +10 % on 1 thread, +15 % on 2. Smaller outputs keep normal
// stores, as their caller (DF11Linear's decode, then F.linear) reads them
// next and finds them in the last-level cache.
constexpr int64_t kStreamOutBytes = int64_t(16) << 20;

// join with streaming stores where the unit has them (then the worker must
// fence before its results are published: `fence_streams`).
inline void join_streaming(const uint8_t* exp, const uint8_t* sm, uint16_t* out, int64_t count) {
  int64_t i = 0;
#if defined(__AVX2__)
  for (; i < count && (reinterpret_cast<uintptr_t>(out + i) & 31); ++i) out[i] = combine(exp[i], sm[i]);
  const __m256i sign = _mm256_set1_epi16(0x80), mantissa = _mm256_set1_epi16(0x7F);
  for (; i + 16 <= count; i += 16) {
    const __m256i e = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(exp + i)));
    const __m256i s = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sm + i)));
    const __m256i v = _mm256_or_si256(_mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(s, sign), 8),
                                                      _mm256_slli_epi16(e, 7)),
                                      _mm256_and_si256(s, mantissa));  // combine(), 16 at a time
    _mm256_stream_si256(reinterpret_cast<__m256i*>(out + i), v);
  }
#endif
  join(exp + i, sm + i, out + i, count - i);
}

inline void fence_streams() {
#if defined(__AVX2__)
  _mm_sfence();
#endif
}

// Chunks [c0, c1) into out_base (which holds values from out_first on). The
// next group's bytes are prefetched up to chunk `ahead_end` (the fused
// linear passes its next tile's end, so a tile's first group is not cold).
template <bool Streaming = false>
void decode_chunks(const DecodeParams& p, int64_t c0, int64_t c1, std::atomic<int64_t>& bad, uint16_t* out_base,
                   int64_t out_first, int64_t ahead_end = 0) {
  constexpr auto put = Streaming ? join_streaming : join;
  constexpr int kMaxW = 8;
  alignas(64) uint8_t exp[kMaxW][kChunk + 8];
  const int64_t full = std::min(c1, p.n / kChunk);  // chunks with exactly kChunk values
  const int64_t ahead = std::max(ahead_end, c1);
  int64_t c = c0;
  // Full chunks 8, then 4, then 2 at a time (one chain alone runs at the
  // lookup latency, and a linear tile need not hold a multiple of 8 chunks).
  auto group = [&](auto width) {
    constexpr int W = decltype(width)::value;
    prefetch_group(p, std::min(c + W, ahead), std::min(c + W + kMaxW, ahead));
    const int64_t b = decode_group<W>(p, c, exp);
    if (b >= 0) {
      record_min(bad, b);
      return false;
    }
    for (int j = 0; j < W; ++j)
      put(exp[j], p.sm + (c + j) * kChunk, out_base + ((c + j) * kChunk - out_first), kChunk);
    c += W;
    return true;
  };
  while (c + kMaxW <= full)
    if (!group(std::integral_constant<int, kMaxW>{})) return;
  if (c + 4 <= full && !group(std::integral_constant<int, 4>{})) return;
  if (c + 2 <= full && !group(std::integral_constant<int, 2>{})) return;
  for (; c < c1; ++c) {
    Cursor k = cursor(p, c, exp[0]);
    if (!finish(p, k)) {
      record_min(bad, c);
      return;
    }
    put(exp[0], p.sm + c * kChunk, out_base + (c * kChunk - out_first), k.count);
  }
}

void decode(const DecodeParams& p) {
  std::atomic<int64_t> bad{kNoError};
  const bool streaming = p.n * 2 >= kStreamOutBytes;
  parallel_for(0, num_chunks(p.n), 4, [&](int64_t c0, int64_t c1) {
    if (streaming) {
      decode_chunks<true>(p, c0, c1, bad, p.out, 0);
      fence_streams();
    } else {
      decode_chunks(p, c0, c1, bad, p.out, 0);
    }
  });
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


// s[a][b] = dot(w row a, x row b) over k for RW bf16 weight rows (stride k)
// and RX fp32 rows of x (stride k): a register block of RW x RX
// accumulators, so each x vector loaded (from L2 at M = 16: x is 256 KiB
// there) feeds RW FMAs and each weight vector RX. The first kernel (one
// weight row widened to fp32 times four x rows) lost to decoding W whole +
// torch's GEMM from M = 16 on; this one beats that at every M measured.
template <int RW, int RX>
inline void block_dots(const uint16_t* w, const float* x, int64_t k, float (*s)[RX]) {
  int64_t j = 0;
  for (int a = 0; a < RW; ++a)
    for (int b = 0; b < RX; ++b) s[a][b] = 0.f;
#if defined(__AVX2__)
  __m256 acc[RW][RX];
  for (int a = 0; a < RW; ++a)
    for (int b = 0; b < RX; ++b) acc[a][b] = _mm256_setzero_ps();
  for (; j + 8 <= k; j += 8) {
    __m256 wv[RW];
    for (int a = 0; a < RW; ++a) wv[a] = load_bf16x8(w + a * k + j);
    for (int b = 0; b < RX; ++b) {
      const __m256 xv = _mm256_loadu_ps(x + b * k + j);
      for (int a = 0; a < RW; ++a) acc[a][b] = _mm256_fmadd_ps(wv[a], xv, acc[a][b]);
    }
  }
  for (int a = 0; a < RW; ++a)
    for (int b = 0; b < RX; ++b) s[a][b] = hsum256(acc[a][b]);
#endif
  for (; j < k; ++j)
    for (int a = 0; a < RW; ++a)
      for (int b = 0; b < RX; ++b) s[a][b] += bf16f(w[a * k + j]) * x[b * k + j];
}

// y[i][r .. r + RW) for every row i of x, weight rows w (RW of them).
template <int RW>
inline void rows_times_x(const LinearParams& p, const uint16_t* w, const float* xf, int64_t r) {
  constexpr int RX = 4;
  const int64_t k = p.k, m = p.m, n = p.n;
  float bv[RW];
  for (int a = 0; a < RW; ++a) bv[a] = p.bias ? bf16f(p.bias[r + a]) : 0.f;
  int64_t i = 0;
  auto put = [&](auto s, int rx) {
    for (int a = 0; a < RW; ++a)
      for (int b = 0; b < rx; ++b) p.y[(i + b) * n + r + a] = f2bf16(s[a][b] + bv[a]);
  };
  for (; i + RX <= m; i += RX) {
    float s[RW][RX];
    block_dots<RW, RX>(w, xf + i * k, k, s);
    put(s, RX);
  }
  switch (m - i) {  // the last 1..3 rows of x
    case 3: { float s[RW][3]; block_dots<RW, 3>(w, xf + i * k, k, s); put(s, 3); break; }
    case 2: { float s[RW][2]; block_dots<RW, 2>(w, xf + i * k, k, s); put(s, 2); break; }
    case 1: { float s[RW][1]; block_dots<RW, 1>(w, xf + i * k, k, s); put(s, 1); break; }
    default: break;
  }
}

void linear(const LinearParams& p) {
  constexpr int RW = 3;
  const int64_t k = p.k, m = p.m, n = p.n;
  std::vector<float> xf(size_t(m * k));
  widen_bf16(p.x, m * k, xf.data());
  // A tile of rows decoded at once: ~64 KiB of bf16, L2-resident while the
  // register blocks read it (RW rows against 4 rows of x at a time).
  const int64_t tile_rows = std::max<int64_t>(RW, ((int64_t(32) << 10) / std::max<int64_t>(k, 1)) / RW * RW);
  const int64_t tiles = (n + tile_rows - 1) / tile_rows;
  std::atomic<int64_t> bad{kNoError};
  parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
    std::vector<uint16_t> buf;
    for (int64_t t = t0; t < t1 && bad.load(std::memory_order_relaxed) == kNoError; ++t) {
      const int64_t r0 = t * tile_rows, r1 = std::min(n, r0 + tile_rows);
      const int64_t e0 = r0 * k, e1 = r1 * k;
      const int64_t c0 = e0 / kChunk, c1 = (e1 + kChunk - 1) / kChunk;
      buf.resize(size_t((c1 - c0) * kChunk));
      const int64_t next_end = t + 1 < t1 ? std::min(num_chunks(p.w.n), (std::min(n, r1 + tile_rows) * k + kChunk - 1) / kChunk) : c1;
      decode_chunks(p.w, c0, c1, bad, buf.data(), c0 * kChunk, next_end);
      if (bad.load(std::memory_order_relaxed) != kNoError) return;
      const uint16_t* w0 = buf.data() + (e0 - c0 * kChunk);
      int64_t r = r0;
      for (; r + RW <= r1; r += RW) rows_times_x<RW>(p, w0 + (r - r0) * k, xf.data(), r);
      for (; r < r1; ++r) rows_times_x<1>(p, w0 + (r - r0) * k, xf.data(), r);
    }
  });
  *p.w.first_bad_chunk = bad.load();
}

}  // namespace
}  // namespace llmpack::df11::LLMPACK_ISA_NS
