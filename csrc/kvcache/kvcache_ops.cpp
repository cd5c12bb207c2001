// torch glue for paged decode attention: argument checks (shared by the CPU
// and CUDA paths; every used page of every block table is validated before a
// kernel reads it: on the host for the CPU kernel, on the device by the CUDA
// kernels), allocation, CPU / CUDA registration. Layout: kvcache.h.
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

// The checked, dense arguments (written once for the CPU and CUDA paths).
struct Args {
  Tensor q, k, v, tables, lengths;
  int64_t batch, heads, d, pages, ps, kv_heads, max_pages;
};

Args check_args(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& tables_in,
                const Tensor& lengths_in, const char* op) {
  const std::pair<const Tensor*, const char*> args[] = {
      {&q_in, "q"}, {&k_in, "k_pages"}, {&v_in, "v_pages"}, {&tables_in, "block_tables"}, {&lengths_in, "lengths"}};
  for (const auto& [t, name] : args) {
    check_cpu_or_cuda(*t, op, name);
    check_same_device(q_in, *t, op, "q", name);
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
  return {dense(q_in), dense(k_in), dense(v_in), dense(tables_in), dense(lengths_in),
          batch, heads, d, pages, ps, kv_heads, max_pages};
}

// The two bad-input errors, worded once: the CPU path finds them on the host,
// the CUDA kernels on the device (kvcache.h: cuda_error_code).
[[noreturn]] void fail_length(const char* op, const Args& a, int64_t b, int64_t h, int64_t len) {
  fail(op, ": lengths[", b, ", ", h, "] = ", len, " is outside 0..", a.max_pages * a.ps, " (", a.max_pages,
       " pages of ", a.ps, " slots)");
}
[[noreturn]] void fail_page(const char* op, const Args& a, int64_t b, int64_t h, int64_t i, int64_t page) {
  fail(op, ": block_tables[", b, ", ", h, ", ", i, "] = ", page, " points outside the pool of ", a.pages, " pages");
}

// Outputs: out [B, Hq, D] in q's dtype; scores fp32 [B, Hkv, capacity], or [0, Hkv, capacity] when not asked.
DecodeParams alloc_outputs(const Args& a, double scale, bool return_scores, Tensor& out, Tensor& scores) {
  out = new_empty(a.q, {a.batch, a.heads, a.d}, a.q.scalar_type());
  scores = new_empty(a.q, {return_scores ? a.batch : 0, a.kv_heads, a.max_pages * a.ps}, ScalarType::Float);
  return {a.q.const_data_ptr(), a.k.const_data_ptr(), a.v.const_data_ptr(),
          static_cast<const int32_t*>(a.tables.const_data_ptr()), static_cast<const int32_t*>(a.lengths.const_data_ptr()),
          out.mutable_data_ptr(), return_scores ? static_cast<float*>(scores.mutable_data_ptr()) : nullptr,
          a.batch, a.heads, a.kv_heads, a.d, a.ps, a.max_pages, static_cast<float>(scale),
          dtype_of(a.q.scalar_type())};
}

std::tuple<Tensor, Tensor> paged_decode_attention_cpu(Tensor q_in, Tensor k_in, Tensor v_in, Tensor tables_in,
                                                      Tensor lengths_in, double scale, bool return_scores) {
  constexpr const char* op = "paged_decode_attention";
  const Args a = check_args(q_in, k_in, v_in, tables_in, lengths_in, op);
  const int32_t* tb = static_cast<const int32_t*>(a.tables.const_data_ptr());
  const int32_t* ln = static_cast<const int32_t*>(a.lengths.const_data_ptr());
  for (int64_t b = 0; b < a.batch; ++b)
    for (int64_t h = 0; h < a.kv_heads; ++h) {
      const int64_t len = ln[b * a.kv_heads + h];
      if (len < 0 || len > a.max_pages * a.ps) fail_length(op, a, b, h, len);
      for (int64_t i = 0; i < (len + a.ps - 1) / a.ps; ++i) {
        const int64_t page = tb[(b * a.kv_heads + h) * a.max_pages + i];
        if (page < 0 || page >= a.pages) fail_page(op, a, b, h, i, page);
      }
    }
  Tensor out, scores;
  const DecodeParams p = alloc_outputs(a, scale, return_scores, out, scores);
  if (a.batch * a.kv_heads > 0) cpu().decode(p);
  return {out, scores};
}

#if defined(LLMPACK_WITH_CUDA)
// The tables and lengths stay on the device: the kernels check them and
// report the first bad entry through the error slot (one sync per call);
// only then are they copied to the host, for the message.
std::tuple<Tensor, Tensor> paged_decode_attention_cuda(Tensor q_in, Tensor k_in, Tensor v_in, Tensor tables_in,
                                                       Tensor lengths_in, double scale, bool return_scores) {
  constexpr const char* op = "paged_decode_attention";
  const Args a = check_args(q_in, k_in, v_in, tables_in, lengths_in, op);
  const int64_t splits = cuda_num_splits(a.max_pages * a.ps);
  LLMPACK_CHECK(splits <= 65535, op, ": block tables of ", a.max_pages * a.ps, " slots exceed the CUDA kernel's ",
                65535 * kCudaSplitSlots, "-slot limit");
  Tensor out, scores;
  const DecodeParams p = alloc_outputs(a, scale, return_scores, out, scores);
  if (a.batch * a.kv_heads == 0) return {out, scores};
  CudaContext ctx(a.q);
  Tensor ws = new_empty(a.q, {cuda_workspace_floats(p)}, ScalarType::Float);
  Tensor slot = error_slot(a.q);
  check_launch(decode_cuda(p, a.pages, static_cast<float*>(ws.mutable_data_ptr()),
                           static_cast<int64_t*>(slot.mutable_data_ptr()), ctx.stream),
               op);
  const int64_t code = read_slot(slot);
  if (code != INT64_MAX) {
    const int64_t task = code / (a.max_pages + 1), what = code % (a.max_pages + 1);
    const int64_t b = task / a.kv_heads, h = task % a.kv_heads;
    if (what == 0) {
      const Tensor ln = to_cpu(a.lengths);
      fail_length(op, a, b, h, static_cast<const int32_t*>(ln.const_data_ptr())[task]);
    }
    const Tensor tb = to_cpu(a.tables);
    fail_page(op, a, b, h, what - 1, static_cast<const int32_t*>(tb.const_data_ptr())[task * a.max_pages + what - 1]);
  }
  return {out, scores};
}
#endif

}  // namespace
}  // namespace llmpack::kvcache

#if defined(LLMPACK_WITH_CUDA)
LLMPACK_CUDA_IMPL(m) {
  m.impl("paged_decode_attention", TORCH_BOX(&llmpack::kvcache::paged_decode_attention_cuda));
}
#endif

#if !defined(LLMPACK_SIMT_EMULATION)
LLMPACK_CPU_IMPL(m) {
  m.impl("paged_decode_attention", TORCH_BOX(&llmpack::kvcache::paged_decode_attention_cpu));
}
#endif
