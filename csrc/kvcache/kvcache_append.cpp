// torch glue of paged_kv_append (the step's rule, layout and phases:
// kvcache_append.h): argument checks written once for both devices, the CPU
// path (the header's phases in loops) and the CUDA path (one kernel, errors
// through a device slot), and the error messages of both.
//
// Why an op: the same step as ~60 small tensor ops cost ~0.6 ms per layer
// per token in eager PyTorch (SmolLM2, 30 layers: ~18 % of a decode step);
// the work itself is a few hundred bytes per kv-head.
#include <tuple>

#include "common/registration.h"
#include "common/torch_utils.h"
#include "kvcache/kvcache_append.h"

namespace llmpack::kvcache {
namespace {

constexpr const char* kOp = "paged_kv_append";

struct Step {
  int64_t batch, heads, head_dim, pages, page_size, max_pages, capacity;
};

Step check_append_args(const Tensor& k_pages, const Tensor& v_pages, const Tensor& tables, const Tensor& lengths,
                       const Tensor& token_index, const Tensor& rotation, const Tensor& heavy_scores,
                       const Tensor& free_pages, const Tensor& num_free, const Tensor& seen, const Tensor& k,
                       const Tensor& v, const Tensor& pos, const Tensor& real, const Tensor& budget,
                       const Tensor& sinks, const Tensor& recent, const Tensor& heavy) {
  check_state_tensors({{&k_pages, "k_pages"}, {&v_pages, "v_pages"}, {&tables, "block_tables"},
                       {&lengths, "lengths"}, {&token_index, "token_index"}, {&rotation, "rotation"},
                       {&heavy_scores, "heavy_scores"}, {&free_pages, "free_pages"}, {&num_free, "num_free"},
                       {&seen, "seen"}, {&k, "k"}, {&v, "v"}, {&pos, "pos"}, {&real, "real"}, {&budget, "budget"},
                       {&sinks, "sinks"}, {&recent, "recent"}, {&heavy, "heavy"}},
                      kOp);
  check_dim(k_pages, 3, kOp, "k_pages");
  check_dim(tables, 3, kOp, "block_tables");
  check_dim(k, 3, kOp, "k");
  check_dtype(k_pages, {ScalarType::Float, ScalarType::BFloat16, ScalarType::Half}, kOp, "k_pages");
  LLMPACK_CHECK(v_pages.scalar_type() == k_pages.scalar_type() && k.scalar_type() == k_pages.scalar_type() &&
                    v.scalar_type() == k_pages.scalar_type(),
                kOp, ": k_pages, v_pages, k and v must have one dtype, got ", dtype_name(k_pages.scalar_type()), ", ",
                dtype_name(v_pages.scalar_type()), ", ", dtype_name(k.scalar_type()), ", ",
                dtype_name(v.scalar_type()));
  check_dtype(tables, {ScalarType::Int}, kOp, "block_tables");
  check_dtype(lengths, {ScalarType::Int}, kOp, "lengths");
  check_dtype(heavy_scores, {ScalarType::Float}, kOp, "heavy_scores");
  check_dtype(real, {ScalarType::Bool}, kOp, "real");
  check_dtype(heavy, {ScalarType::Bool}, kOp, "heavy");
  for (const auto& [t, name] : {std::pair{&token_index, "token_index"}, {&rotation, "rotation"},
                                {&free_pages, "free_pages"}, {&num_free, "num_free"}, {&seen, "seen"},
                                {&pos, "pos"}, {&budget, "budget"}, {&sinks, "sinks"}, {&recent, "recent"}})
    check_dtype(*t, {ScalarType::Long}, kOp, name);
  const Step s{k.size(0), k.size(1), k.size(2), k_pages.size(0), k_pages.size(1), tables.size(2),
               tables.size(2) * k_pages.size(1)};
  LLMPACK_CHECK(has_shape(v_pages, {s.pages, s.page_size, s.head_dim}) && k_pages.size(2) == s.head_dim, kOp,
                ": k_pages and v_pages must both be [num_pages, page_size, ", s.head_dim, "] (head_dim from k ",
                shape_str(k), "), got ", shape_str(k_pages), " and ", shape_str(v_pages));
  LLMPACK_CHECK(has_shape(v, {s.batch, s.heads, s.head_dim}), kOp, ": v must be ", shape_str(k), " like k, got ",
                shape_str(v));
  LLMPACK_CHECK(has_shape(tables, {s.batch, s.heads, s.max_pages}) && has_shape(lengths, {s.batch, s.heads}), kOp,
                ": block_tables must be [", s.batch, ", ", s.heads, ", max_pages] and lengths [", s.batch, ", ",
                s.heads, "] (batch and kv-heads from k), got ", shape_str(tables), " and ", shape_str(lengths));
  for (const auto& [t, name] : {std::pair{&token_index, "token_index"}, {&rotation, "rotation"},
                                {&heavy_scores, "heavy_scores"}})
    LLMPACK_CHECK(has_shape(*t, {s.batch, s.heads, s.capacity}), kOp, ": ", name, " must be [", s.batch, ", ",
                  s.heads, ", ", s.capacity, "] (one entry per slot of the block tables), got ", shape_str(*t));
  for (const auto& [t, name] : {std::pair{&seen, "seen"}, {&pos, "pos"}, {&real, "real"}, {&budget, "budget"},
                                {&sinks, "sinks"}, {&recent, "recent"}, {&heavy, "heavy"}})
    LLMPACK_CHECK(has_shape(*t, {s.batch}), kOp, ": ", name, " must be [", s.batch, "] (one per sequence), got ",
                  shape_str(*t));
  check_dim(free_pages, 1, kOp, "free_pages");
  LLMPACK_CHECK(has_shape(num_free, {1}), kOp, ": num_free must be [1], got ", shape_str(num_free));
  LLMPACK_CHECK(s.page_size >= 1 && s.head_dim >= 1, kOp, ": page_size and head_dim must be positive, got k_pages ",
                shape_str(k_pages));
  return s;
}

AppendParams make_params(const Step& s, Tensor& k_pages, Tensor& v_pages, Tensor& tables, Tensor& lengths,
                         Tensor& token_index, Tensor& rotation, Tensor& heavy_scores, const Tensor& free_pages,
                         Tensor& num_free, Tensor& seen, const Tensor& k, const Tensor& v, const Tensor& pos,
                         const Tensor& real, const Tensor& budget, const Tensor& sinks, const Tensor& recent,
                         const Tensor& heavy, Tensor& slot, Tensor& page_of) {
  return {k_pages.mutable_data_ptr(), v_pages.mutable_data_ptr(),
          static_cast<int32_t*>(tables.mutable_data_ptr()), static_cast<int32_t*>(lengths.mutable_data_ptr()),
          static_cast<int64_t*>(token_index.mutable_data_ptr()), static_cast<int64_t*>(rotation.mutable_data_ptr()),
          static_cast<float*>(heavy_scores.mutable_data_ptr()), static_cast<const int64_t*>(free_pages.const_data_ptr()),
          static_cast<int64_t*>(num_free.mutable_data_ptr()), static_cast<int64_t*>(seen.mutable_data_ptr()),
          k.const_data_ptr(), v.const_data_ptr(), static_cast<const int64_t*>(pos.const_data_ptr()),
          static_cast<const bool*>(real.const_data_ptr()), static_cast<const int64_t*>(budget.const_data_ptr()),
          static_cast<const int64_t*>(sinks.const_data_ptr()), static_cast<const int64_t*>(recent.const_data_ptr()),
          static_cast<const bool*>(heavy.const_data_ptr()), static_cast<int64_t*>(slot.mutable_data_ptr()),
          static_cast<int64_t*>(page_of.mutable_data_ptr()), s.batch, s.heads,
          s.head_dim * static_cast<int64_t>(k.element_size()), s.pages, s.page_size, s.max_pages,
          free_pages.size(0)};
}

// The message of an error code (kvcache_append.h), from host copies of the
// state it names: one wording for the CPU and CUDA paths.
[[noreturn]] void fail_append(const Step& s, int64_t code, int64_t detail, const Tensor& tables,
                              const Tensor& lengths, const Tensor& free_pages, const Tensor& num_free,
                              const Tensor& budget) {
  int64_t kind, row;
  append_error_decode(code, s.batch * s.heads, kind, row);
  const int64_t b = row / s.heads, h = row % s.heads;
  switch (kind) {
    case kBadNumFree:
      fail(kOp, ": num_free = ", static_cast<const int64_t*>(to_cpu(num_free).const_data_ptr())[0],
           " is outside 0..", free_pages.size(0), " (the free_pages stack)");
    case kBadLength:
      fail(kOp, ": lengths[", b, ", ", h, "] = ", static_cast<const int32_t*>(to_cpu(lengths).const_data_ptr())[row],
           " is outside 0..", s.capacity, " (", s.max_pages, " pages of ", s.page_size, " slots)");
    case kNothingEvictable:
      fail(kOp, ": sequence ", b, ", kv-head ", h, " is at its budget of ",
           static_cast<const int64_t*>(to_cpu(budget).const_data_ptr())[b],
           " and has no evictable token (every slot is a sink or recent)");
    case kBadFreePage:
      fail(kOp, ": free_pages[", detail, "] = ", static_cast<const int64_t*>(to_cpu(free_pages).const_data_ptr())[detail],
           " is outside the pool of ", s.pages, " pages");
    default:
      fail(kOp, ": block_tables[", b, ", ", h, ", ", detail, "] = ",
           static_cast<const int32_t*>(to_cpu(tables).const_data_ptr())[row * s.max_pages + detail],
           " points outside the pool of ", s.pages, " pages");
  }
}

// kOnCuda: the CUDA kernel (registered for CUDA tensors; for CPU tensors in the
// emulator build), else the phases in host loops.
template <bool kOnCuda>
std::tuple<Tensor, Tensor> paged_kv_append_impl(Tensor k_pages, Tensor v_pages, Tensor tables, Tensor lengths,
                                               Tensor token_index, Tensor rotation, Tensor heavy_scores,
                                               Tensor free_pages, Tensor num_free, Tensor seen, Tensor k, Tensor v,
                                               Tensor pos, Tensor real, Tensor budget, Tensor sinks, Tensor recent,
                                               Tensor heavy) {
  const Step s = check_append_args(k_pages, v_pages, tables, lengths, token_index, rotation, heavy_scores,
                                   free_pages, num_free, seen, k, v, pos, real, budget, sinks, recent, heavy);
  const int64_t rows = s.batch * s.heads;
  Tensor slot = new_empty(k, {s.batch, s.heads}, ScalarType::Long);
  Tensor status = new_empty(k, {1}, ScalarType::Long);
  Tensor page_of = new_empty(k, {rows}, ScalarType::Long);
  const AppendParams p = make_params(s, k_pages, v_pages, tables, lengths, token_index, rotation, heavy_scores,
                                     free_pages, num_free, seen, k, v, pos, real, budget, sinks, recent, heavy,
                                     slot, page_of);
  auto fail_with = [&](int64_t code, int64_t detail) {
    fail_append(s, code, detail, tables, lengths, free_pages, num_free, budget);
  };
  if constexpr (!kOnCuda) {
    if (!append_num_free_ok(p)) fail_with(append_error_code(kBadNumFree, 0, rows), 0);
    for (int64_t row = 0; row < rows; ++row)
      if (const int64_t e = append_choose_slot(p, row); e >= 0) fail_with(e, 0);
    int64_t error, detail, popped;
    const int64_t missing = append_plan_pages(p, &error, &detail, &popped);
    if (error >= 0) fail_with(error, detail);
    if (missing == 0) {
      for (int64_t row = 0; row < rows; ++row) append_write_row(p, row);
      append_finish(p, popped);
    }
    static_cast<int64_t*>(status.mutable_data_ptr())[0] = missing;
    return {slot, status};
  }
#if defined(LLMPACK_WITH_CUDA)
  CudaContext ctx(k);
  Tensor error = new_empty(k, {2}, ScalarType::Long);
  torch::stable::fill_(error, -1.0);
  check_launch(append_cuda(p, static_cast<int64_t*>(error.mutable_data_ptr()),
                           static_cast<int64_t*>(status.mutable_data_ptr()), ctx.stream),
               kOp);
  const Tensor host = to_cpu(error);
  const int64_t* e = static_cast<const int64_t*>(host.const_data_ptr());
  if (e[0] != -1) fail_with(e[0], e[1]);
  return {slot, status};
#else
  fail(kOp, ": this build of llmpack has no CUDA kernels");
#endif
}

}  // namespace
}  // namespace llmpack::kvcache

LLMPACK_IMPL_ON_EACH_DEVICE("paged_kv_append", llmpack::kvcache::paged_kv_append_impl)
