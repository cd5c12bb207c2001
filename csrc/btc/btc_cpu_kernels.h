// Body of the BTC CPU kernels, compiled once per ISA level (btc_cpu_<isa>.cpp
// defines LLMPACK_ISA_NS and includes this file). Layout and math: btc.h.
//
// One weight row at a time (rows split over the threads), tokens in blocks
// of 4 so each 32-element chunk of the row is expanded once for all of them.
// The integer core has four ways to form a chunk's sum of q * p, chosen per
// call (choose_dot):
//   bit-serial   sum_{i,j} 2^(i+j) popcount(W_i AND X_j) on the planes: the
//                paper's method, wbits * abits popcounts per chunk;
//   maddubs      planes expanded to 32 code bytes (one variable shift + AND per
//                plane, thanks to the bit order), u8 x s8 pairs into int16,
//                valid while 2 * qmax * pmax fits int16;
//   maddubs+shift  the same for 8-bit activations, p - 128 as s8, + 128 sum q;
//   madd16       codes widened to int16 (wbits = 8 with abits >= 7).
// Weight-only (abits = 16) expands the codes to fp32 and FMAs with x.
// Every core reads the weight as bit planes or as fields (btc.h; template
// parameter F): the fields layout expands in a few ops per chunk where the
// planes take ~5 per bit, so QuantLinear holds fields on the CPU.
// Per group the chunk sums are scaled (int -> fp32, exact below 2^24) into a
// vector accumulator; zero-point / offset corrections are a scalar pass per
// row, so the core itself is the exact integer. The corrections need the
// row's sum_g s_g Q_g: the SIMD cores form it from the codes they expand
// (kSqInCore), only the bit-serial core reads the code sums.
#pragma once
#ifndef LLMPACK_ISA_NS
#error "define LLMPACK_ISA_NS before including btc_cpu_kernels.h"
#endif

#include <bit>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "btc/btc.h"
#include "common/cpu_convert.h"
#include "common/cpu_simd.h"
#include "common/parallel.h"

namespace llmpack::btc::LLMPACK_ISA_NS {
namespace {

// kShifted: kMaddubsShift inside btc_linear, where the activation codes are
// stored pre-shifted (p ^ 0x80 = p - 128 as s8) and the 128 sum q term comes
// from the weight's code sums in the correction instead of per chunk.
enum class Dot : int { kBitSerial = 0, kMaddubs = 1, kMaddubsShift = 2, kMadd16 = 3, kShifted = 4 };

// Called once per group in the inner loops: inlined, with the hardware
// fp16 conversion where the level has it.
__attribute__((always_inline)) inline float load_f(const void* base, int64_t i, Dtype dt) {
  if (dt == Dtype::kF32) return static_cast<const float*>(base)[i];
  const uint16_t h = static_cast<const uint16_t*>(base)[i];
  if (dt == Dtype::kBF16) return bf16_to_f32(h);
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return f16_to_f32(h);
#endif
}

inline void store_f(void* base, int64_t i, float v, Dtype dt) {
  if (dt == Dtype::kF32) static_cast<float*>(base)[i] = v;
  else static_cast<uint16_t*>(base)[i] = dt == Dtype::kBF16 ? f32_to_bf16(v) : f32_to_f16(v);
}

// The 32 codes of one chunk (planes, or fields with F), in element order (portable).
template <int WB, bool F>
inline void expand_scalar(const uint32_t* chunk, uint8_t* q) {
  if constexpr (F) {
    fields_to_codes(reinterpret_cast<const uint8_t*>(chunk), WB, q);
  } else {
    planes_to_codes(chunk, WB, q);
  }
}

// A chunk's plane words for the bit-serial core: the planes themselves, or
// rebuilt from the fields into tmp.
template <int WB, bool F>
inline const uint32_t* chunk_planes(const uint32_t* chunk, uint32_t* tmp) {
  if constexpr (!F) {
    return chunk;
  } else {
    uint8_t q[32];
    expand_scalar<WB, true>(chunk, q);
    codes_to_planes(q, WB, tmp);
    return tmp;
  }
}

// sum over the chunk of q * p from the planes: the bit-serial core.
template <int WB>
inline int32_t chunk_bitserial(const uint32_t* w, const uint32_t* x, int abits) {
  int32_t s = 0;
  for (int j = 0; j < abits; ++j) {
    int32_t sj = 0;
    for (int i = 0; i < WB; ++i) sj += std::popcount(w[i] & x[j]) << i;
    s += sj << j;
  }
  return s;
}

#if defined(__AVX2__)
// Fields of W bits, v[j] holding bits [jW, (j+1)W) of the codes, OR'd in pairs
// until one is left: a tree of depth log2(WB), where Horner's q = 2q + plane
// is a chain of 2 WB dependent steps that keeps fewer chunks in flight
// (W4: ~10 -> ~7 cycles a chunk on Zen 3). Codes stay below 2^8, so a 16-bit
// shift never carries a bit into the next byte.
template <int N, int W>
__attribute__((always_inline)) inline __m256i combine_fields(const __m256i* v) {
  if constexpr (N == 1) {
    return v[0];
  } else {
    __m256i u[(N + 1) / 2];
    for (int j = 0; j < N / 2; ++j) u[j] = _mm256_or_si256(v[2 * j], _mm256_slli_epi16(v[2 * j + 1], W));
    if constexpr (N % 2 == 1) u[N / 2] = v[N - 1];
    return combine_fields<(N + 1) / 2, 2 * W>(u);
  }
}

// Lane l shifted right by l leaves element 4l + r's bit at bit 0 of byte r.
template <int WB>
__attribute__((always_inline)) inline __m256i expand_avx2(const uint32_t* words) {
  const __m256i shifts = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), ones = _mm256_set1_epi8(1);
  __m256i bits[WB];
  for (int i = 0; i < WB; ++i)
    bits[i] = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(words[i])), shifts), ones);
  return combine_fields<WB, 1>(bits);
}

template <int S>
__attribute__((always_inline)) inline __m256i shl_codes(__m256i v) {  // codes < 2^8: no carry into the next byte
  if constexpr (S == 0) return v;
  else return _mm256_slli_epi16(v, S);
}

// The fields layout (btc.h): a nibble field is one shift and one AND, a crumb
// field one variable 64-bit shift and one AND.
template <int WB>
__attribute__((always_inline)) inline __m256i expand_fields_avx2(const uint32_t* chunk) {
  constexpr int n4 = nibble_fields(WB), n2 = crumb_fields(WB), n1 = plane_fields(WB);
  const uint8_t* f = reinterpret_cast<const uint8_t*>(chunk);
  auto nibbles = [](const uint8_t* b) __attribute__((always_inline)) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F));
  };
  __m256i q = _mm256_setzero_si256();
  if constexpr (n4 >= 1) q = nibbles(f);
  if constexpr (n4 == 2) q = _mm256_or_si256(q, shl_codes<4>(nibbles(f + 16)));
  if constexpr (n2 == 1) {
    int64_t u;
    std::memcpy(&u, f + 16 * n4, 8);
    const __m256i c = _mm256_and_si256(_mm256_srlv_epi64(_mm256_set1_epi64x(u), _mm256_setr_epi64x(0, 2, 4, 6)),
                                       _mm256_set1_epi8(3));
    q = _mm256_or_si256(q, shl_codes<4 * n4>(c));
  }
  if constexpr (n1 == 1) {
    uint32_t w;
    std::memcpy(&w, f + 16 * n4 + 8 * n2, 4);
    q = _mm256_or_si256(q, shl_codes<4 * n4 + 2 * n2>(expand_avx2<1>(&w)));
  }
  return q;
}

template <int WB, bool F>
__attribute__((always_inline)) inline __m256i expand_chunk(const uint32_t* chunk) {
  if constexpr (F) return expand_fields_avx2<WB>(chunk);
  else return expand_avx2<WB>(chunk);
}

// Requests chunk c + 32 of a row: the hardware prefetcher alone left the
// loads waiting (W4A8 M=1 4096^2, one thread: ~1.7 -> ~1.2 ms). A prefetch
// past the end of the buffer is harmless (it never faults).
template <int WB>
__attribute__((always_inline)) inline void prefetch_ahead(const uint32_t* row, int64_t c) {
  _mm_prefetch(reinterpret_cast<const char*>(row + (c + 32) * WB), _MM_HINT_T0);
}

// Chunk c of a row, expanded, with the one 32 ahead requested.
template <int WB, bool F>
__attribute__((always_inline)) inline __m256i next_chunk(const uint32_t* row, int64_t c) {
  prefetch_ahead<WB>(row, c);
  return expand_chunk<WB, F>(row + c * WB);
}

inline __m256i hadd16(__m256i v) { return _mm256_madd_epi16(v, _mm256_set1_epi16(1)); }

// int32 lanes summing to the chunk's sum of q * p (p: 32 code bytes).
template <Dot D>
inline __m256i chunk_dot(__m256i q, const uint8_t* p) {
  const __m256i pv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
#if defined(__AVX512VNNI__)
  // u8 x s8 in one vpdpbusd, summed straight into int32: exact for every
  // wbits <= 8 (abits <= 7, or 8 shifted), where maddubs saturates int16.
  const __m256i zero = _mm256_setzero_si256();
  if constexpr (D == Dot::kMaddubs || D == Dot::kShifted) {
    return _mm256_dpbusd_epi32(zero, q, pv);
  } else if constexpr (D == Dot::kMaddubsShift) {  // q (p - 128) + 128 q
    const __m256i ps = _mm256_xor_si256(pv, _mm256_set1_epi8(char(0x80)));
    const __m256i qsum = _mm256_slli_epi32(_mm256_dpbusd_epi32(zero, q, _mm256_set1_epi8(1)), 7);
    return _mm256_add_epi32(_mm256_dpbusd_epi32(zero, q, ps), qsum);
  }
#endif
  if constexpr (D == Dot::kMaddubs || D == Dot::kShifted) {
    return hadd16(_mm256_maddubs_epi16(q, pv));
  } else if constexpr (D == Dot::kMaddubsShift) {  // q (p - 128) + 128 q
    const __m256i ps = _mm256_xor_si256(pv, _mm256_set1_epi8(char(0x80)));
    const __m256i qsum = _mm256_slli_epi32(hadd16(_mm256_maddubs_epi16(q, _mm256_set1_epi8(1))), 7);
    return _mm256_add_epi32(hadd16(_mm256_maddubs_epi16(q, ps)), qsum);
  } else {
    const __m256i q0 = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(q)), q1 = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(q, 1));
    const __m256i p0 = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(pv)), p1 = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(pv, 1));
    return _mm256_add_epi32(_mm256_madd_epi16(q0, p0), _mm256_madd_epi16(q1, p1));
  }
}

// acc + the chunk's int32 lanes. With AVX512-VNNI (the avx512_bf16 unit) a
// u8 x s8 chunk is one vpdpbusd into the accumulator: no int16 step, so no
// saturation bound on 2 qmax pmax, and half the ops of maddubs + madd + add.
template <Dot D>
__attribute__((always_inline)) inline __m256i dot_acc(__m256i acc, __m256i q, const uint8_t* p) {
#if defined(__AVX512VNNI__)
  if constexpr (D == Dot::kMaddubs || D == Dot::kShifted)
    return _mm256_dpbusd_epi32(acc, q, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#endif
  return _mm256_add_epi32(acc, chunk_dot<D>(q, p));
}

#if defined(__AVX512F__)
inline float hsum512(__m512 v) {
  return hsum256(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
}
#endif

inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}
#endif

// ---- per-row metadata and the corrections ---------------------------------------
// A row's group metadata, widened once per row into fp32 arrays (vector
// conversions), so the chunk loop only broadcasts s_g from memory and the
// corrections are dot products over the groups:
//   m_g = offset (W = s q + m) or -s_g z_g (W = s (q - z)), q_g = the code sum Q_g.
// Weight-only:  y = sum_g s_g F_g + dot(m, X_t)          (X_t,g: sum of x over group g)
// Integer acts: y = sx (sum_g s_g I_g - zx dot(s, q) + dot(m, Pc_t))
//               with Pc_t,g = P_t,g - zx len_g (P: the activation code sums),
// one formula for both offset forms.
struct RowMeta {
  std::vector<float> s, m, q;
  explicit RowMeta(int64_t groups) : s(size_t(groups)), m(size_t(groups)), q(size_t(groups)) {}
};

inline void widen_row(const void* base, int64_t off, int64_t n, Dtype dt, float* out) {
  if (dt == Dtype::kF32) std::memcpy(out, static_cast<const float*>(base) + off, size_t(n) * sizeof(float));
  else if (dt == Dtype::kBF16) widen_bf16(static_cast<const uint16_t*>(base) + off, n, out);
  else widen_f16(static_cast<const uint16_t*>(base) + off, n, out);
}

inline void load_row_meta(const Weight& w, int64_t n, bool with_q, RowMeta& r) {
  const int64_t G = w.groups, off = n * G;
  widen_row(w.scales, off, G, w.scale_dtype, r.s.data());
  if (w.zeros) {
    for (int64_t g = 0; g < G; ++g) r.m[size_t(g)] = -r.s[size_t(g)] * float(w.zeros[off + g]);
  } else {
    widen_row(w.offsets, off, G, w.scale_dtype, r.m.data());
  }
  if (with_q)
    for (int64_t g = 0; g < G; ++g) r.q[size_t(g)] = float(w.code_sums[off + g]);
}

// Requests row n's metadata (scales, zeros or offsets, code sums if used) a
// row ahead of load_row_meta: at group 32 it is half as many bytes again as
// the W4 codes, in three streams of a few lines per row, and the loads of the
// row's first use stalled on DRAM (W4A8 M = 1: load_row_meta ~40 % of the
// core's time in a profile).
inline void prefetch_row_meta(const Weight& w, int64_t n, bool with_q) {
  if (n >= w.n) return;
  const int64_t G = w.groups, off = n * G, sb = w.scale_dtype == Dtype::kF32 ? 4 : 2;
  auto lines = [](const void* base, int64_t from, int64_t bytes) {
    const char* b = static_cast<const char*>(base) + from;
    for (int64_t i = 0; i < bytes; i += 64) __builtin_prefetch(b + i, 0, 3);
    __builtin_prefetch(b + bytes - 1, 0, 3);
  };
  lines(w.scales, off * sb, G * sb);
  if (w.zeros) lines(w.zeros, off, G);
  else lines(w.offsets, off * sb, G * sb);
  if (with_q) lines(w.code_sums, off * 4, G * 4);
}

inline void finish(const LinearParams& p, int64_t t, int64_t n, float v) {
  if (p.bias) v += load_f(p.bias, n, p.y_dtype);
  store_f(p.y, t * p.w.n + n, v, p.y_dtype);
}

// ---- integer activations ------------------------------------------------------
#if defined(__AVX512VNNI__)
// W4 fields, two chunks per zmm: 32 bytes (byte j of chunk c holds elements
// j and j + 16) become the 64 codes of chunks c, c + 1 in element order, the
// order of the activation codes, in one qword permute (each 16-byte field
// twice), one variable shift (the copy for elements 16..31 by 4) and an AND.
__attribute__((always_inline)) inline __m512i expand_w4_pair(const uint32_t* chunks) {
  const __m512i v = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(chunks)));
  const __m512i dup = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3), v);
  return _mm512_and_si512(_mm512_srlv_epi64(dup, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4)), _mm512_set1_epi8(0x0F));
}

// W2 fields, two chunks per zmm: each chunk's 8-byte crumb field (byte j:
// elements j, j + 8, j + 16, j + 24 at bits 0, 2, 4, 6) broadcast to 4
// qwords, shifted by 0 / 2 / 4 / 6 and masked: the same order again.
__attribute__((always_inline)) inline __m512i expand_w2_pair(const uint32_t* chunks) {
  const __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(chunks)));
  const __m512i dup = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 0, 0, 0, 1, 1, 1, 1), v);
  return _mm512_and_si512(_mm512_srlv_epi64(dup, _mm512_setr_epi64(0, 2, 4, 6, 0, 2, 4, 6)), _mm512_set1_epi8(3));
}

// int_row with VNNI (D: kMaddubs or kShifted), two chunks per zmm: 64 MACs
// per vpdpbusd. With SQ it also forms the row's sum_g s_g Q_g (*sq) from the
// codes it has expanded (one more vpdpbusd, against ones), so this path never
// reads the code sums: at group 32 they are a quarter of the W4 bytes and half of
// W2's. W4 fields expand a pair at once (half the ops per chunk of
// the 256-bit path); other widths and the planes join two 256-bit
// expansions, so planes and fields still do the same arithmetic, bit for
// bit. A chunk left over from the pairs (odd group or row) takes 256 bits.
template <int WB, int T, Dot D, bool F, bool SQ>
__attribute__((always_inline)) inline void int_row_vnni512(const LinearParams& p, const float* srow, int64_t n,
                                                            int64_t t0, float* core, float* sq) {
  const Weight& w = p.w;
  const int64_t gw = group_words(w.group_size, w.k), real_words = (w.k + 31) / 32, padded = w.kw * 32;
  const uint32_t* row = w.planes + n * w.kw * WB;
  const uint8_t* codes = p.a.codes + t0 * padded;
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  __m512 sqv = _mm512_setzero_ps();
  const __m512i ones = _mm512_set1_epi8(1);
  auto pair = [&](int64_t c) __attribute__((always_inline)) {
    // Both ends of the pair 32 chunks ahead (a pair of 8 * WB bytes may straddle a line).
    _mm_prefetch(reinterpret_cast<const char*>(row + (c + 32) * WB), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(row + (c + 34) * WB) - 1, _MM_HINT_T0);
    if constexpr (F && WB == 4) return expand_w4_pair(row + c * 4);
    else if constexpr (F && WB == 2) return expand_w2_pair(row + c * 2);
    else {
      const __m256i lo = expand_chunk<WB, F>(row + c * WB), hi = expand_chunk<WB, F>(row + (c + 1) * WB);
      return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);  // a macro under clang: no template args inside
    }
  };
  // One chunk's lanes (upper half zero): its codes, then each token's dot.
  auto single_q = [&](int64_t c) __attribute__((always_inline)) {
    return _mm512_zextsi256_si512(expand_chunk<WB, F>(row + c * WB));
  };
  auto single = [&](__m512i q, int64_t c, int t) __attribute__((always_inline)) {
    return _mm512_zextsi256_si512(dot_acc<D>(_mm256_setzero_si256(), _mm512_castsi512_si256(q),
                                             codes + t * padded + c * 32));
  };
  if (gw == 1) {  // groups of 32: the two chunks of a pair have their own scales (lanes 0..7, 8..15)
    // Every pair ends in an FMA into the accumulators: two sets, alternating,
    // so the FMA latency chain (4 cycles a pair at T = 1) does not bound the loop.
    const __m512i halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    __m512 acc2[T], sqv2 = _mm512_setzero_ps();
    for (int t = 0; t < T; ++t) acc2[t] = _mm512_setzero_ps();
    auto step = [&](int64_t c, __m512* a, __m512& sa) __attribute__((always_inline)) {
      const __m512i q = pair(c);
      double s01;  // the pair's two fp32 scales as one 8-byte load (memcpy: no double* into float storage)
      std::memcpy(&s01, srow + c, sizeof s01);
      const __m512 s = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(_mm_castpd_ps(_mm_set_sd(s01))));
      if constexpr (SQ) sa = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q, ones)), s, sa);
      for (int t = 0; t < T; ++t) {
        const __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q,
                                              _mm512_loadu_si512(codes + t * padded + c * 32));
        a[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), s, a[t]);
      }
    };
    int64_t c = 0;
    for (; c + 4 <= real_words; c += 4) {
      step(c, acc, sqv);
      step(c + 2, acc2, sqv2);
    }
    if (c + 2 <= real_words) {
      step(c, acc, sqv);
      c += 2;
    }
    if (c < real_words) {
      const __m512i q = single_q(c);
      const __m512 s = _mm512_set1_ps(srow[c]);
      if constexpr (SQ)
        sqv2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q, ones)), s, sqv2);
      for (int t = 0; t < T; ++t) acc2[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(single(q, c, t)), s, acc2[t]);
    }
    sqv = _mm512_add_ps(sqv, sqv2);
    for (int t = 0; t < T; ++t) acc[t] = _mm512_add_ps(acc[t], acc2[t]);
  } else {
    for (int64_t g = 0; g < w.groups; ++g) {
      __m512i gi[T], gq = _mm512_setzero_si512();
      for (int t = 0; t < T; ++t) gi[t] = _mm512_setzero_si512();
      const int64_t c1 = std::min((g + 1) * gw, real_words);
      int64_t c = g * gw;
      for (; c + 2 <= c1; c += 2) {
        const __m512i q = pair(c);
        if constexpr (SQ) gq = _mm512_dpbusd_epi32(gq, q, ones);
        for (int t = 0; t < T; ++t)
          gi[t] = _mm512_dpbusd_epi32(gi[t], q, _mm512_loadu_si512(codes + t * padded + c * 32));
      }
      if (c < c1) {
        const __m512i q = single_q(c);
        if constexpr (SQ) gq = _mm512_dpbusd_epi32(gq, q, ones);
        for (int t = 0; t < T; ++t) gi[t] = _mm512_add_epi32(gi[t], single(q, c, t));
      }
      const __m512 s = _mm512_set1_ps(srow[g]);
      if constexpr (SQ) sqv = _mm512_fmadd_ps(_mm512_cvtepi32_ps(gq), s, sqv);
      for (int t = 0; t < T; ++t) acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(gi[t]), s, acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) core[t] = hsum512(acc[t]);
  if constexpr (SQ) *sq = hsum512(sqv);
}
#endif

// Tokens t0 .. t0 + T - 1 against weight row n: sum_g s_g I_g per token.
// With SQ the AVX2 cores also form the row's sum_g s_g Q_g (*sq) from the
// codes they expanded, so the code sums are never read (int_rows asks for it
// on a row's first token block only).
template <int WB, int T, Dot D, bool F, bool SQ>
__attribute__((noinline)) void int_row(const LinearParams& p, const uint32_t* xplanes, const float* srow,
                                       int64_t n, int64_t t0, float* core, float* sq) {
  const Weight& w = p.w;
  [[maybe_unused]] const int64_t gw = group_words(w.group_size, w.k), real_words = (w.k + 31) / 32,
                                 padded = w.kw * 32;  // unused by the generic level
  const uint32_t* row = w.planes + n * w.kw * WB;
#if defined(__AVX512VNNI__)
  if constexpr (D == Dot::kMaddubs || D == Dot::kShifted) {
    int_row_vnni512<WB, T, D, F, SQ>(p, srow, n, t0, core, sq);
    return;
  }
#endif
#if defined(__AVX2__)
  if constexpr (D != Dot::kBitSerial) {
    // Q_g: vpsadbw against zero sums each 8 code bytes into a qword (its
    // high half stays 0, so the int32 -> fp32 convert sees the sum and
    // zeros); three ops a chunk, off the tokens' critical path.
    const __m256i zero = _mm256_setzero_si256();
    __m256 acc[T], sqv = _mm256_setzero_ps();
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
    if (gw == 1) {  // groups of 32: one chunk per group, no inner loop
      for (int64_t c = 0; c < real_words; ++c) {
        const __m256i q = next_chunk<WB, F>(row, c);
        const __m256 s = _mm256_broadcast_ss(srow + c);
        if constexpr (SQ) sqv = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sad_epu8(q, zero)), s, sqv);
        for (int t = 0; t < T; ++t)
          acc[t] = _mm256_fmadd_ps(
              _mm256_cvtepi32_ps(dot_acc<D>(zero, q, p.a.codes + (t0 + t) * padded + c * 32)), s, acc[t]);
      }
    } else {
      for (int64_t g = 0; g < w.groups; ++g) {
        __m256i gi[T], gq = zero;
        for (int t = 0; t < T; ++t) gi[t] = zero;
        const int64_t c1 = std::min((g + 1) * gw, real_words);
        for (int64_t c = g * gw; c < c1; ++c) {
          const __m256i q = next_chunk<WB, F>(row, c);
          if constexpr (SQ) gq = _mm256_add_epi64(gq, _mm256_sad_epu8(q, zero));  // < 2^31 per lane
          for (int t = 0; t < T; ++t)
            gi[t] = dot_acc<D>(gi[t], q, p.a.codes + (t0 + t) * padded + c * 32);
        }
        const __m256 s = _mm256_broadcast_ss(srow + g);
        if constexpr (SQ) sqv = _mm256_fmadd_ps(_mm256_cvtepi32_ps(gq), s, sqv);
        for (int t = 0; t < T; ++t) acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(gi[t]), s, acc[t]);
      }
    }
    for (int t = 0; t < T; ++t) core[t] = hsum256(acc[t]);
    if constexpr (SQ) *sq = hsum256(sqv);
    return;
  }
#endif
  float acc[T] = {};
  uint32_t tmp[8];
  for (int64_t g = 0; g < w.groups; ++g) {
    int32_t gi[T] = {};
    const int64_t c1 = std::min((g + 1) * gw, real_words);
    for (int64_t c = g * gw; c < c1; ++c) {
      const uint32_t* words = chunk_planes<WB, F>(row + c * WB, tmp);  // once per chunk, not per token
      for (int t = 0; t < T; ++t)
        gi[t] += chunk_bitserial<WB>(words, xplanes + ((t0 + t) * w.kw + c) * p.a.abits, int(p.a.abits));
    }
    for (int t = 0; t < T; ++t) acc[t] += float(gi[t]) * srow[g];
  }
  for (int t = 0; t < T; ++t) core[t] = acc[t];
}

// ---- weight-only (fp32 activations) -------------------------------------------
#if defined(__AVX512F__)
// Chunk c's codes as fp32: elements 0..15 and 16..31. A W4 nibble field
// widens its 16 bytes to int32 once and splits the nibbles there.
template <int WB, bool F>
__attribute__((always_inline)) inline void chunk_f32x2(const uint32_t* row, int64_t c, __m512& lo, __m512& hi) {
  prefetch_ahead<WB>(row, c);
  if constexpr (F && WB == 4) {
    const __m512i a = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c * 4)));
    lo = _mm512_cvtepi32_ps(_mm512_and_si512(a, _mm512_set1_epi32(15)));
    hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(a, 4));
  } else {
    const __m256i q = expand_chunk<WB, F>(row + c * WB);
    lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(q)));
    hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(q, 1)));
  }
}

// float_row on 512-bit vectors: a chunk is two FMAs per token. Chunks
// alternate between two accumulator sets (per group, or per row at group
// 32, where each chunk's sum is scaled into the row's accumulator), so no
// single FMA / add latency chain runs through every chunk.
template <int WB, int T, bool F>
__attribute__((always_inline)) inline void float_row_avx512(const LinearParams& p, const float* srow, int64_t n,
                                                             int64_t t0, float* core) {
  const Weight& w = p.w;
  const int64_t gw = group_words(w.group_size, w.k), real_words = (w.k + 31) / 32, padded = w.kw * 32;
  const uint32_t* row = w.planes + n * w.kw * WB;
  const float* x = p.x + t0 * padded;
  __m512 acc0[T], acc1[T];
  for (int t = 0; t < T; ++t) acc0[t] = acc1[t] = _mm512_setzero_ps();
  auto dots = [&](int64_t c, __m512* out) __attribute__((always_inline)) {  // out[t] = chunk c's q * x, lanes
    __m512 lo, hi;
    chunk_f32x2<WB, F>(row, c, lo, hi);
    for (int t = 0; t < T; ++t) {
      const float* xt = x + t * padded + c * 32;
      out[t] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xt), _mm512_mul_ps(hi, _mm512_loadu_ps(xt + 16)));
    }
  };
  __m512 d0[T], d1[T];
  if (gw == 1) {
    int64_t c = 0;
    for (; c + 2 <= real_words; c += 2) {
      dots(c, d0);
      dots(c + 1, d1);
      const __m512 s0 = _mm512_set1_ps(srow[c]), s1 = _mm512_set1_ps(srow[c + 1]);
      for (int t = 0; t < T; ++t) {
        acc0[t] = _mm512_fmadd_ps(d0[t], s0, acc0[t]);
        acc1[t] = _mm512_fmadd_ps(d1[t], s1, acc1[t]);
      }
    }
    if (c < real_words) {
      dots(c, d0);
      for (int t = 0; t < T; ++t) acc0[t] = _mm512_fmadd_ps(d0[t], _mm512_set1_ps(srow[c]), acc0[t]);
    }
  } else {
    for (int64_t g = 0; g < w.groups; ++g) {
      __m512 g0[T], g1[T];
      for (int t = 0; t < T; ++t) g0[t] = g1[t] = _mm512_setzero_ps();
      const int64_t c1 = std::min((g + 1) * gw, real_words);
      int64_t c = g * gw;
      for (; c + 2 <= c1; c += 2) {
        dots(c, d0);
        dots(c + 1, d1);
        for (int t = 0; t < T; ++t) {
          g0[t] = _mm512_add_ps(g0[t], d0[t]);
          g1[t] = _mm512_add_ps(g1[t], d1[t]);
        }
      }
      if (c < c1) {
        dots(c, d0);
        for (int t = 0; t < T; ++t) g0[t] = _mm512_add_ps(g0[t], d0[t]);
      }
      const __m512 s = _mm512_set1_ps(srow[g]);
      __m512* a = g % 2 ? acc1 : acc0;
      for (int t = 0; t < T; ++t) a[t] = _mm512_fmadd_ps(_mm512_add_ps(g0[t], g1[t]), s, a[t]);
    }
  }
  for (int t = 0; t < T; ++t) core[t] = hsum512(_mm512_add_ps(acc0[t], acc1[t]));
}
#endif

template <int WB, int T, bool F>
__attribute__((noinline)) void float_row(const LinearParams& p, const float* srow, int64_t n, int64_t t0,
                                         float* core) {
  const Weight& w = p.w;
  const int64_t gw = group_words(w.group_size, w.k), real_words = (w.k + 31) / 32, padded = w.kw * 32;
  const uint32_t* row = w.planes + n * w.kw * WB;
#if defined(__AVX512F__)
  return float_row_avx512<WB, T, F>(p, srow, n, t0, core);
#endif
#if defined(__AVX2__)
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  // One chunk's sum of q * x per token, as a tree (the chain per chunk is one add).
  auto chunk = [&](int64_t c, __m256* out) __attribute__((always_inline)) {
    __m256 f0, f1, f2, f3;
    if constexpr (F && WB == 4) {
      // One nibble field (byte j: elements j and j + 16): widen its bytes to
      // int32 and split the nibbles there, without the 32-byte expansion.
      prefetch_ahead<WB>(row, c);
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c * WB));
      const __m256i a = _mm256_cvtepu8_epi32(v), b = _mm256_cvtepu8_epi32(_mm_srli_si128(v, 8));
      const __m256i low = _mm256_set1_epi32(15);
      f0 = _mm256_cvtepi32_ps(_mm256_and_si256(a, low));
      f1 = _mm256_cvtepi32_ps(_mm256_and_si256(b, low));
      f2 = _mm256_cvtepi32_ps(_mm256_srli_epi32(a, 4));
      f3 = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
    } else {
      const __m256i q = next_chunk<WB, F>(row, c);
      const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
      f0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
      f1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
      f2 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
      f3 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
    }
    for (int t = 0; t < T; ++t) {
      const float* x = p.x + (t0 + t) * padded + c * 32;
      const __m256 a = _mm256_fmadd_ps(f0, _mm256_loadu_ps(x), _mm256_mul_ps(f1, _mm256_loadu_ps(x + 8)));
      const __m256 b = _mm256_fmadd_ps(f2, _mm256_loadu_ps(x + 16), _mm256_mul_ps(f3, _mm256_loadu_ps(x + 24)));
      out[t] = _mm256_add_ps(out[t], _mm256_add_ps(a, b));
    }
  };
  if (gw == 1) {  // groups of 32: one chunk per group, no inner loop
    for (int64_t c = 0; c < real_words; ++c) {
      __m256 ga[T];
      for (int t = 0; t < T; ++t) ga[t] = _mm256_setzero_ps();
      chunk(c, ga);
      const __m256 s = _mm256_broadcast_ss(srow + c);
      for (int t = 0; t < T; ++t) acc[t] = _mm256_fmadd_ps(ga[t], s, acc[t]);
    }
  } else {
    for (int64_t g = 0; g < w.groups; ++g) {
      __m256 ga[T];
      for (int t = 0; t < T; ++t) ga[t] = _mm256_setzero_ps();
      const int64_t c1 = std::min((g + 1) * gw, real_words);
      for (int64_t c = g * gw; c < c1; ++c) chunk(c, ga);
      const __m256 s = _mm256_broadcast_ss(srow + g);
      for (int t = 0; t < T; ++t) acc[t] = _mm256_fmadd_ps(ga[t], s, acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) core[t] = hsum256(acc[t]);
#else
  float acc[T] = {};
  uint8_t q[32];
  for (int64_t g = 0; g < w.groups; ++g) {
    float ga[T] = {};
    const int64_t c1 = std::min((g + 1) * gw, real_words);
    for (int64_t c = g * gw; c < c1; ++c) {
      expand_scalar<WB, F>(row + c * WB, q);
      for (int t = 0; t < T; ++t) {
        const float* x = p.x + (t0 + t) * padded + c * 32;
        for (int e = 0; e < 32; ++e) ga[t] += float(q[e]) * x[e];
      }
    }
    for (int t = 0; t < T; ++t) acc[t] += ga[t] * srow[g];
  }
  for (int t = 0; t < T; ++t) core[t] = acc[t];
#endif
}

// The fastest exact chunk method this level has for (wbits, abits); see the
// crossover table in docs/results/btc_cpu.txt.
// LLMPACK_BTC_DOT=bitserial|maddubs|madd16 (read once) forces a method where
// it is exact, for the benchmark's crossover table.
inline int forced_dot() {
  static const int forced = [] {
    const char* v = std::getenv("LLMPACK_BTC_DOT");
    if (!v) return -1;
    const std::string s(v);
    return s == "bitserial" ? 0 : s == "maddubs" ? 1 : s == "madd16" ? 3 : -1;
  }();
  return forced;
}

inline Dot choose_dot(int64_t wbits, int64_t abits) {
#if defined(__AVX2__)
  const int forced = forced_dot();
  if (forced == 0) return Dot::kBitSerial;
  if (forced == 3) return Dot::kMadd16;
  const int64_t qmax = (int64_t(1) << wbits) - 1, pmax = (int64_t(1) << abits) - 1;
#if defined(__AVX512VNNI__)
  (void)qmax, (void)pmax;
  return abits <= 7 ? Dot::kMaddubs : Dot::kMaddubsShift;
#endif
  if (abits <= 7 && 2 * qmax * pmax <= 32767) return Dot::kMaddubs;
  if (abits == 8 && wbits <= 7) return Dot::kMaddubsShift;
  return Dot::kMadd16;
#else
  (void)wbits, (void)abits;
  return Dot::kBitSerial;
#endif
}

// Whether int_row forms sum_g s_g Q_g itself (the SIMD cores, on a row's
// first token block, unless the caller gave scaled_sums) instead of int_rows reading the code
// sums: at group 32 those are 4 bytes per 32 weights, a fifth of the W4 bytes
// and a third of W2's, and M = 1 is bound by the bytes read.
template <Dot D>
constexpr bool kSqInCore =
#if defined(__AVX2__)
    D != Dot::kBitSerial;
#else
    false;
#endif

// pc [m, groups]: P - zx len per token and group (see RowMeta).
template <int WB, Dot D, bool F>
void int_rows(const LinearParams& p, const uint32_t* xplanes, const float* pc) {
  const int64_t G = p.w.groups;
  // The caller's scaled sums (QuantLinear caches them) spare both the code
  // sums' bytes and the in-core vpsadbw: ~1.05-1.25x at M = 1 on Zen 3.
  const bool given = p.w.scaled_sums != nullptr, in_core = kSqInCore<D> && !given;
  parallel_for(0, p.w.n, grain_for(p.w.kw * 32 * p.m), [&](int64_t n0, int64_t n1) {
    float core[4];
    RowMeta r(G);
    const bool read_q = !given && !in_core;
    for (int64_t n = n0; n < n1; ++n) {
      prefetch_row_meta(p.w, n + 1, read_q);
      load_row_meta(p.w, n, read_q, r);
      // else set by the row's first int_row
      float sq = given ? p.w.scaled_sums[n] : read_q ? dot_f32(r.s.data(), r.q.data(), G) : 0.f;
      const float shift = D == Dot::kShifted ? 128.f : 0.f;  // the cores summed q (p - 128)
      // Tokens t .. t + T - 1; the row's first block also forms sq when in_core.
      auto block = [&](auto tokens, int64_t t) {
        constexpr int T = decltype(tokens)::value;
        if (in_core && t == 0) int_row<WB, T, D, F, kSqInCore<D>>(p, xplanes, r.s.data(), n, t, core, &sq);
        else int_row<WB, T, D, F, false>(p, xplanes, r.s.data(), n, t, core, &sq);
        for (int i = 0; i < T; ++i)
          finish(p, t + i, n,
                 p.a.scales[t + i] * (core[i] + (shift - float(p.a.zeros[t + i])) * sq +
                                      dot_f32(r.m.data(), pc + (t + i) * G, G)));
      };
      int64_t t = 0;
      for (; t + 4 <= p.m; t += 4) block(std::integral_constant<int, 4>{}, t);
      for (; t < p.m; ++t) block(std::integral_constant<int, 1>{}, t);
    }
  });
}

// xsums [m, groups]: each token's sum of x over each group.
template <int WB, bool F>
void float_rows(const LinearParams& p, const float* xsums) {
  const int64_t G = p.w.groups;
  parallel_for(0, p.w.n, grain_for(p.w.kw * 32 * p.m), [&](int64_t n0, int64_t n1) {
    float core[4];
    RowMeta r(G);
    for (int64_t n = n0; n < n1; ++n) {
      prefetch_row_meta(p.w, n + 1, false);
      load_row_meta(p.w, n, false, r);
      int64_t t = 0;
      for (; t + 4 <= p.m; t += 4) {
        float_row<WB, 4, F>(p, r.s.data(), n, t, core);
        for (int i = 0; i < 4; ++i) finish(p, t + i, n, core[i] + dot_f32(r.m.data(), xsums + (t + i) * G, G));
      }
      for (; t < p.m; ++t) {
        float_row<WB, 1, F>(p, r.s.data(), n, t, core);
        finish(p, t, n, core[0] + dot_f32(r.m.data(), xsums + t * G, G));
      }
    }
  });
}

template <int WB, bool F>
void int_dispatch(const LinearParams& p, const uint32_t* xplanes, const float* pc, Dot d) {
  switch (d) {
    case Dot::kBitSerial: return int_rows<WB, Dot::kBitSerial, F>(p, xplanes, pc);
#if defined(__AVX2__)
    case Dot::kMaddubs: return int_rows<WB, Dot::kMaddubs, F>(p, xplanes, pc);
    case Dot::kMaddubsShift: return int_rows<WB, Dot::kMaddubsShift, F>(p, xplanes, pc);
    case Dot::kShifted: return int_rows<WB, Dot::kShifted, F>(p, xplanes, pc);
    case Dot::kMadd16: return int_rows<WB, Dot::kMadd16, F>(p, xplanes, pc);
#else
    default: return int_rows<WB, Dot::kBitSerial, F>(p, xplanes, pc);
#endif
  }
}

template <int WB>
void linear_wb(const LinearParams& p) {
  if (p.a.abits == 16) {
    // Per-(token, group) sums of x for the offsets / zero points.
    std::vector<float> xsums(size_t(p.m * p.w.groups), 0.f);
    const int64_t padded = p.w.kw * 32;
    for (int64_t t = 0; t < p.m; ++t)
      for (int64_t g = 0; g < p.w.groups; ++g) {
        const int64_t k0 = p.w.group_size > 0 ? g * p.w.group_size : 0, len = group_len(g, p.w.group_size, p.w.k);
        float s = 0.f;
        for (int64_t i = 0; i < len; ++i) s += p.x[t * padded + k0 + i];
        xsums[t * p.w.groups + g] = s;
      }
    return p.w.fields ? float_rows<WB, true>(p, xsums.data()) : float_rows<WB, false>(p, xsums.data());
  }
  // Planes of the activations, for the bit-serial method (rebuilt from the codes).
  std::vector<uint32_t> xplanes;
  const Dot d = choose_dot(p.w.wbits, p.a.abits);
  if (d == Dot::kBitSerial) {
    const int64_t padded = p.w.kw * 32, ab = p.a.abits;
    xplanes.assign(size_t(p.m * p.w.kw * ab), 0u);
    for (int64_t t = 0; t < p.m; ++t)
      for (int64_t c = 0; c < p.w.kw; ++c)
        codes_to_planes(p.a.codes + t * padded + c * 32, ab, xplanes.data() + (t * p.w.kw + c) * ab);
  }
  std::vector<float> pc(size_t(p.m * p.w.groups));
  for (int64_t t = 0; t < p.m; ++t)
    for (int64_t g = 0; g < p.w.groups; ++g)
      pc[size_t(t * p.w.groups + g)] = float(p.a.code_sums[t * p.w.groups + g]) -
                                       float(p.a.zeros[t]) * float(group_len(g, p.w.group_size, p.w.k));
  if (d == Dot::kMaddubsShift) {  // 8-bit activations: shift them once here, not per chunk and row
    std::vector<uint8_t> shifted(size_t(p.m * p.w.kw * 32));
    for (size_t i = 0; i < shifted.size(); ++i) shifted[i] = p.a.codes[i] ^ 0x80;
    LinearParams q = p;
    q.a.codes = shifted.data();
    return p.w.fields ? int_dispatch<WB, true>(q, xplanes.data(), pc.data(), Dot::kShifted)
                      : int_dispatch<WB, false>(q, xplanes.data(), pc.data(), Dot::kShifted);
  }
  if (p.w.fields) int_dispatch<WB, true>(p, xplanes.data(), pc.data(), d);
  else int_dispatch<WB, false>(p, xplanes.data(), pc.data(), d);
}

void linear(const LinearParams& p) {
  switch (p.w.wbits) {
    case 1: return linear_wb<1>(p);
    case 2: return linear_wb<2>(p);
    case 3: return linear_wb<3>(p);
    case 4: return linear_wb<4>(p);
    case 5: return linear_wb<5>(p);
    case 6: return linear_wb<6>(p);
    case 7: return linear_wb<7>(p);
    default: return linear_wb<8>(p);
  }
}

// ---- the exact integer core, per group (test-facing) ---------------------------
template <int WB>
void matmul_int_wb(const IntParams& p) {
  const int64_t gw = group_words(p.group_size, p.k), real_words = (p.k + 31) / 32, padded = p.kw * 32;
  [[maybe_unused]] const Dot d = choose_dot(p.wbits, p.abits);
  parallel_for(0, p.n, grain_for(p.kw * 32 * p.m), [&](int64_t n0, int64_t n1) {
    std::vector<uint32_t> xw(size_t(p.abits));
    for (int64_t n = n0; n < n1; ++n) {
      const uint32_t* row = p.w_planes + n * p.kw * WB;
      for (int64_t t = 0; t < p.m; ++t) {
        const uint8_t* codes = p.x_codes + t * padded;
        for (int64_t g = 0; g < p.groups; ++g) {
          int32_t s = 0;
          const int64_t c1 = std::min((g + 1) * gw, real_words);
#if defined(__AVX2__)
          if (d != Dot::kBitSerial) {
            __m256i acc = _mm256_setzero_si256();
            for (int64_t c = g * gw; c < c1; ++c) {
              const __m256i q = expand_avx2<WB>(row + c * WB);
              acc = _mm256_add_epi32(acc, d == Dot::kMaddubs        ? chunk_dot<Dot::kMaddubs>(q, codes + c * 32)
                                          : d == Dot::kMaddubsShift ? chunk_dot<Dot::kMaddubsShift>(q, codes + c * 32)
                                                                    : chunk_dot<Dot::kMadd16>(q, codes + c * 32));
            }
            s = hsum_i32(acc);
          } else
#endif
          {
            for (int64_t c = g * gw; c < c1; ++c) {
              codes_to_planes(codes + c * 32, p.abits, xw.data());
              s += chunk_bitserial<WB>(row + c * WB, xw.data(), int(p.abits));
            }
          }
          p.out[(t * p.n + n) * p.groups + g] = s;
        }
      }
    }
  });
}

void matmul_int(const IntParams& p) {
  switch (p.wbits) {
    case 1: return matmul_int_wb<1>(p);
    case 2: return matmul_int_wb<2>(p);
    case 3: return matmul_int_wb<3>(p);
    case 4: return matmul_int_wb<4>(p);
    case 5: return matmul_int_wb<5>(p);
    case 6: return matmul_int_wb<6>(p);
    case 7: return matmul_int_wb<7>(p);
    default: return matmul_int_wb<8>(p);
  }
}

}  // namespace
}  // namespace llmpack::btc::LLMPACK_ISA_NS
