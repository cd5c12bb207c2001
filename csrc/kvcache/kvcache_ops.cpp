// torch glue for paged decode attention: argument checks (every used page
// of every block table validated before a kernel reads it), allocation,
// registration. Layout: kvcache.h.
#include <string>
#include <tuple>
#include <utility>

#include "common/isa.h"
#include "common/registration.h"
#include "common/torch_utils.h"
#include "kvcache/kvcache.h"

namespace llmpack::kvcache {
namespace {

const CpuKernels& cpu() {
  return pick_isa(&kCpuGeneric, LLMPACK_IF_AVX2(kCpuAvx2), LLMPACK_IF_AVX512(kCpuAvx512));
}

Dtype dtype_of(ScalarType t) {
  return t == ScalarType::Float ? Dtype::kF32 : t == ScalarType::BFloat16 ? Dtype::kBF16 : Dtype::kF16;
}

std::tuple<Tensor, Tensor> paged_decode_attention_cpu(Tensor q_in, Tensor k_in, Tensor v_in, Tensor tables_in,
                                                      Tensor lengths_in, double scale, bool return_scores) {
  constexpr const char* op = "paged_decode_attention";
  const std::pair<const Tensor*, const char*> args[] = {
      {&q_in, "q"}, {&k_in, "k_pages"}, {&v_in, "v_pages"}, {&tables_in, "block_tables"}, {&lengths_in, "lengths"}};
  for (const auto& [t, name] : args) {
    check_cpu_or_cuda(*t, op, name);
    LLMPACK_CHECK(t->is_cpu(), op, ": ", name, " must be on the CPU (the CUDA kernel is not written yet)");
  }
  check_dim(q_in, 3, op, "q");
  check_dim(k_in, 3, op, "k_pages");
  check_dim(v_in, 3, op, "v_pages");
  check_dim(tables_in, 3, op, "block_tables");
  check_dim(lengths_in, 2, op, "lengths");
  check_dtype(q_in, {ScalarType::Float, ScalarType::BFloat16, ScalarType::Half}, op, "q");
  LLMPACK_CHECK(k_in.scalar_type() == q_in.scalar_type() && v_in.scalar_type() == q_in.scalar_type(), op,
                ": q, k_pages and v_pages must have one dtype, got ", dtype_name(q_in.scalar_type()), ", ",
                dtype_name(k_in.scalar_type()), ", ", dtype_name(v_in.scalar_type()));
  check_dtype(tables_in, {ScalarType::Int}, op, "block_tables");
  check_dtype(lengths_in, {ScalarType::Int}, op, "lengths");
  const int64_t batch = q_in.size(0), heads = q_in.size(1), d = q_in.size(2);
  const int64_t pages = k_in.size(0), ps = k_in.size(1);
  const int64_t kv_heads = tables_in.size(1), max_pages = tables_in.size(2);
  LLMPACK_CHECK(k_in.size(2) == d && v_in.size(0) == pages && v_in.size(1) == ps && v_in.size(2) == d, op,
                ": k_pages and v_pages must both be [num_pages, page_size, ", d, "] (head_dim from q ",
                shape_str(q_in), "), got ", shape_str(k_in), " and ", shape_str(v_in));
  LLMPACK_CHECK(ps >= 1 && d >= 1, op, ": page_size and head_dim must be positive, got k_pages ", shape_str(k_in));
  LLMPACK_CHECK(tables_in.size(0) == batch && lengths_in.size(0) == batch && lengths_in.size(1) == kv_heads, op,
                ": block_tables must be [", batch, ", num_kv_heads, max_pages] and lengths [", batch,
                ", num_kv_heads], got ", shape_str(tables_in), " and ", shape_str(lengths_in));
  LLMPACK_CHECK(kv_heads >= 1 && heads % kv_heads == 0, op, ": q's ", heads,
                " heads must be a multiple of the block tables' ", kv_heads, " kv-heads");
  Tensor q = dense(q_in), k = dense(k_in), v = dense(v_in), tables = dense(tables_in), lengths = dense(lengths_in);
  const int32_t* tb = static_cast<const int32_t*>(tables.const_data_ptr());
  const int32_t* ln = static_cast<const int32_t*>(lengths.const_data_ptr());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < kv_heads; ++h) {
      const int64_t len = ln[b * kv_heads + h];
      LLMPACK_CHECK(len >= 0 && len <= max_pages * ps, op, ": lengths[", b, ", ", h, "] = ", len, " is outside 0..",
                    max_pages * ps, " (", max_pages, " pages of ", ps, " slots)");
      for (int64_t i = 0; i < (len + ps - 1) / ps; ++i) {
        const int64_t page = tb[(b * kv_heads + h) * max_pages + i];
        LLMPACK_CHECK(page >= 0 && page < pages, op, ": block_tables[", b, ", ", h, ", ", i, "] = ", page,
                      " points outside the pool of ", pages, " pages");
      }
    }
  Tensor out = new_empty(q, {batch, heads, d}, q.scalar_type());
  Tensor scores = new_empty(q, {return_scores ? batch : 0, kv_heads, max_pages * ps}, ScalarType::Float);
  DecodeParams p{q.const_data_ptr(), k.const_data_ptr(), v.const_data_ptr(), tb, ln, out.mutable_data_ptr(),
                 return_scores ? static_cast<float*>(scores.mutable_data_ptr()) : nullptr,
                 batch, heads, kv_heads, d, ps, max_pages, static_cast<float>(scale), dtype_of(q.scalar_type())};
  if (batch * kv_heads > 0) cpu().decode(p);
  return {out, scores};
}

}  // namespace
}  // namespace llmpack::kvcache

#if !defined(LLMPACK_SIMT_EMULATION)
LLMPACK_CPU_IMPL(m) {
  m.impl("paged_decode_attention", TORCH_BOX(&llmpack::kvcache::paged_decode_attention_cpu));
}
#endif
