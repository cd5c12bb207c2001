// Body of the paged decode-attention CPU kernel, compiled once per ISA level
// (kvcache_cpu_<isa>.cpp defines LLMPACK_ISA_NS and includes this file).
// One task per (sequence, kv-head): the `group` query heads that share a
// kv-head are handled together, so each K and V row is read and widened to
// fp32 once for all of them. Three passes over the used slots: logits (and
// their max), exponentials (and their sum), then the weighted sum of V; the
// probabilities of the middle pass are what `scores` sums per kv-head.
#pragma once
#ifndef LLMPACK_ISA_NS
#error "define LLMPACK_ISA_NS before including kvcache_cpu_kernels.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "common/cpu_convert.h"
#include "common/parallel.h"
#include "kvcache/kvcache.h"

namespace llmpack::kvcache::LLMPACK_ISA_NS {
namespace {

// A row of `d` values of the pool's dtype as fp32 (fp32 rows are used in place).
inline const float* widen(const void* base, int64_t row, int64_t d, Dtype dt, float* buf) {
  if (dt == Dtype::kF32) return static_cast<const float*>(base) + row * d;
  const uint16_t* h = static_cast<const uint16_t*>(base) + row * d;
  if (dt == Dtype::kBF16) {
    for (int64_t i = 0; i < d; ++i) buf[i] = bf16_to_f32(h[i]);  // vectorised by the compiler
    return buf;
  }
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= d; i += 8)
    _mm256_storeu_ps(buf + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
#endif
  for (; i < d; ++i) buf[i] = f16_to_f32(h[i]);
  return buf;
}

inline void narrow(const float* x, int64_t d, Dtype dt, void* base, int64_t row) {
  if (dt == Dtype::kF32) {
    std::memcpy(static_cast<float*>(base) + row * d, x, size_t(d) * sizeof(float));
    return;
  }
  uint16_t* h = static_cast<uint16_t*>(base) + row * d;
  for (int64_t i = 0; i < d; ++i) h[i] = dt == Dtype::kBF16 ? f32_to_bf16(x[i]) : f32_to_f16(x[i]);
}

#if defined(__AVX2__)
inline float hsum(__m256 t) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}
#endif

// Float sums are not reassociated by the compiler, so the dot product is
// written with independent vector accumulators.
inline float dot(const float* a, const float* b, int64_t d) {
  int64_t i = 0;
  float s = 0.f;
#if defined(__AVX512F__)
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  for (; i + 32 <= d; i += 32) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), a1);
  }
  for (; i + 16 <= d; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), a0);
  const __m512 t = _mm512_add_ps(a0, a1);  // (not _mm512_reduce_add_ps: GCC 12 warns on its undefined lanes)
  s = hsum(_mm256_add_ps(_mm512_castps512_ps256(t), _mm512_extractf32x8_ps(t, 1)));
#elif defined(__AVX2__)
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; i + 16 <= d; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), a1);
  }
  for (; i + 8 <= d; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
  s = hsum(_mm256_add_ps(a0, a1));
#else
  float p[4] = {0.f, 0.f, 0.f, 0.f};
  for (; i + 4 <= d; i += 4)
    for (int j = 0; j < 4; ++j) p[j] += a[i + j] * b[i + j];
  s = (p[0] + p[1]) + (p[2] + p[3]);
#endif
  for (; i < d; ++i) s += a[i] * b[i];
  return s;
}

void attend(const DecodeParams& p, int64_t b, int64_t h, std::vector<float>& ws) {
  const int64_t d = p.head_dim, group = p.num_heads / p.num_kv_heads, ps = p.page_size;
  const int64_t len = p.lengths[b * p.num_kv_heads + h];
  const int32_t* table = p.tables + (b * p.num_kv_heads + h) * p.max_pages;
  const int64_t hq0 = h * group;
  // Workspace: q (scaled) [group, d], one widened row [d], accumulators
  // [group, d], 1 / softmax sums [group], probabilities [group, len].
  ws.resize(size_t(group * (2 * d + 1) + d + group * std::max<int64_t>(len, 1)));
  float* qf = ws.data();
  float* row = qf + group * d;
  float* acc = row + d;
  float* inv_sum = acc + group * d;
  float* prob = inv_sum + group;
  for (int64_t g = 0; g < group; ++g) {
    const float* q = widen(p.q, (b * p.num_heads + hq0 + g), d, p.dtype, row);
    for (int64_t i = 0; i < d; ++i) qf[g * d + i] = q[i] * p.scale;
  }
  float* scores = p.scores ? p.scores + (b * p.num_kv_heads + h) * p.max_pages * ps : nullptr;
  if (scores) std::fill(scores, scores + p.max_pages * ps, 0.f);
  std::fill(acc, acc + group * d, 0.f);
  if (len == 0) {  // nothing cached: the output is 0 (no slot to attend)
    for (int64_t g = 0; g < group; ++g) narrow(acc + g * d, d, p.dtype, p.out, b * p.num_heads + hq0 + g);
    return;
  }
  // 1. logits q . k for every used slot.
  for (int64_t t = 0; t < len; ++t) {
    const float* k = widen(p.k_pages, int64_t(table[t / ps]) * ps + t % ps, d, p.dtype, row);
    for (int64_t g = 0; g < group; ++g) prob[g * len + t] = dot(qf + g * d, k, d);
  }
  // 2. max-subtracted exponentials; 1 / sum per query head.
  for (int64_t g = 0; g < group; ++g) {
    float* pg = prob + g * len;
    const float mx = *std::max_element(pg, pg + len);
    float sum = 0.f;
    for (int64_t t = 0; t < len; ++t) {
      pg[t] = std::exp(pg[t] - mx);
      sum += pg[t];
    }
    inv_sum[g] = 1.f / sum;
  }
  // 3. sum_t p_t v_t, and the per-kv-head scores.
  for (int64_t t = 0; t < len; ++t) {
    const float* v = widen(p.v_pages, int64_t(table[t / ps]) * ps + t % ps, d, p.dtype, row);
    float st = 0.f;
    for (int64_t g = 0; g < group; ++g) {
      const float w = prob[g * len + t] * inv_sum[g];
      st += w;
      float* a = acc + g * d;
      for (int64_t i = 0; i < d; ++i) a[i] += w * v[i];  // vectorised by the compiler
    }
    if (scores) scores[t] = st;
  }
  for (int64_t g = 0; g < group; ++g) narrow(acc + g * d, d, p.dtype, p.out, b * p.num_heads + hq0 + g);
}

void decode(const DecodeParams& p) {
  parallel_for(0, p.batch * p.num_kv_heads, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> ws;
    for (int64_t t = t0; t < t1; ++t) attend(p, t / p.num_kv_heads, t % p.num_kv_heads, ws);
  });
}

}  // namespace
}  // namespace llmpack::kvcache::LLMPACK_ISA_NS
