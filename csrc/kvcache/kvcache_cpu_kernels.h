// Body of the paged decode-attention CPU kernel, compiled once per ISA level
// (kvcache_cpu_<isa>.cpp defines LLMPACK_ISA_NS and includes this file).
// One task per (sequence, kv-head), split over its slots when there are too
// few tasks for the threads: the `group` query heads that share a kv-head
// are handled together, so each K and V row is read and widened to fp32 once
// for all of them. Three passes over a split's slots: logits (and their
// max), exponentials (and their sum), then the weighted sum of V; a
// log-sum-exp merge joins the splits, and the normalised probabilities are
// what `scores` sums per kv-head.
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
#include "common/cpu_simd.h"
#include "common/parallel.h"
#include "kvcache/kvcache.h"

namespace llmpack::kvcache::LLMPACK_ISA_NS {
namespace {

// A row of `d` values of the pool's dtype as fp32 (fp32 rows are used in place).
inline const float* widen(const void* base, int64_t row, int64_t d, Dtype dt, float* buf) {
  if (dt == Dtype::kF32) return static_cast<const float*>(base) + row * d;
  const uint16_t* h = static_cast<const uint16_t*>(base) + row * d;
  if (dt == Dtype::kBF16) {
    int64_t i = 0;
#if defined(__AVX2__)
    for (; i + 8 <= d; i += 8) {  // bf16 -> fp32 is a 16-bit shift into the high half
      const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i)));
      _mm256_storeu_ps(buf + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
#endif
    for (; i < d; ++i) buf[i] = bf16_to_f32(h[i]);
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
  s = hsum256(_mm256_add_ps(_mm512_castps512_ps256(t), _mm512_extractf32x8_ps(t, 1)));
#elif defined(__AVX2__)
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; i + 16 <= d; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), a1);
  }
  for (; i + 8 <= d; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
  s = hsum256(_mm256_add_ps(a0, a1));
#else
  float p[4] = {0.f, 0.f, 0.f, 0.f};
  for (; i + 4 <= d; i += 4)
    for (int j = 0; j < 4; ++j) p[j] += a[i + j] * b[i + j];
  s = (p[0] + p[1]) + (p[2] + p[3]);
#endif
  for (; i < d; ++i) s += a[i] * b[i];
  return s;
}

#if defined(__AVX2__)
// 8 values of the pool's dtype at p, as fp32.
template <Dtype DT>
inline __m256 load8(const void* base, int64_t i) {
  if constexpr (DT == Dtype::kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(base) + i);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i));
    if constexpr (DT == Dtype::kBF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    else return _mm256_cvtph_ps(h);
  }
}

template <Dtype DT>
inline float value_at(const void* base, int64_t i) {
  if constexpr (DT == Dtype::kF32) return static_cast<const float*>(base)[i];
  else if constexpr (DT == Dtype::kBF16) return bf16_to_f32(static_cast<const uint16_t*>(base)[i]);
  else return f16_to_f32(static_cast<const uint16_t*>(base)[i]);
}

// Logits of up to 8 slots (rows[0..nb), fp32) for one query q: one vector
// accumulator per slot, reduced together (no horizontal sum per slot).
inline void dot8(const float* q, const float* const (&rows)[8], int nb, int64_t d, float* out) {
  __m256 acc[8];
  for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= d; i += 8) {
    const __m256 qv = _mm256_loadu_ps(q + i);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(rows[j] + i), qv, acc[j]);
  }
  alignas(32) float sums[8];
  _mm256_store_ps(sums, hsum8x8(acc));
  for (int j = 0; j < nb; ++j) {
    float s = sums[j];
    for (int64_t k = i; k < d; ++k) s += q[k] * rows[j][k];
    out[j] = s;
  }
}

// out[g * d + c] += sum_t w[g * stride + t] * v_t[c] for G heads, columns
// [c0, c0 + 8 * C): the G x C accumulators stay in registers over all slots,
// and each V element is loaded (and widened) once per G heads.
template <Dtype DT, int G, int C>
inline void weighted_v_block(const void* v_pages, const int64_t* rows, int64_t n, const float* w, int64_t stride,
                             int64_t d, int64_t c0, float* out) {
  __m256 acc[G][C];
  for (int g = 0; g < G; ++g)
    for (int c = 0; c < C; ++c) acc[g][c] = _mm256_setzero_ps();
  for (int64_t t = 0; t < n; ++t) {
    const int64_t base = rows[t] * d + c0;
    __m256 v[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) v[c] = load8<DT>(v_pages, base + 8 * c);
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) {
      const __m256 wg = _mm256_broadcast_ss(w + g * stride + t);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[g][c] = _mm256_fmadd_ps(v[c], wg, acc[g][c]);
    }
  }
  for (int g = 0; g < G; ++g)
    for (int c = 0; c < C; ++c) _mm256_storeu_ps(out + g * d + c0 + 8 * c, acc[g][c]);
}

// All columns that fill whole 8-wide vectors, for heads [g0, g0 + G); returns
// the first column left over (d % 8 columns, done by the caller).
template <Dtype DT, int G>
inline int64_t weighted_v_heads(const void* v_pages, const int64_t* rows, int64_t n, const float* w, int64_t stride,
                                int64_t d, float* out) {
  constexpr int C = G == 1 ? 8 : G == 2 ? 4 : 2;  // <= 8 accumulators + C loads live
  int64_t c0 = 0;
  for (; c0 + 8 * C <= d; c0 += 8 * C) weighted_v_block<DT, G, C>(v_pages, rows, n, w, stride, d, c0, out);
  for (; c0 + 8 <= d; c0 += 8) weighted_v_block<DT, G, 1>(v_pages, rows, n, w, stride, d, c0, out);
  return c0;
}

template <Dtype DT>
void weighted_v(const void* v_pages, const int64_t* rows, int64_t n, const float* w, int64_t stride, int64_t d,
                int64_t group, float* acc) {
  for (int64_t g0 = 0; g0 < group;) {
    const int64_t left = group - g0;
    const float* wg = w + g0 * stride;
    float* ag = acc + g0 * d;
    int64_t c0;
    int step;
    if (left >= 4) c0 = weighted_v_heads<DT, 4>(v_pages, rows, n, wg, stride, d, ag), step = 4;
    else if (left == 3) c0 = weighted_v_heads<DT, 3>(v_pages, rows, n, wg, stride, d, ag), step = 3;
    else if (left == 2) c0 = weighted_v_heads<DT, 2>(v_pages, rows, n, wg, stride, d, ag), step = 2;
    else c0 = weighted_v_heads<DT, 1>(v_pages, rows, n, wg, stride, d, ag), step = 1;
    if (c0 < d) {  // the d % 8 columns left
      for (int g = 0; g < step; ++g)
        for (int64_t c = c0; c < d; ++c) ag[g * d + c] = 0.f;
      for (int64_t t = 0; t < n; ++t)
        for (int g = 0; g < step; ++g) {
          const float wt = wg[g * stride + t];
          for (int64_t c = c0; c < d; ++c) ag[g * d + c] += wt * value_at<DT>(v_pages, rows[t] * d + c);
        }
    }
    g0 += step;
  }
}
#endif

// One split of one (sequence, kv-head): slots [t0, t1). Writes, per query
// head g of the group, the split's max logit m[g], sum of exp(logit - m[g])
// sum[g], and unnormalised sum_t exp(logit - m[g]) v_t into acc[g * d ..];
// with scores, exp(logit - m[g]) per slot into prob[g * len + t]. The merge
// (below) rescales the splits to one softmax (log-sum-exp).
struct Split {
  int64_t task, t0, t1;
};

void attend_split(const DecodeParams& p, const Split& sp, float* m, float* sum, float* acc, float* prob_all,
                  std::vector<float>& ws, std::vector<int64_t>& rows_ws) {
  const int64_t d = p.head_dim, group = p.num_heads / p.num_kv_heads, ps = p.page_size;
  const int64_t b = sp.task / p.num_kv_heads, h = sp.task % p.num_kv_heads, len = sp.t1 - sp.t0;
  const int32_t* table = p.tables + sp.task * p.max_pages;
  const int64_t full_len = p.lengths[sp.task];
  // Workspace: q (scaled) [group, d], 8 widened rows [8, d], probabilities
  // [group, len] (when not kept for scores); each slot's pool row [len].
  const int64_t prob_at = group * d + 8 * d;
  ws.resize(size_t(prob_at + (prob_all ? 0 : group * len)));
  rows_ws.resize(size_t(len));
  float* qf = ws.data();
  float* kbuf = qf + group * d;
  int64_t* rows = rows_ws.data();
  // prob[g * stride + (t - t0)]: this split's probabilities.
  float* prob = prob_all ? prob_all + sp.t0 : ws.data() + prob_at;
  const int64_t stride = prob_all ? full_len : len;
  for (int64_t t = 0; t < len; ++t) {
    const int64_t slot = sp.t0 + t;
    rows[t] = int64_t(table[slot / ps]) * ps + slot % ps;
  }
  for (int64_t g = 0; g < group; ++g) {
    const float* q = widen(p.q, b * p.num_heads + h * group + g, d, p.dtype, kbuf);
    for (int64_t i = 0; i < d; ++i) qf[g * d + i] = q[i] * p.scale;
  }
#if defined(__AVX2__)
  for (int64_t t = 0; t < len; t += 8) {  // 1. logits, 8 slots at a time
    const int nb = static_cast<int>(std::min<int64_t>(8, len - t));
    const float* kr[8];
    for (int j = 0; j < 8; ++j) kr[j] = widen(p.k_pages, rows[t + std::min(j, nb - 1)], d, p.dtype, kbuf + j * d);
    for (int64_t g = 0; g < group; ++g) dot8(qf + g * d, kr, nb, d, prob + g * stride + t);
  }
#else
  for (int64_t t = 0; t < len; ++t) {  // 1. logits
    const float* k = widen(p.k_pages, rows[t], d, p.dtype, kbuf);
    for (int64_t g = 0; g < group; ++g) prob[g * stride + t] = dot(qf + g * d, k, d);
  }
#endif
  for (int64_t g = 0; g < group; ++g) {  // 2. exponentials against the split's max
    float* pg = prob + g * stride;
    const float mx = *std::max_element(pg, pg + len);
    float s = 0.f;
    int64_t t = 0;
#if defined(__AVX2__)
    const __m256 mv = _mm256_set1_ps(mx);
    __m256 sv = _mm256_setzero_ps();
    for (; t + 8 <= len; t += 8) {
      const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(pg + t), mv));
      _mm256_storeu_ps(pg + t, e);
      sv = _mm256_add_ps(sv, e);
    }
    s = hsum256(sv);
#endif
    for (; t < len; ++t) {
      pg[t] = std::exp(pg[t] - mx);
      s += pg[t];
    }
    m[g] = mx;
    sum[g] = s;
  }
#if defined(__AVX2__)  // 3. weighted V
  if (p.dtype == Dtype::kF32) weighted_v<Dtype::kF32>(p.v_pages, rows, len, prob, stride, d, group, acc);
  else if (p.dtype == Dtype::kBF16) weighted_v<Dtype::kBF16>(p.v_pages, rows, len, prob, stride, d, group, acc);
  else weighted_v<Dtype::kF16>(p.v_pages, rows, len, prob, stride, d, group, acc);
#else
  std::fill(acc, acc + group * d, 0.f);
  for (int64_t t = 0; t < len; ++t) {
    const float* v = widen(p.v_pages, rows[t], d, p.dtype, kbuf);
    for (int64_t g = 0; g < group; ++g) {
      const float w = prob[g * stride + t];
      float* a = acc + g * d;
      for (int64_t i = 0; i < d; ++i) a[i] += w * v[i];  // vectorised by the compiler
    }
  }
#endif
}

void decode(const DecodeParams& p) {
  const int64_t tasks = p.batch * p.num_kv_heads, d = p.head_dim, group = p.num_heads / p.num_kv_heads;
  // Long contexts with fewer (sequence, kv-head) tasks than 2 per thread are
  // split over their slots (>= 512 slots per split), so every thread works.
  const int64_t want = (2 * int64_t(num_threads()) + tasks - 1) / tasks;
  std::vector<Split> splits;
  std::vector<int64_t> first(size_t(tasks + 1));
  for (int64_t t = 0; t < tasks; ++t) {
    first[size_t(t)] = int64_t(splits.size());
    const int64_t len = p.lengths[t];
    const int64_t n = std::max<int64_t>(1, std::min<int64_t>(want, len / 512));
    for (int64_t i = 0; i < n; ++i) splits.push_back({t, len * i / n, len * (i + 1) / n});
  }
  first[size_t(tasks)] = int64_t(splits.size());
  const int64_t ns = int64_t(splits.size());
  std::vector<float> m(size_t(ns * group)), sum(size_t(ns * group)), acc(size_t(ns * group * d));
  // With scores, the probabilities of every slot are kept (per task, [group, length]) for the merge.
  std::vector<int64_t> prob_at(size_t(tasks + 1), 0);
  if (p.scores)
    for (int64_t t = 0; t < tasks; ++t) prob_at[size_t(t + 1)] = prob_at[size_t(t)] + group * p.lengths[t];
  std::vector<float> prob(p.scores ? size_t(prob_at[size_t(tasks)]) : 0);
  parallel_for(0, ns, 1, [&](int64_t s0, int64_t s1) {
    std::vector<float> ws;
    std::vector<int64_t> rows_ws;
    for (int64_t s = s0; s < s1; ++s) {
      const Split& sp = splits[size_t(s)];
      if (sp.t1 > sp.t0)
        attend_split(p, sp, &m[size_t(s * group)], &sum[size_t(s * group)], &acc[size_t(s * group * d)],
                     p.scores ? prob.data() + prob_at[size_t(sp.task)] : nullptr, ws, rows_ws);
    }
  });
  parallel_for(0, tasks, 1, [&](int64_t k0, int64_t k1) {  // log-sum-exp merge of each task's splits
    std::vector<float> out(static_cast<size_t>(d)), w(static_cast<size_t>(first[size_t(tasks)]));
    for (int64_t t = k0; t < k1; ++t) {
      const int64_t b = t / p.num_kv_heads, h = t % p.num_kv_heads, len = p.lengths[t];
      const int64_t f0 = first[size_t(t)], f1 = first[size_t(t + 1)];
      float* scores = p.scores ? p.scores + t * p.max_pages * p.page_size : nullptr;
      if (scores) std::fill(scores, scores + p.max_pages * p.page_size, 0.f);
      for (int64_t g = 0; g < group; ++g) {
        std::fill(out.begin(), out.end(), 0.f);
        if (len > 0) {  // (no slot to attend: the output is 0)
          float mx = -INFINITY, total = 0.f;
          for (int64_t s = f0; s < f1; ++s) mx = std::max(mx, m[size_t(s * group + g)]);
          for (int64_t s = f0; s < f1; ++s) {
            w[size_t(s)] = std::exp(m[size_t(s * group + g)] - mx);
            total += sum[size_t(s * group + g)] * w[size_t(s)];
          }
          for (int64_t s = f0; s < f1; ++s) {
            const float ws = w[size_t(s)] / total;
            const float* a = &acc[size_t((s * group + g) * d)];
            for (int64_t i = 0; i < d; ++i) out[size_t(i)] += ws * a[i];
            if (scores) {
              const float* pr = prob.data() + prob_at[size_t(t)] + g * len;
              for (int64_t x = splits[size_t(s)].t0; x < splits[size_t(s)].t1; ++x) scores[x] += pr[x] * ws;
            }
          }
        }
        narrow(out.data(), d, p.dtype, p.out, b * p.num_heads + h * group + g);
      }
    }
  });
}

}  // namespace
}  // namespace llmpack::kvcache::LLMPACK_ISA_NS
