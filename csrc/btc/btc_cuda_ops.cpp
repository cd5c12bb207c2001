// BTC torch glue for CUDA tensors: the activation quantizer, the exact integer
// core and the linear layer on the binary tensor cores (kernels in
// btc_cuda.cu). The checks are btc_checks.h's, in the CPU glue's order
// (btc_ops.cpp), so a bad input gets the same message on either device.
// btc_pack / btc_unpack stay CPU-only (packing runs once, on the host).
// Layout: btc.h.
#include <optional>
#include <tuple>

#include "btc/btc_checks.h"
#include "common/registration.h"

#if defined(LLMPACK_WITH_CUDA)
namespace llmpack::btc {
namespace {

// The kernels put tokens on gridDim.y (8 per block).
constexpr int64_t kMaxTokens = int64_t(65535) * 8;

void check_tokens(int64_t m, const char* op) {
  LLMPACK_CHECK(m <= kMaxTokens, op, ": ", m, " tokens exceed the CUDA kernels' limit of ", kMaxTokens,
                " per call; split the batch");
}

struct QuantOut {
  Tensor planes, scales, zeros, sums;
};

// x2d [m, k] dense on the device -> the quantizer's four outputs.
QuantOut quantize(const Tensor& x2d, int64_t m, int64_t k, int64_t abits, int64_t group_size, bool symmetric,
                  const char* op) {
  const int64_t kw = k_words(k), groups = num_groups(group_size, k);
  QuantOut o{new_empty(x2d, {m, kw, abits}, ScalarType::Int), new_empty(x2d, {m}, ScalarType::Float),
             new_empty(x2d, {m}, ScalarType::Int), new_empty(x2d, {m, groups}, ScalarType::Int)};
  if (m == 0) return o;
  const QuantParams p{nullptr, m, k, kw, abits, group_size, groups, symmetric, nullptr,
                      static_cast<uint32_t*>(o.planes.mutable_data_ptr()),
                      static_cast<float*>(o.scales.mutable_data_ptr()),
                      static_cast<int32_t*>(o.zeros.mutable_data_ptr()),
                      static_cast<int32_t*>(o.sums.mutable_data_ptr())};
  CudaContext ctx(x2d);
  check_launch(quantize_acts_cuda(p, x2d.const_data_ptr(), dtype_of(x2d.scalar_type()), ctx.stream), op);
  return o;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> btc_quantize_activations_cuda(Tensor x, int64_t abits,
                                                                         int64_t group_size, bool symmetric) {
  constexpr const char* op = "btc_quantize_activations";
  check_dtype(x, {ScalarType::Float, ScalarType::BFloat16, ScalarType::Half}, op, "x");
  LLMPACK_CHECK(x.dim() >= 1, op, ": x must have a feature dimension");
  check_bits(abits, 8, op, "abits");
  LLMPACK_CHECK(!(symmetric && abits == 1), op, ": symmetric activations need abits >= 2");
  check_group_size(group_size, op);
  const int64_t k = x.size(x.dim() - 1);
  LLMPACK_CHECK(k >= 1, op, ": x must have at least one feature");
  const Flat f = flatten_x(x, k);
  check_tokens(f.m, op);
  QuantOut o = quantize(f.x2d, f.m, k, abits, group_size, symmetric, op);
  return {o.planes, o.scales, o.zeros, o.sums};
}

Tensor btc_matmul_int_cuda(Tensor x_planes_in, Tensor w_planes_in, int64_t abits, int64_t wbits, int64_t group_size,
                           int64_t k) {
  constexpr const char* op = "btc_matmul_int";
  const IntArgs a = check_matmul_int(x_planes_in, w_planes_in, abits, wbits, group_size, k, op);
  const Tensor &xp = a.x_planes, &wp = a.w_planes;
  const int64_t m = a.m, n = a.n, kw = a.kw, groups = a.groups;
  check_tokens(m, op);
  Tensor out = new_empty(xp, {m, n, groups}, ScalarType::Int);
  if (m * n == 0) return out;
  // Activation bits past K are ignored (the kernel masks them), as on the CPU path.
  const IntParams p{static_cast<const uint32_t*>(wp.const_data_ptr()), nullptr, m, n, k, kw, wbits, abits,
                    group_size, groups, static_cast<int32_t*>(out.mutable_data_ptr())};
  CudaContext ctx(xp);
  check_launch(matmul_int_cuda(p, static_cast<const uint32_t*>(xp.const_data_ptr()), ctx.stream), op);
  return out;
}

Tensor btc_linear_cuda(Tensor x, Tensor planes, Tensor scales, std::optional<Tensor> zeros,
                       std::optional<Tensor> offsets, Tensor code_sums, int64_t wbits, int64_t abits,
                       int64_t group_size, std::optional<Tensor> bias, bool act_symmetric,
                       std::optional<Tensor> scaled_sums) {
  constexpr const char* op = "btc_linear";
  check_linear_x(x, planes, bias, abits, act_symmetric, op);
  const int64_t k = x.size(x.dim() - 1);
  LLMPACK_CHECK(k >= 1, op, ": x must have at least one feature");
  const WeightArgs w = check_weight(planes, scales, zeros, offsets, code_sums, scaled_sums, wbits,
                                    group_size, k, op, false);
  if (abits < 16) check_core_range(wbits, abits, group_size, k, op);
  const Flat f = flatten_x(x, w.view.n);
  const int64_t m = f.m, n = w.view.n;
  check_tokens(m, op);
  Tensor y = new_empty(x, {m, n}, x.scalar_type());
  if (m * n == 0) return f.unflatten(y);
  std::optional<Tensor> b;
  if (bias) b = dense(*bias);
  CudaLinearParams p{w.view, m, abits, nullptr, nullptr, nullptr, nullptr, nullptr,
                     b ? b->const_data_ptr() : nullptr, y.mutable_data_ptr(), dtype_of(x.scalar_type())};
  std::optional<QuantOut> q;  // kept alive until the launch is queued (the stream orders the rest)
  if (abits == 16) {
    p.x = f.x2d.const_data_ptr();
  } else {
    q = quantize(f.x2d, m, k, abits, group_size, act_symmetric, op);
    p.x_planes = static_cast<const uint32_t*>(q->planes.const_data_ptr());
    p.x_scales = static_cast<const float*>(q->scales.const_data_ptr());
    p.x_zeros = static_cast<const int32_t*>(q->zeros.const_data_ptr());
    p.x_code_sums = static_cast<const int32_t*>(q->sums.const_data_ptr());
  }
  CudaContext ctx(x);
  check_launch(linear_cuda(p, ctx.stream), op);
  return f.unflatten(y);
}

}  // namespace
}  // namespace llmpack::btc

LLMPACK_CUDA_IMPL(m) {
  m.impl("btc_quantize_activations", TORCH_BOX(&llmpack::btc::btc_quantize_activations_cuda));
  m.impl("btc_matmul_int", TORCH_BOX(&llmpack::btc::btc_matmul_int_cuda));
  m.impl("btc_linear", TORCH_BOX(&llmpack::btc::btc_linear_cuda));
}
#endif
