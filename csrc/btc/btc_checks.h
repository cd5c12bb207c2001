// BTC argument checks, written once for the CPU glue (btc_ops.cpp) and the
// CUDA glue (btc_cuda_ops.cpp): every message names the op, the argument and
// what was expected. Layout: btc.h.
#pragma once

#include <optional>
#include <string>

#include "btc/btc.h"
#include "common/torch_utils.h"

namespace llmpack::btc {

inline Dtype dtype_of(ScalarType t) {
  return t == ScalarType::Float ? Dtype::kF32 : t == ScalarType::BFloat16 ? Dtype::kBF16 : Dtype::kF16;
}

inline void check_bits(int64_t bits, int64_t hi, const char* op, const char* name) {
  LLMPACK_CHECK(bits >= 1 && bits <= hi, op, ": ", name, " must be in 1..", hi, ", got ", bits);
}

inline void check_group_size(int64_t group_size, const char* op) {
  LLMPACK_CHECK(group_size == 32 || group_size == 64 || group_size == 128 || group_size == -1, op,
                ": group_size must be 32, 64, 128 or -1 (per channel), got ", group_size);
}

// planes int32 [rows, k_words(k), bits] (the one packed shape, weights and activations).
inline void check_planes(const Tensor& planes, int64_t bits, int64_t k, const char* op, const char* name) {
  check_dtype(planes, {ScalarType::Int}, op, name);
  check_dim(planes, 3, op, name);
  LLMPACK_CHECK(planes.size(1) == k_words(k) && planes.size(2) == bits, op, ": ", name, " must be [rows, ",
                k_words(k), ", ", bits, "] for K = ", k, " and ", bits, " bits, got ", shape_str(planes));
}

// fields uint8 [rows, k_words, 4 * bits] (btc_to_fields' output).
inline void check_fields(const Tensor& fields, int64_t bits, int64_t kw, const char* op, const char* name) {
  check_dtype(fields, {ScalarType::Byte}, op, name);
  check_dim(fields, 3, op, name);
  LLMPACK_CHECK(fields.size(1) == kw && fields.size(2) == 4 * bits, op, ": ", name, " must be [rows, ", kw, ", ",
                4 * bits, "] (the fields of ", bits, "-bit codes), got ", shape_str(fields));
}

// The worst-case integer core of one group must fit int32.
inline void check_core_range(int64_t wbits, int64_t abits, int64_t group_size, int64_t k, const char* op) {
  const int64_t len = group_size > 0 ? (group_size < k ? group_size : k) : k;
  LLMPACK_CHECK(core_fits_int32(wbits, abits, len), op, ": a group of ", len, " elements at W", wbits, "A", abits,
                " can overflow the int32 core; use a smaller group_size");
}

// btc_matmul_int's arguments on either device: dense planes and the core's sizes.
struct IntArgs {
  Tensor x_planes, w_planes;
  int64_t m, n, kw, groups;
};
inline IntArgs check_matmul_int(const Tensor& x_planes, const Tensor& w_planes, int64_t abits, int64_t wbits,
                                int64_t group_size, int64_t k, const char* op) {
  check_bits(abits, 8, op, "abits");
  check_bits(wbits, 8, op, "wbits");
  check_group_size(group_size, op);
  LLMPACK_CHECK(k >= 1, op, ": in_features must be positive, got ", k);
  check_planes(x_planes, abits, k, op, "x_planes");
  check_planes(w_planes, wbits, k, op, "w_planes");
  check_same_device(x_planes, w_planes, op, "x_planes", "w_planes");
  check_core_range(wbits, abits, group_size, k, op);
  IntArgs a{dense(x_planes), dense(w_planes), 0, 0, k_words(k), num_groups(group_size, k)};
  a.m = a.x_planes.size(0), a.n = a.w_planes.size(0);
  return a;
}

struct WeightArgs {
  Tensor planes, scales, code_sums;
  std::optional<Tensor> zeros, offsets, scaled_sums;
  Weight view;
};

// The packed weight for inputs of K features; dense (contiguous, aligned) copies where needed.
// `planes` may hold the fields layout (uint8) where the caller's kernels read it (CPU).
inline WeightArgs check_weight(const Tensor& planes, const Tensor& scales, const std::optional<Tensor>& zeros,
                               const std::optional<Tensor>& offsets, const Tensor& code_sums,
                               const std::optional<Tensor>& scaled_sums, int64_t wbits,
                               int64_t group_size, int64_t k, const char* op, bool fields_ok) {
  check_bits(wbits, 8, op, "wbits");
  check_group_size(group_size, op);
  const bool fields = planes.scalar_type() == ScalarType::Byte;
  LLMPACK_CHECK(!fields || fields_ok, op, ": planes is in the fields layout (uint8), which only the CPU kernels "
                "read; convert it with btc_to_planes first");
  if (fields) check_fields(planes, wbits, k_words(k), op, "planes");
  else check_planes(planes, wbits, k, op, "planes");
  const int64_t n = planes.size(0), groups = num_groups(group_size, k);
  LLMPACK_CHECK(zeros.has_value() != offsets.has_value(), op,
                ": give exactly one of zeros (W = s (q - z)) and offsets (W = s q + m)");
  check_dtype(scales, {ScalarType::Float, ScalarType::BFloat16, ScalarType::Half}, op, "scales");
  auto check_groups = [&](const Tensor& t, const char* name) {
    check_same_device(planes, t, op, "planes", name);
    check_dim(t, 2, op, name);
    LLMPACK_CHECK(t.size(0) == n && t.size(1) == groups, op, ": ", name, " must be [", n, ", ", groups, "] (",
                  groups, " groups of ", group_size, " in K = ", k, "), got ", shape_str(t));
  };
  check_groups(scales, "scales");
  check_groups(code_sums, "code_sums");
  check_dtype(code_sums, {ScalarType::Int}, op, "code_sums");
  if (zeros) {
    check_groups(*zeros, "zeros");
    check_dtype(*zeros, {ScalarType::Byte}, op, "zeros");
  } else {
    check_groups(*offsets, "offsets");
    LLMPACK_CHECK(offsets->scalar_type() == scales.scalar_type(), op, ": offsets must have the scales' dtype ",
                  dtype_name(scales.scalar_type()), ", got ", dtype_name(offsets->scalar_type()));
  }
  if (scaled_sums) {
    check_same_device(planes, *scaled_sums, op, "planes", "scaled_sums");
    check_dtype(*scaled_sums, {ScalarType::Float}, op, "scaled_sums");
    LLMPACK_CHECK(scaled_sums->dim() == 1 && scaled_sums->size(0) == n, op, ": scaled_sums must be [", n,
                  "] (one per row of planes), got ", shape_str(*scaled_sums));
  }
  WeightArgs a{dense(planes), dense(scales), dense(code_sums), std::nullopt, std::nullopt, std::nullopt, {}};
  if (zeros) a.zeros = dense(*zeros);
  if (offsets) a.offsets = dense(*offsets);
  if (scaled_sums) a.scaled_sums = dense(*scaled_sums);
  a.view = {static_cast<const uint32_t*>(a.planes.const_data_ptr()),
            a.scales.const_data_ptr(),
            a.zeros ? static_cast<const uint8_t*>(a.zeros->const_data_ptr()) : nullptr,
            a.offsets ? a.offsets->const_data_ptr() : nullptr,
            static_cast<const int32_t*>(a.code_sums.const_data_ptr()),
            n, k, k_words(k), wbits, group_size, groups, dtype_of(scales.scalar_type()), fields,
            a.scaled_sums ? static_cast<const float*>(a.scaled_sums->const_data_ptr()) : nullptr};
  return a;
}

// x [..., K] float, abits in 1..8 or 16 (weight-only), bias [N] in x's dtype.
inline void check_linear_x(const Tensor& x, const Tensor& planes, const std::optional<Tensor>& bias, int64_t abits,
                           bool act_symmetric, const char* op) {
  check_cpu_or_cuda(x, op, "x");
  check_same_device(x, planes, op, "x", "planes");
  LLMPACK_CHECK(x.dim() >= 1, op, ": x must have a feature dimension");
  check_dtype(x, {ScalarType::Float, ScalarType::BFloat16, ScalarType::Half}, op, "x");
  LLMPACK_CHECK(abits == 16 || (abits >= 1 && abits <= 8), op, ": abits must be in 1..8, or 16 (weight-only), got ",
                abits);
  LLMPACK_CHECK(!(act_symmetric && abits == 1), op, ": symmetric activations need abits >= 2");
  if (bias) {
    check_same_device(x, *bias, op, "x", "bias");
    LLMPACK_CHECK(bias->dim() == 1 && bias->size(0) == planes.size(0), op, ": bias must be [", planes.size(0),
                  "], got ", shape_str(*bias));
    LLMPACK_CHECK(bias->scalar_type() == x.scalar_type(), op, ": bias must have x's dtype ",
                  dtype_name(x.scalar_type()), ", got ", dtype_name(bias->scalar_type()));
  }
}

}  // namespace llmpack::btc
