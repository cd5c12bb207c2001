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
  for (int64_t t = sp.t0; t < sp.t1; ++t) {  // 1. logits
    const float* k = widen(p.k_pages, int64_t(table[t / ps]) * ps + t % ps, d, p.dtype, row);
    for (int64_t g = 0; g < group; ++g) prob[g * stride + (t - sp.t0)] = dot(qf + g * d, k, d);
  }
  for (int64_t g = 0; g < group; ++g) {  // 2. exponentials against the split's max
    float* pg = prob + g * stride;
    const float mx = *std::max_element(pg, pg + len);
    float s = 0.f;
    for (int64_t t = 0; t < len; ++t) {
      pg[t] = std::exp(pg[t] - mx);
      s += pg[t];
    }
    m[g] = mx;
    sum[g] = s;
  }
  std::fill(acc, acc + group * d, 0.f);
  for (int64_t t = sp.t0; t < sp.t1; ++t) {  // 3. weighted V
    const float* v = widen(p.v_pages, int64_t(table[t / ps]) * ps + t % ps, d, p.dtype, row);
    for (int64_t g = 0; g < group; ++g) {
      const float w = prob[g * stride + (t - sp.t0)];
      float* a = acc + g * d;
      for (int64_t i = 0; i < d; ++i) a[i] += w * v[i];  // vectorised by the compiler
    }
  }
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
