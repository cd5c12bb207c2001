// Paged KV cache: page layout, the decode-attention parameters and the per-ISA
// kernel table, shared by the torch glue and the CPU units (and mirrored by
// python/llmpack/reference/kvcache.py).
//
// Pool (one per layer, K and V alike):
//   k_pages, v_pages  [num_pages, page_size, head_dim], fp32 / bf16 / fp16.
//   A page holds page_size consecutive cache slots of ONE kv-head of ONE
//   sequence. Pages are per kv-head, not per token-of-all-heads, so that a
//   policy that evicts per kv-head (H2O) can keep a different set of tokens
//   in each head and still free whole pages.
//   block_tables  int32 [batch, num_kv_heads, max_pages]: the pages of
//                 (sequence b, kv-head h) in slot order; slot t lives in page
//                 block_tables[b, h, t / page_size], row t % page_size.
//   lengths       int32 [batch, num_kv_heads]: slots in use for (b, h); slots
//                 0 .. length - 1 are attended, everything else is never read
//                 (table entries past the used pages need not be valid).
//   q             [batch, num_heads, head_dim], same dtype as the pool;
//                 num_heads = num_kv_heads * group (GQA/MQA: query head hq
//                 reads kv-head hq / group).
// Outputs:
//   out     [batch, num_heads, head_dim] in q's dtype: softmax(q k^T * scale) v
//           over the used slots, computed in fp32 (max-subtracted softmax).
//   scores  fp32 [batch, num_kv_heads, max_pages * page_size] (when asked):
//           each slot's attention probability summed over the `group` query
//           heads that read its kv-head; 0 for unused slots. H2O adds these to
//           its accumulators, so no second pass or eager attention is needed.
#pragma once

#include <cstdint>

#include "common/hostdevice.h"

namespace llmpack::kvcache {

enum class Dtype : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

struct DecodeParams {
  const void* q;             // [B, Hq, D]
  const void* k_pages;       // [P, S, D]
  const void* v_pages;       // [P, S, D]
  const int32_t* tables;     // [B, Hkv, max_pages], validated for every used page
  const int32_t* lengths;    // [B, Hkv], validated 0 <= length <= max_pages * S
  void* out;                 // [B, Hq, D]
  float* scores;             // [B, Hkv, max_pages * S] or nullptr
  int64_t batch, num_heads, num_kv_heads, head_dim, page_size, max_pages;
  float scale;
  Dtype dtype;
};

struct CpuKernels {
  void (*decode)(const DecodeParams&);
};
extern const CpuKernels kCpuGeneric, kCpuAvx2, kCpuAvx512;

// The CUDA decode (kvcache_cuda.cu) splits each (sequence, kv-head)'s slots
// into parts of kCudaSplitSlots, one block each, and merges the parts in a
// second kernel. Its fp32 workspace, for T = batch * num_kv_heads tasks,
// N = cuda_num_splits(capacity) parts, G = group, C = max_pages * page_size:
//   max [T, N, G] | sum [T, N, G] | acc [T, N, G, head_dim] | (scores only) exp [T, G, C]
constexpr int64_t kCudaSplitSlots = 256;
LLMPACK_HD int64_t cuda_num_splits(int64_t capacity) { return (capacity + kCudaSplitSlots - 1) / kCudaSplitSlots; }
LLMPACK_HD int64_t cuda_workspace_floats(const DecodeParams& p) {
  const int64_t tasks = p.batch * p.num_kv_heads, group = p.num_heads / p.num_kv_heads;
  const int64_t capacity = p.max_pages * p.page_size, parts = tasks * cuda_num_splits(capacity) * group;
  return parts * (2 + p.head_dim) + (p.scores ? tasks * group * capacity : 0);
}
// Block tables and lengths are checked on the device, before anything they
// point to is read. The lowest bad entry goes to the error slot as
//   task * (max_pages + 1) + 0        lengths[b, h] outside 0 .. capacity
//   task * (max_pages + 1) + 1 + i    block_tables[b, h, i] outside 0 .. num_pages - 1 (a used page)
// (task = b * num_kv_heads + h): the lowest code is the error the CPU path,
// which checks in that order, reports first.
LLMPACK_HD int64_t cuda_error_code(int64_t task, int64_t max_pages, int64_t what) {
  return task * (max_pages + 1) + what;
}

#if defined(LLMPACK_WITH_CUDA) || defined(LLMPACK_SIMT_EMULATION)
// Runs both kernels on `stream`; workspace holds cuda_workspace_floats(p)
// floats; *bad (device int64, preset to -1 = none) gets the lowest error
// code. Returns the launch error (0 = ok). With an error reported, out and
// scores are undefined.
int decode_cuda(const DecodeParams& p, int64_t num_pages, float* workspace, int64_t* bad, void* stream);
#endif

}  // namespace llmpack::kvcache
