// BTC torch glue for CPU tensors: the packer, the activation quantizer, the
// exact integer core and the linear layer (checks in btc_checks.h, shared
// with the CUDA glue in btc_cuda_ops.cpp). Layout: btc.h.
#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

#include "btc/btc_checks.h"
#include "common/cpu_convert.h"
#include "common/isa.h"
#include "common/parallel.h"
#include "common/registration.h"

namespace llmpack::btc {
namespace {

const CpuKernels& cpu() {
  return pick_isa(&kCpuGeneric, LLMPACK_IF_AVX2(kCpuAvx2), LLMPACK_IF_AVX512(kCpuAvx512),
                  LLMPACK_IF_AVX512(kCpuAvx512Bf16));
}

// x [M, K] of any float dtype -> fp32 rows of `width` floats (zero-padded past K).
std::vector<float> to_f32_rows(const Tensor& x2d, int64_t m, int64_t k, int64_t width) {
  std::vector<float> out(size_t(m * width), 0.f);
  const Dtype dt = dtype_of(x2d.scalar_type());
  const void* src = x2d.const_data_ptr();
  parallel_for(0, m, grain_for(k), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t)
      for (int64_t i = 0; i < k; ++i) {
        const int64_t j = t * k + i;
        out[size_t(t * width + i)] =
            dt == Dtype::kF32 ? static_cast<const float*>(src)[j]
            : dt == Dtype::kBF16 ? bf16_to_f32(static_cast<const uint16_t*>(src)[j])
                                 : f16_to_f32(static_cast<const uint16_t*>(src)[j]);
      }
  });
  return out;
}

std::tuple<Tensor, Tensor> btc_pack_cpu(Tensor codes_in, int64_t wbits, int64_t group_size) {
  constexpr const char* op = "btc_pack";
  LLMPACK_CHECK(codes_in.is_cpu(), op, ": codes must be a CPU tensor (packing runs once, on the host)");
  check_bits(wbits, 8, op, "wbits");
  check_group_size(group_size, op);
  check_dtype(codes_in, {ScalarType::Byte}, op, "codes");
  check_dim(codes_in, 2, op, "codes");
  const Tensor codes = dense(codes_in);
  const int64_t n = codes.size(0), k = codes.size(1), kw = k_words(k), groups = num_groups(group_size, k);
  LLMPACK_CHECK(k >= 1, op, ": codes must have at least one column");
  const uint8_t* c = static_cast<const uint8_t*>(codes.const_data_ptr());
  const int64_t limit = int64_t(1) << wbits;
  for (int64_t i = 0; i < n * k; ++i)
    if (c[i] >= limit) fail(op, ": codes[", i / k, ", ", i % k, "] = ", int(c[i]), " does not fit ", wbits, " bits");
  Tensor planes = new_empty(codes, {n, kw, wbits}, ScalarType::Int);
  Tensor sums = new_empty(codes, {n, groups}, ScalarType::Int);
  uint32_t* pl = static_cast<uint32_t*>(planes.mutable_data_ptr());
  int32_t* cs = static_cast<int32_t*>(sums.mutable_data_ptr());
  parallel_for(0, n, grain_for(k), [&](int64_t b, int64_t e) {
    uint8_t q[32];
    for (int64_t r = b; r < e; ++r) {
      std::memset(cs + r * groups, 0, sizeof(int32_t) * size_t(groups));
      for (int64_t i = 0; i < k; ++i) cs[r * groups + (group_size > 0 ? i / group_size : 0)] += int32_t(c[r * k + i]);
      for (int64_t ch = 0; ch < kw; ++ch) {
        for (int64_t e2 = 0; e2 < 32; ++e2) q[e2] = ch * 32 + e2 < k ? c[r * k + ch * 32 + e2] : 0;
        codes_to_planes(q, wbits, pl + (r * kw + ch) * wbits);
      }
    }
  });
  return {planes, sums};
}

Tensor btc_unpack_cpu(Tensor planes_in, int64_t wbits, int64_t k) {
  constexpr const char* op = "btc_unpack";
  LLMPACK_CHECK(planes_in.is_cpu(), op, ": planes must be a CPU tensor");
  check_bits(wbits, 8, op, "wbits");
  LLMPACK_CHECK(k >= 1, op, ": in_features must be positive, got ", k);
  check_planes(planes_in, wbits, k, op, "planes");
  const Tensor planes = dense(planes_in);
  const int64_t n = planes.size(0), kw = k_words(k);
  const uint32_t* pl = static_cast<const uint32_t*>(planes.const_data_ptr());
  // Padding bits are never written by the packer: a set one is corruption.
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < kw; ++c) {
      uint32_t pad = 0;
      for (int e = 0; e < 32; ++e)
        if (c * 32 + e >= k) pad |= 1u << bit_of(e);
      for (int64_t j = 0; j < wbits; ++j)
        if (pl[(r * kw + c) * wbits + j] & pad)
          fail(op, ": planes[", r, ", ", c, ", ", j, "] has bits set past in_features = ", k, " (corrupted planes)");
    }
  Tensor codes = new_empty(planes, {n, k}, ScalarType::Byte);
  uint8_t* out = static_cast<uint8_t*>(codes.mutable_data_ptr());
  parallel_for(0, n, grain_for(k), [&](int64_t b, int64_t e) {
    uint8_t q[32];
    for (int64_t r = b; r < e; ++r)
      for (int64_t ch = 0; ch * 32 < k; ++ch) {
        planes_to_codes(pl + (r * kw + ch) * wbits, wbits, q);
        std::memcpy(out + r * k + ch * 32, q, size_t(std::min<int64_t>(32, k - ch * 32)));
      }
  });
  return codes;
}

// planes int32 [rows, kw, bits] <-> fields uint8 [rows, kw, 4 bits], chunk by chunk
// (a bijection: padding stays 0, and every byte of one layout has one home in the other).
Tensor btc_convert_cpu(const Tensor& in_, int64_t bits, bool to_fields, const char* op) {
  const char* name = to_fields ? "planes" : "fields";
  LLMPACK_CHECK(in_.is_cpu(), op, ": ", name, " must be a CPU tensor (the fields layout is the CPU kernels')");
  check_bits(bits, 8, op, "wbits");
  check_dtype(in_, {to_fields ? ScalarType::Int : ScalarType::Byte}, op, name);
  check_dim(in_, 3, op, name);
  const int64_t rows = in_.size(0), kw = in_.size(1), per = to_fields ? bits : 4 * bits;
  LLMPACK_CHECK(in_.size(2) == per && kw % kKAlignWords == 0, op, ": ", name, " must be [rows, k_words, ", per,
                "] with k_words a multiple of ", kKAlignWords, " for ", bits, "-bit codes, got ", shape_str(in_));
  const Tensor in = dense(in_);
  Tensor out = to_fields ? new_empty(in, {rows, kw, 4 * bits}, ScalarType::Byte)
                         : new_empty(in, {rows, kw, bits}, ScalarType::Int);
  const uint8_t* src = static_cast<const uint8_t*>(in.const_data_ptr());
  uint8_t* dst = static_cast<uint8_t*>(out.mutable_data_ptr());
  const int64_t chunk_bytes = 4 * bits;  // both layouts
  parallel_for(0, rows * kw, 256, [&](int64_t b, int64_t e) {
    uint8_t q[32];
    for (int64_t c = b; c < e; ++c) {
      const uint8_t* from = src + c * chunk_bytes;
      uint8_t* to = dst + c * chunk_bytes;
      uint32_t w[8];
      if (to_fields) {
        std::memcpy(w, from, size_t(chunk_bytes));
        planes_to_codes(w, bits, q);
        codes_to_fields(q, bits, to);
      } else {
        fields_to_codes(from, bits, q);
        codes_to_planes(q, bits, w);
        std::memcpy(to, w, size_t(chunk_bytes));
      }
    }
  });
  return out;
}

Tensor btc_to_fields_cpu(Tensor planes, int64_t wbits) { return btc_convert_cpu(planes, wbits, true, "btc_to_fields"); }
Tensor btc_to_planes_cpu(Tensor fields, int64_t wbits) { return btc_convert_cpu(fields, wbits, false, "btc_to_planes"); }

std::tuple<Tensor, Tensor, Tensor, Tensor> btc_quantize_activations_cpu(Tensor x, int64_t abits, int64_t group_size,
                                                                        bool symmetric) {
  constexpr const char* op = "btc_quantize_activations";
  check_dtype(x, {ScalarType::Float, ScalarType::BFloat16, ScalarType::Half}, op, "x");
  LLMPACK_CHECK(x.dim() >= 1, op, ": x must have a feature dimension");
  check_bits(abits, 8, op, "abits");
  LLMPACK_CHECK(!(symmetric && abits == 1), op, ": symmetric activations need abits >= 2");
  check_group_size(group_size, op);
  const int64_t k = x.size(x.dim() - 1);
  LLMPACK_CHECK(k >= 1, op, ": x must have at least one feature");
  const Flat f = flatten_x(x, k);
  const int64_t m = f.m, kw = k_words(k), groups = num_groups(group_size, k);
  const std::vector<float> xf = to_f32_rows(f.x2d, m, k, k);
  Tensor planes = new_empty(x, {m, kw, abits}, ScalarType::Int);
  Tensor scales = new_empty(x, {m}, ScalarType::Float);
  Tensor zeros = new_empty(x, {m}, ScalarType::Int);
  Tensor sums = new_empty(x, {m, groups}, ScalarType::Int);
  const QuantParams p{xf.data(), m, k, kw, abits, group_size, groups, symmetric, nullptr,
                      static_cast<uint32_t*>(planes.mutable_data_ptr()), static_cast<float*>(scales.mutable_data_ptr()),
                      static_cast<int32_t*>(zeros.mutable_data_ptr()), static_cast<int32_t*>(sums.mutable_data_ptr())};
  if (m > 0) quantize_acts_cpu(p);
  return {planes, scales, zeros, sums};
}

Tensor btc_matmul_int_cpu(Tensor x_planes_in, Tensor w_planes_in, int64_t abits, int64_t wbits, int64_t group_size,
                          int64_t k) {
  constexpr const char* op = "btc_matmul_int";
  const IntArgs a = check_matmul_int(x_planes_in, w_planes_in, abits, wbits, group_size, k, op);
  const Tensor &xp = a.x_planes, &wp = a.w_planes;
  const int64_t m = a.m, n = a.n, kw = a.kw, groups = a.groups;
  // Activation codes in element order; past K they are 0 whatever the planes hold.
  std::vector<uint8_t> codes(size_t(m * kw * 32), 0);
  const uint32_t* xs = static_cast<const uint32_t*>(xp.const_data_ptr());
  for (int64_t t = 0; t < m; ++t) {
    uint8_t* row = codes.data() + t * kw * 32;
    for (int64_t c = 0; c < kw; ++c) planes_to_codes(xs + (t * kw + c) * abits, abits, row + c * 32);
    std::memset(row + k, 0, size_t(kw * 32 - k));
  }
  Tensor out = new_empty(xp, {m, n, groups}, ScalarType::Int);
  const IntParams p{static_cast<const uint32_t*>(wp.const_data_ptr()), codes.data(), m, n, k, kw, wbits, abits,
                    group_size, groups, static_cast<int32_t*>(out.mutable_data_ptr())};
  if (m * n > 0) cpu().matmul_int(p);
  return out;
}

Tensor btc_linear_cpu(Tensor x, Tensor planes, Tensor scales, std::optional<Tensor> zeros,
                      std::optional<Tensor> offsets, Tensor code_sums, int64_t wbits, int64_t abits,
                      int64_t group_size, std::optional<Tensor> bias, bool act_symmetric,
                      std::optional<Tensor> scaled_sums) {
  constexpr const char* op = "btc_linear";
  check_linear_x(x, planes, bias, abits, act_symmetric, op);
  const int64_t k = x.size(x.dim() - 1);
  LLMPACK_CHECK(k >= 1, op, ": x must have at least one feature");
  const WeightArgs w = check_weight(planes, scales, zeros, offsets, code_sums, scaled_sums, wbits,
                                    group_size, k, op, true);
  if (abits < 16) check_core_range(wbits, abits, group_size, k, op);
  const Flat f = flatten_x(x, w.view.n);
  const int64_t m = f.m, n = w.view.n, kw = w.view.kw, groups = w.view.groups;
  Tensor y = new_empty(x, {m, n}, x.scalar_type());
  std::optional<Tensor> b;
  if (bias) b = dense(*bias);
  LinearParams p{w.view, m, nullptr, {}, b ? b->const_data_ptr() : nullptr, y.mutable_data_ptr(),
                 dtype_of(x.scalar_type())};
  if (m * n == 0) return f.unflatten(y);
  std::vector<float> xf, a_scales;
  std::vector<uint8_t> a_codes;
  std::vector<int32_t> a_zeros, a_sums;
  if (abits == 16) {
    xf = to_f32_rows(f.x2d, m, k, kw * 32);
    p.x = xf.data();
  } else {
    xf = to_f32_rows(f.x2d, m, k, k);
    a_codes.assign(size_t(m * kw * 32), 0);
    a_scales.resize(size_t(m));
    a_zeros.resize(size_t(m));
    a_sums.resize(size_t(m * groups));
    quantize_acts_cpu({xf.data(), m, k, kw, abits, group_size, groups, act_symmetric, a_codes.data(), nullptr,
                       a_scales.data(), a_zeros.data(), a_sums.data()});
    p.a = {a_codes.data(), a_scales.data(), a_zeros.data(), a_sums.data(), abits};
  }
  p.a.abits = abits;
  cpu().linear(p);
  return f.unflatten(y);
}

}  // namespace
}  // namespace llmpack::btc

#if !defined(LLMPACK_SIMT_EMULATION)
LLMPACK_CPU_IMPL(m) {
  m.impl("btc_pack", TORCH_BOX(&llmpack::btc::btc_pack_cpu));
  m.impl("btc_unpack", TORCH_BOX(&llmpack::btc::btc_unpack_cpu));
  m.impl("btc_to_fields", TORCH_BOX(&llmpack::btc::btc_to_fields_cpu));
  m.impl("btc_to_planes", TORCH_BOX(&llmpack::btc::btc_to_planes_cpu));
  m.impl("btc_quantize_activations", TORCH_BOX(&llmpack::btc::btc_quantize_activations_cpu));
  m.impl("btc_matmul_int", TORCH_BOX(&llmpack::btc::btc_matmul_int_cpu));
  m.impl("btc_linear", TORCH_BOX(&llmpack::btc::btc_linear_cpu));
}
#endif
