// torch glue of paged_kv_reposition (rule and layout: kvcache_reposition.h):
// argument checks once for both devices, the CPU path (the header's steps in
// loops, ranks by one sort per row) and the CUDA path (two kernels, the error
// through a device slot), one wording of the errors.
//
// Why an op: as tensor ops (argsort, scatter, nonzero, gathers) the step cost
// ~0.6 ms per layer per token on SmolLM2, which made `sink` the slowest
// policy; the work is a sort of a few hundred slots and a few re-rotated keys.
#include <algorithm>
#include <numeric>
#include <vector>

#include "common/cpu_convert.h"
#include "common/registration.h"
#include "common/torch_utils.h"
#include "kvcache/kvcache_reposition.h"

namespace llmpack::kvcache {
namespace {

constexpr const char* kOp = "paged_kv_reposition";

RepositionParams check_reposition_args(Tensor& k_pages, const Tensor& tables, const Tensor& lengths,
                                       const Tensor& token_index, Tensor& rotation, Tensor& k_orig,
                                       Tensor& orig_rotation, const Tensor& slot, const Tensor& k,
                                       const Tensor& pos, const Tensor& reposition, const Tensor& inv_freq) {
  check_state_tensors({{&k_pages, "k_pages"}, {&tables, "block_tables"}, {&lengths, "lengths"},
                       {&token_index, "token_index"}, {&rotation, "rotation"}, {&k_orig, "k_orig"},
                       {&orig_rotation, "orig_rotation"}, {&slot, "slot"}, {&k, "k"}, {&pos, "pos"},
                       {&reposition, "reposition"}, {&inv_freq, "inv_freq"}},
                      kOp);
  check_dim(k_pages, 3, kOp, "k_pages");
  check_dim(tables, 3, kOp, "block_tables");
  check_dim(inv_freq, 1, kOp, "inv_freq");
  check_dtype(k_pages, {ScalarType::Float, ScalarType::BFloat16, ScalarType::Half}, kOp, "k_pages");
  check_dtype(tables, {ScalarType::Int}, kOp, "block_tables");
  check_dtype(lengths, {ScalarType::Int}, kOp, "lengths");
  check_dtype(reposition, {ScalarType::Bool}, kOp, "reposition");
  using Named = std::pair<const Tensor*, const char*>;
  for (const auto& [t, name] : {Named{&k_orig, "k_orig"}, {&k, "k"}, {&inv_freq, "inv_freq"}})
    check_dtype(*t, {ScalarType::Float}, kOp, name);
  for (const auto& [t, name] : {Named{&token_index, "token_index"}, {&rotation, "rotation"},
                                {&orig_rotation, "orig_rotation"}, {&slot, "slot"}, {&pos, "pos"}})
    check_dtype(*t, {ScalarType::Long}, kOp, name);
  const int64_t b = tables.size(0), h = tables.size(1), m = tables.size(2), s = k_pages.size(1),
                d = k_pages.size(2), cap = m * s;
  LLMPACK_CHECK(has_shape(lengths, {b, h}) && has_shape(slot, {b, h}), kOp, ": lengths and slot must be [", b,
                ", ", h, "] (batch and kv-heads from block_tables ", shape_str(tables), "), got ",
                shape_str(lengths), " and ", shape_str(slot));
  for (const auto& [t, name] : {Named{&token_index, "token_index"}, {&rotation, "rotation"},
                                {&orig_rotation, "orig_rotation"}})
    LLMPACK_CHECK(has_shape(*t, {b, h, cap}), kOp, ": ", name, " must be [", b, ", ", h, ", ", cap,
                  "] (one entry per slot of the block tables), got ", shape_str(*t));
  LLMPACK_CHECK(has_shape(k_orig, {b, h, cap, d}), kOp, ": k_orig must be [", b, ", ", h, ", ", cap, ", ", d,
                "] (one key per slot), got ", shape_str(k_orig));
  LLMPACK_CHECK(has_shape(k, {b, h, d}), kOp, ": k must be [", b, ", ", h, ", ", d, "], got ", shape_str(k));
  LLMPACK_CHECK(has_shape(pos, {b}) && has_shape(reposition, {b}), kOp, ": pos and reposition must be [", b,
                "] (one per sequence), got ", shape_str(pos), " and ", shape_str(reposition));
  LLMPACK_CHECK(2 * inv_freq.size(0) <= d, kOp, ": inv_freq has ", inv_freq.size(0),
                " frequencies, which rotate ", 2 * inv_freq.size(0), " elements of a head_dim ", d, " key");
  LLMPACK_CHECK(s >= 1 && d >= 1, kOp, ": page_size and head_dim must be positive, got k_pages ",
                shape_str(k_pages));
  return {k_pages.mutable_data_ptr(),
          static_cast<const int32_t*>(tables.const_data_ptr()),
          static_cast<const int32_t*>(lengths.const_data_ptr()),
          static_cast<const int64_t*>(token_index.const_data_ptr()),
          static_cast<int64_t*>(rotation.mutable_data_ptr()),
          static_cast<float*>(k_orig.mutable_data_ptr()),
          static_cast<int64_t*>(orig_rotation.mutable_data_ptr()),
          static_cast<const int64_t*>(slot.const_data_ptr()),
          static_cast<const float*>(k.const_data_ptr()),
          static_cast<const int64_t*>(pos.const_data_ptr()),
          static_cast<const bool*>(reposition.const_data_ptr()),
          static_cast<const float*>(inv_freq.const_data_ptr()),
          b, h, d, k_pages.size(0), s, m, inv_freq.size(0),
          k_pages.scalar_type() == ScalarType::Float      ? Dtype::kF32
          : k_pages.scalar_type() == ScalarType::BFloat16 ? Dtype::kBF16
                                                          : Dtype::kF16};
}

// The message of an error code, from host copies of what it names (one wording for both paths).
[[noreturn]] void fail_reposition(const RepositionParams& p, int64_t code, const Tensor& tables,
                                  const Tensor& lengths, const Tensor& slot) {
  int64_t row, kind, page;
  reposition_error_decode(p, code, row, kind, page);
  const int64_t b = row / p.heads, h = row % p.heads;
  const int64_t n = static_cast<const int32_t*>(to_cpu(lengths).const_data_ptr())[row];
  switch (kind) {
    case kReposBadLength:
      fail(kOp, ": lengths[", b, ", ", h, "] = ", n, " is outside 0..", reposition_capacity(p), " (",
           p.max_pages, " pages of ", p.page_size, " slots)");
    case kReposBadSlot:
      fail(kOp, ": slot[", b, ", ", h, "] = ", static_cast<const int64_t*>(to_cpu(slot).const_data_ptr())[row],
           " is neither -1 nor a used slot (lengths[", b, ", ", h, "] = ", n, ")");
    default:
      fail(kOp, ": block_tables[", b, ", ", h, ", ", page, "] = ",
           static_cast<const int32_t*>(to_cpu(tables).const_data_ptr())[row * p.max_pages + page],
           " points outside the pool of ", p.pages, " pages");
  }
}

template <class T, class Convert>
void reposition_rows_cpu(const RepositionParams& p, Convert convert) {
  T* pool = static_cast<T*>(p.k_pages);
  auto store = [&](int64_t at, float v) { pool[at] = convert(v); };
  std::vector<int64_t> order;
  for (int64_t row = 0; row < p.batch * p.heads; ++row) {
    if (!p.reposition[row / p.heads]) continue;
    for (int64_t i = 0; i < p.head_dim; ++i) reposition_record(p, row, i);
    const int64_t n = p.lengths[row];
    const int64_t* tok = p.token_index + row * reposition_capacity(p);
    order.resize(n);
    std::iota(order.begin(), order.end(), int64_t{0});
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return reposition_precedes(tok, a, b); });
    for (int64_t r = 0; r < n; ++r) reposition_slot(p, row, order[r], r, store);
  }
}

template <bool kOnCuda>
void paged_kv_reposition_impl(Tensor k_pages, Tensor tables, Tensor lengths, Tensor token_index, Tensor rotation,
                              Tensor k_orig, Tensor orig_rotation, Tensor slot, Tensor k, Tensor pos,
                              Tensor reposition, Tensor inv_freq) {
  const RepositionParams p = check_reposition_args(k_pages, tables, lengths, token_index, rotation, k_orig,
                                                   orig_rotation, slot, k, pos, reposition, inv_freq);
  if constexpr (!kOnCuda) {
    for (int64_t row = 0; row < p.batch * p.heads; ++row)
      if (const int64_t e = reposition_check_row(p, row); e >= 0) fail_reposition(p, e, tables, lengths, slot);
    switch (p.dtype) {
      case Dtype::kF32: return reposition_rows_cpu<float>(p, [](float v) { return v; });
      case Dtype::kBF16: return reposition_rows_cpu<uint16_t>(p, f32_to_bf16);
      case Dtype::kF16: return reposition_rows_cpu<uint16_t>(p, f32_to_f16);
    }
  }
#if defined(LLMPACK_WITH_CUDA)
  if (p.batch * p.heads == 0) return;
  CudaContext ctx(k);
  Tensor error = error_slot(k);
  check_launch(reposition_cuda(p, static_cast<int64_t*>(error.mutable_data_ptr()), ctx.stream), kOp);
  if (const int64_t e = read_slot(error); e != INT64_MAX) fail_reposition(p, e, tables, lengths, slot);
#else
  fail(kOp, ": this build of llmpack has no CUDA kernels");
#endif
}

}  // namespace
}  // namespace llmpack::kvcache

LLMPACK_IMPL_ON_EACH_DEVICE("paged_kv_reposition", llmpack::kvcache::paged_kv_reposition_impl)
