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
#include <type_traits>
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
  if (dt == Dtype::kBF16) widen_bf16(h, d, buf);
  else widen_f16(h, d, buf);
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


inline float dot(const float* a, const float* b, int64_t d) { return dot_f32(a, b, d); }

// One split of one (sequence, kv-head): slots [t0, t1). Writes, per query
// head g of the group, the split's max logit m[g], sum of exp(logit - m[g])
// sum[g], and unnormalised sum_t exp(logit - m[g]) v_t into acc[g * d ..];
// with scores, exp(logit - m[g]) per slot into prob[g * len + t]. The merge
// (below) rescales the splits to one softmax (log-sum-exp).
struct Split {
  int64_t task, t0, t1;
};

// The slots [t0, t1) of one (sequence, kv-head) as runs of consecutive pool
// rows, one per page: `fn(first_row, count, slot_offset)` with slot_offset =
// slot - t0. One table read per page, not a division per slot.
//
template <class Fn>
inline void for_each_page_run(const int32_t* table, int64_t ps, int64_t t0, int64_t t1, Fn&& fn) {
  for (int64_t t = t0; t < t1;) {
    const int64_t page = t / ps, in_page = t - page * ps, n = std::min(ps - in_page, t1 - t);
    fn(int64_t(table[page]) * ps + in_page, n, t - t0);
    t += n;
  }
}

// Software prefetch into L1 (both vector passes). The hardware prefetchers
// stop at every 4 KiB (8 fp32 rows of 128 dims) and each page run starts at a
// new place in the pool, so without it a core computes while its next rows
// are still in DRAM. The K pass requests the rows kKAhead past the block it
// is on; the V pass, which sweeps its rows once per column block, works in
// chunks of kVChunk rows (so a chunk stays in L1 between sweeps) and
// requests the next chunk during the first sweep; each run's first rows are
// requested as it starts. Cold KV, 2 threads, 4k slots, each step timed
// alternating in one process: 1.2-1.5x faster than no prefetch in all (GQA
// fp32 most; against vLLM's CPU op in the same runs fp32 GQA went from
// 0.79-0.85x to 1.1-1.3x). Variants that
// measured no faster: bursts 4-32 KiB ahead, two chunks ahead, L2-only
// hints, also crossing into the next page of the table; V prefetched during
// the K pass (to wait in L3) was 5-30 % slower. Chunking the K pass as well
// (one call per 4 rows) was as fast cold but 15-30 % slower on cache-resident
// KV, hence the prefetch inside the K blocks.
constexpr int64_t kKAhead = 4, kVChunk = 8;
inline void prefetch_rows(const void* pool, int64_t row, int64_t rows, int64_t row_bytes) {
  const char* at = static_cast<const char*>(pool) + row * row_bytes;
  for (int64_t x = 0; x < rows * row_bytes; x += 64) __builtin_prefetch(at + x, 0, 3);
}

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LLMPACK_KV_VECTOR 1
// Register-blocked passes. The portable loops (the #else branches below)
// widen each K / V row into a buffer, then run one dot product (with its
// horizontal sum) or one accumulator sweep through memory per query head:
// 239 ns per slot at GQA group 4, bf16, d = 128, in cache, 1 thread, i.e.
// 2 GB/s, compute bound whether the KV is cold or not. Here K and V are
// widened in registers, several rows and heads share each load, the
// accumulators stay in registers across a page run and the exponentials are
// vectorised: 43-46 ns per slot on the same shape. `#pragma GCC unroll` on the
// small constant loops: without it GCC 12 stores the accumulator arrays to
// the stack on every row.

// 8 pool values at element `i` as fp32.
template <Dtype DT>
inline __m256 load8(const void* base, int64_t i) {
  if constexpr (DT == Dtype::kF32) return _mm256_loadu_ps(static_cast<const float*>(base) + i);
  else if constexpr (DT == Dtype::kBF16) return load_bf16x8(static_cast<const uint16_t*>(base) + i);
  else return load_f16x8(static_cast<const uint16_t*>(base) + i);
}

constexpr int64_t dtype_bytes(Dtype dt) { return dt == Dtype::kF32 ? 4 : 2; }

template <Dtype DT>
inline float load1(const void* base, int64_t i) {
  if constexpr (DT == Dtype::kF32) return static_cast<const float*>(base)[i];
  else if constexpr (DT == Dtype::kBF16) return bf16_to_f32(static_cast<const uint16_t*>(base)[i]);
  else return f16_to_f32(static_cast<const uint16_t*>(base)[i]);
}

// Logits of RB consecutive pool rows from r0 against GB query heads (q [GB, d],
// scaled): out[g * stride + r]. RB * GB accumulators, one K load per row per
// 8 dims shared by the GB heads, one q load per head shared by the RB rows.
template <Dtype DT, int RB, int GB>
inline void logits_block(const void* pool, int64_t r0, const float* q, int64_t d, float* out, int64_t stride) {
  __m256 acc[RB][GB];
  #pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
    #pragma GCC unroll 8
    for (int g = 0; g < GB; ++g) acc[r][g] = _mm256_setzero_ps();
  const int64_t d8 = d & ~int64_t(7);
  for (int64_t i = 0; i < d8; i += 8) {
    __m256 k[RB];
    #pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) k[r] = load8<DT>(pool, (r0 + r) * d + i);
    #pragma GCC unroll 8
    for (int g = 0; g < GB; ++g) {
      const __m256 qv = _mm256_loadu_ps(q + g * d + i);
      #pragma GCC unroll 8
      for (int r = 0; r < RB; ++r) acc[r][g] = _mm256_fmadd_ps(k[r], qv, acc[r][g]);
    }
  }
  #pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
    #pragma GCC unroll 8
    for (int g = 0; g < GB; ++g) {
      float v = hsum256(acc[r][g]);
      for (int64_t i = d8; i < d; ++i) v += load1<DT>(pool, (r0 + r) * d + i) * q[g * d + i];
      out[g * stride + r] = v;
    }
}

// Logits of n rows from r0 for GB heads: blocks of RB rows, then single rows.
template <Dtype DT, int RB, int GB>
inline void logits_heads(const void* pool, int64_t r0, int64_t n, const float* q, int64_t d, float* out,
                         int64_t stride) {
  int64_t j = 0;
  for (; j + RB <= n; j += RB) {
    const int64_t ahead = std::min<int64_t>(RB, n - j - kKAhead);
    if (ahead > 0) prefetch_rows(pool, r0 + j + kKAhead, ahead, d * dtype_bytes(DT));
    logits_block<DT, RB, GB>(pool, r0 + j, q, d, out + j, stride);
  }
  for (; j < n; ++j) logits_block<DT, 1, GB>(pool, r0 + j, q, d, out + j, stride);
}

// fn(std::integral_constant<int, GB>, g0) for the `group` query heads of a
// kv-head, GB = 4 at a time (the last chunk 1..4): both passes block heads
// so, with GB as a template parameter of their register blocks.
template <class Fn>
inline void for_each_head_chunk(int64_t group, Fn&& fn) {
  for (int64_t g0 = 0; g0 < group; g0 += 4) {
    switch (std::min<int64_t>(4, group - g0)) {
      case 4: fn(std::integral_constant<int, 4>{}, g0); break;
      case 3: fn(std::integral_constant<int, 3>{}, g0); break;
      case 2: fn(std::integral_constant<int, 2>{}, g0); break;
      default: fn(std::integral_constant<int, 1>{}, g0); break;
    }
  }
}

// fn(std::integral_constant<Dtype, DT>) for the pool's dtype.
template <class Fn>
inline void with_dtype(Dtype dt, Fn&& fn) {
  switch (dt) {
    case Dtype::kF32: fn(std::integral_constant<Dtype, Dtype::kF32>{}); break;
    case Dtype::kBF16: fn(std::integral_constant<Dtype, Dtype::kBF16>{}); break;
    case Dtype::kF16: fn(std::integral_constant<Dtype, Dtype::kF16>{}); break;
  }
}

// Logits of a page run (n rows from r0) for all `group` heads: (rows x
// heads) = 2 x 4, 2 x 3, 4 x 2 or 8 x 1 accumulators.
template <Dtype DT>
void logits_run(const void* pool, int64_t r0, int64_t n, const float* q, int64_t group, int64_t d, float* out,
                int64_t stride) {
  for_each_head_chunk(group, [&](auto gb, int64_t g0) {
    constexpr int GB = decltype(gb)::value, RB = GB == 1 ? 8 : GB == 2 ? 4 : 2;
    logits_heads<DT, RB, GB>(pool, r0, n, q + g0 * d, d, out + g0 * stride, stride);
  });
}

// acc[g, i..] += sum_j w[g * stride + j] * V[r0 + j, i..] for GB heads and
// DB * 8 dims from i, the GB * DB accumulators in registers over the n rows;
// the first `prefetch_next` rows after them are requested on the way.
template <Dtype DT, int GB, int DB>
inline void weighted_block(const void* pool, int64_t r0, int64_t n, const float* w, int64_t stride, float* acc,
                           int64_t d, int64_t i, int64_t prefetch_next = 0) {
  __m256 a[GB][DB];
  #pragma GCC unroll 8
  for (int g = 0; g < GB; ++g)
    #pragma GCC unroll 8
    for (int b = 0; b < DB; ++b) a[g][b] = _mm256_loadu_ps(acc + g * d + i + 8 * b);
  for (int64_t j = 0; j < n; ++j) {
    if (j < prefetch_next) prefetch_rows(pool, r0 + n + j, 1, d * dtype_bytes(DT));
    __m256 v[DB];
    #pragma GCC unroll 8
    for (int b = 0; b < DB; ++b) v[b] = load8<DT>(pool, (r0 + j) * d + i + 8 * b);
    #pragma GCC unroll 8
    for (int g = 0; g < GB; ++g) {
      const __m256 wg = _mm256_broadcast_ss(w + g * stride + j);
      #pragma GCC unroll 8
      for (int b = 0; b < DB; ++b) a[g][b] = _mm256_fmadd_ps(v[b], wg, a[g][b]);
    }
  }
  #pragma GCC unroll 8
  for (int g = 0; g < GB; ++g)
    #pragma GCC unroll 8
    for (int b = 0; b < DB; ++b) _mm256_storeu_ps(acc + g * d + i + 8 * b, a[g][b]);
}

// acc[g, :] += sum_j w[g * stride + j] * V[r0 + j, :] for GB heads: chunks
// of kVChunk rows, each swept once per column block of DB * 8 dims, the first
// sweep requesting the next chunk (acc[g * d ..] = the GB heads' accumulators).
template <Dtype DT, int GB, int DB>
inline void weighted_heads(const void* pool, int64_t r0, int64_t n, const float* w, int64_t stride, float* acc,
                           int64_t d) {
  const int64_t d8 = d & ~int64_t(7);
  for (int64_t j0 = 0; j0 < n; j0 += kVChunk) {
    const int64_t rows = std::min(kVChunk, n - j0), next = std::min(kVChunk, n - j0 - rows);
    const int64_t r = r0 + j0;
    const float* wj = w + j0;
    int64_t i = 0;
    for (; i + 8 * DB <= d8; i += 8 * DB) weighted_block<DT, GB, DB>(pool, r, rows, wj, stride, acc, d, i, i ? 0 : next);
    for (; i < d8; i += 8) weighted_block<DT, GB, 1>(pool, r, rows, wj, stride, acc, d, i, i ? 0 : next);
    for (; i < d; ++i)
      for (int64_t j = 0; j < rows; ++j) {
        const float v = load1<DT>(pool, (r + j) * d + i);
        #pragma GCC unroll 8
        for (int g = 0; g < GB; ++g) acc[g * d + i] += wj[g * stride + j] * v;
      }
  }
}

// The weighted V of a page run for all `group` heads: (heads x 8-column
// blocks) = 4 x 2, 3 x 2, 2 x 4 or 1 x 4 accumulators.
template <Dtype DT>
void weighted_run(const void* pool, int64_t r0, int64_t n, const float* w, int64_t group, int64_t stride, float* acc,
                  int64_t d) {
  for_each_head_chunk(group, [&](auto gb, int64_t g0) {
    constexpr int GB = decltype(gb)::value, DB = GB <= 2 ? 4 : 2;
    weighted_heads<DT, GB, DB>(pool, r0, n, w + g0 * stride, stride, acc + g0 * d, d);
  });
}

// p[t] = exp(p[t] - max(p)) for t < len; returns the sum, *mx the max.
inline float exp_shifted(float* p, int64_t len, float* mx) {
  int64_t t = 0;
  __m256 vm = _mm256_set1_ps(-INFINITY);
  for (; t + 8 <= len; t += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(p + t));
  float m = -INFINITY;
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vm);
  for (float l : lanes) m = std::max(m, l);
  for (; t < len; ++t) m = std::max(m, p[t]);
  const __m256 vmx = _mm256_set1_ps(m);
  __m256 vs = _mm256_setzero_ps();
  for (t = 0; t + 8 <= len; t += 8) {
    const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(p + t), vmx));
    _mm256_storeu_ps(p + t, e);
    vs = _mm256_add_ps(vs, e);
  }
  float s = hsum256(vs);
  for (; t < len; ++t) s += p[t] = std::exp(p[t] - m);
  *mx = m;
  return s;
}
#endif

void attend_split(const DecodeParams& p, const Split& sp, float* m, float* sum, float* acc, float* prob_all,
                  std::vector<float>& ws) {
  const int64_t d = p.head_dim, group = p.num_heads / p.num_kv_heads, ps = p.page_size;
  const int64_t b = sp.task / p.num_kv_heads, h = sp.task % p.num_kv_heads, len = sp.t1 - sp.t0;
  const int32_t* table = p.tables + sp.task * p.max_pages;
  const int64_t full_len = p.lengths[sp.task];
  // Workspace: q (scaled) [group, d], one widened row [d], probabilities [group, len] (when not kept for scores).
  ws.resize(size_t(group * d + d + (prob_all ? 0 : group * len)));
  float* qf = ws.data();
  float* row = qf + group * d;
  // prob[g * stride + (t - t0)]: this split's probabilities.
  float* prob = prob_all ? prob_all + sp.t0 : row + d;
  const int64_t stride = prob_all ? full_len : len;
  for (int64_t g = 0; g < group; ++g) {
    const float* q = widen(p.q, b * p.num_heads + h * group + g, d, p.dtype, row);
    for (int64_t i = 0; i < d; ++i) qf[g * d + i] = q[i] * p.scale;
  }
  for_each_page_run(table, ps, sp.t0, sp.t1, [&](int64_t r0, int64_t n, int64_t off) {  // 1. logits
#if defined(LLMPACK_KV_VECTOR)
    with_dtype(p.dtype, [&](auto dt) {
      constexpr Dtype DT = decltype(dt)::value;
      prefetch_rows(p.k_pages, r0, std::min(kKAhead, n), d * dtype_bytes(DT));
      logits_run<DT>(p.k_pages, r0, n, qf, group, d, prob + off, stride);
    });
#else
    for (int64_t j = 0; j < n; ++j) {
      const float* k = widen(p.k_pages, r0 + j, d, p.dtype, row);
      for (int64_t g = 0; g < group; ++g) prob[g * stride + off + j] = dot(qf + g * d, k, d);
    }
#endif
  });
  for (int64_t g = 0; g < group; ++g) {  // 2. exponentials against the split's max
    float* pg = prob + g * stride;
#if defined(LLMPACK_KV_VECTOR)
    sum[g] = exp_shifted(pg, len, &m[g]);
#else
    const float mx = *std::max_element(pg, pg + len);
    float s = 0.f;
    for (int64_t t = 0; t < len; ++t) {
      pg[t] = std::exp(pg[t] - mx);
      s += pg[t];
    }
    m[g] = mx;
    sum[g] = s;
#endif
  }
  std::fill(acc, acc + group * d, 0.f);
  for_each_page_run(table, ps, sp.t0, sp.t1, [&](int64_t r0, int64_t n, int64_t off) {  // 3. weighted V
#if defined(LLMPACK_KV_VECTOR)
    with_dtype(p.dtype, [&](auto dt) {
      constexpr Dtype DT = decltype(dt)::value;
      prefetch_rows(p.v_pages, r0, std::min(kVChunk, n), d * dtype_bytes(DT));
      weighted_run<DT>(p.v_pages, r0, n, prob + off, group, stride, acc, d);
    });
#else
    for (int64_t j = 0; j < n; ++j) {
      const float* v = widen(p.v_pages, r0 + j, d, p.dtype, row);
      for (int64_t g = 0; g < group; ++g) {
        const float w = prob[g * stride + off + j];
        float* a = acc + g * d;
        for (int64_t i = 0; i < d; ++i) a[i] += w * v[i];  // vectorised by the compiler
      }
    }
#endif
  });
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
    for (int64_t s = s0; s < s1; ++s) {
      const Split& sp = splits[size_t(s)];
      if (sp.t1 > sp.t0)
        attend_split(p, sp, &m[size_t(s * group)], &sum[size_t(s * group)], &acc[size_t(s * group * d)],
                     p.scores ? prob.data() + prob_at[size_t(sp.task)] : nullptr, ws);
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
