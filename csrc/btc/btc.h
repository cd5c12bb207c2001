// Arbitrary-bit quantized matmul (BTC, after ABQ-LLM's bit-plane method):
// the packed layouts, the kernel parameters and the per-ISA table, shared by
// the torch glue, the CPU units and the CUDA kernel (and mirrored by
// python/llmpack/reference/btc.py).
//
// Codes. A b-bit weight is an unsigned code q in 0 .. 2^b - 1 with, per
// (row, group), a scale s and either an integer zero point z (W = s (q - z):
// GPTQ, compressed-tensors, GGUF Q4_0 / Q8_0 with z = 8 / 128) or a float
// offset m (W = s q + m: GGUF Q4_1, HQQ). Activations are per-token codes
// p in 0 .. 2^a - 1 with a scale and an integer zero point (symmetric:
// zero point 2^(a-1)). The integer core per (token, row, group) is
//   I = sum_{k in group} q_k p_k = sum_{i,j} 2^(i+j) popcount(W_i AND X_j)
// and every correction (zero points, offsets) is applied to it afterwards
// with the per-group code sums, so I is exact and the float epilogue is
// the only rounding.
//
// Bit planes (weights and activations alike):
//   planes  int32 [rows, k_words, bits]  with k_words = round_up(ceil(K / 32), 4)
//   Word (r, c, i) holds bit i (plane i, 0 = least significant) of the codes
//   of elements 32c .. 32c + 31 of row r; all planes of one 32-element
//   chunk are adjacent, so a row streams its chunks front to back.
//   Inside a word, element 32c + e sits at bit  8 (e % 4) + e / 4.  This
//   order lets an x86 unit expand a plane into 32 bytes in element order
//   with one variable shift and one AND (lane l shifted right by l leaves
//   element 4l + r in byte r); an AND + popcount, the only thing the
//   bit-serial and binary-tensor-core paths do, is blind to it.
//   K is padded to a multiple of 128 (the CUDA binary MMA's k): padding
//   codes are 0 in weights and activations, so they add nothing to I.
// Groups: group_size 32, 64 or 128 elements (1, 2 or 4 words), or per
// channel (group_size = -1: one group of all K). groups = ceil(K / group_size);
// group g covers elements g*gs .. min((g+1)*gs, K) - 1 (len_g of them).
// Per-(row, group) tensors, [rows, groups]:
//   scales     fp32 / fp16 / bf16
//   zeros      uint8 (integer zero point, < 2^b)  -- or --
//   offsets    the scales' dtype (float offset m)
//   code_sums  int32  sum of the group's codes (the corrections' input)
#pragma once

#include <cstdint>

#include "common/hostdevice.h"

namespace llmpack::btc {

constexpr int64_t kWordBits = 32;
constexpr int64_t kKAlignWords = 4;  // K padded to 128 elements

LLMPACK_HD int64_t k_words(int64_t k) {
  const int64_t w = (k + kWordBits - 1) / kWordBits;
  return (w + kKAlignWords - 1) / kKAlignWords * kKAlignWords;
}
// Bit of element e (0..31) inside its word.
LLMPACK_HD int bit_of(int e) { return 8 * (e & 3) + (e >> 2); }
// Words per group: group_size / 32, or every real word for per-channel (-1).
LLMPACK_HD int64_t group_words(int64_t group_size, int64_t k) {
  return group_size > 0 ? group_size / kWordBits : (k + kWordBits - 1) / kWordBits;
}
LLMPACK_HD int64_t num_groups(int64_t group_size, int64_t k) {
  return group_size > 0 ? (k + group_size - 1) / group_size : 1;
}
LLMPACK_HD int64_t group_len(int64_t g, int64_t group_size, int64_t k) {
  if (group_size <= 0) return k;
  const int64_t rest = k - g * group_size;
  return rest < group_size ? rest : group_size;
}

enum class Dtype : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

// The packed weight, validated by the glue (shapes, dtypes, code bits).
struct Weight {
  const uint32_t* planes;     // [n, kw, wbits]
  const void* scales;         // [n, groups], scale_dtype
  const uint8_t* zeros;       // [n, groups] or nullptr (then offsets)
  const void* offsets;        // [n, groups], scale_dtype, or nullptr
  const int32_t* code_sums;   // [n, groups]
  int64_t n, k, kw, wbits, group_size, groups;
  Dtype scale_dtype;
};

// Per-token quantized activations (the quantizer's output, on the CPU).
struct Acts {
  const uint8_t* codes;       // [m, kw * 32], element order, padding 0
  const float* scales;        // [m]
  const int32_t* zeros;       // [m]
  const int32_t* code_sums;   // [m, groups]
  int64_t abits;
};

struct LinearParams {
  Weight w;
  int64_t m;
  const float* x;             // [m, kw * 32] fp32, padding 0 (weight-only: abits == 16)
  Acts a;                     // abits < 16
  const void* bias;           // [n] in y_dtype, or nullptr
  void* y;                    // [m, n], y_dtype
  Dtype y_dtype;
};

// I [m, n, groups] = sum over each group of q * p (the exact integer core).
struct IntParams {
  const uint32_t* w_planes;   // [n, kw, wbits]
  const uint8_t* x_codes;     // [m, kw * 32]
  int64_t m, n, k, kw, wbits, abits, group_size, groups;
  int32_t* out;
};

struct CpuKernels {
  void (*linear)(const LinearParams&);
  void (*matmul_int)(const IntParams&);
};
extern const CpuKernels kCpuGeneric, kCpuAvx2, kCpuAvx512;

// The largest |I| a group can reach must fit int32 (checked by the glue).
LLMPACK_HD bool core_fits_int32(int64_t wbits, int64_t abits, int64_t max_group_len) {
  const double qmax = double((int64_t(1) << wbits) - 1), pmax = double((int64_t(1) << abits) - 1);
  return qmax * pmax * double(max_group_len) < 2147483647.0;
}

// Activation quantizer, written once for every CPU level (btc_quant.cpp) and
// mirrored bit for bit by the CUDA kernel: per token over its K values,
//   asymmetric: s = (max - min) / (2^a - 1), z = clamp(round(-min / s), 0, 2^a - 1)
//   symmetric (a >= 2): s = max|x| / (2^(a-1) - 1), z = 2^(a-1)
//   p = clamp(round(x / s) + z, 0, 2^a - 1)
// in fp32, round half to even; s = 1 when the range is 0; a token with a
// non-finite value gets s = NaN and codes 0 (its outputs become NaN).
struct QuantParams {
  const float* x;             // [m, k] fp32 (CPU); CUDA reads x_dtype
  int64_t m, k, kw, abits, group_size, groups;
  bool symmetric;
  uint8_t* codes;             // [m, kw * 32] or nullptr
  uint32_t* planes;           // [m, kw, abits] or nullptr
  float* scales;              // [m]
  int32_t* zeros;             // [m]
  int32_t* code_sums;         // [m, groups]
};
void quantize_acts_cpu(const QuantParams& p);

#if defined(LLMPACK_WITH_CUDA) || defined(LLMPACK_SIMT_EMULATION)
// CUDA launchers (btc_cuda.cu). Each returns the launch error (0 = ok).
// Quantizer: x [m, k] in x_dtype on the device -> planes, scales, zeros, code_sums
// (p.x is read as x_dtype; p.codes is unused).
int quantize_acts_cuda(const QuantParams& p, const void* x, Dtype x_dtype, void* stream);
// I [m, n, groups] from activation planes [m, kw, abits] and weight planes.
int matmul_int_cuda(const IntParams& p, const uint32_t* x_planes, void* stream);
// y [m, n] = epilogue(I) + bias. abits < 16: x_planes / x_scales / x_zeros /
// x_code_sums from quantize_acts_cuda; abits == 16: x [m, k] in y_dtype.
struct CudaLinearParams {
  Weight w;
  int64_t m, abits;
  const void* x;              // abits == 16
  const uint32_t* x_planes;   // abits < 16: [m, kw, abits]
  const float* x_scales;      // [m]
  const int32_t* x_zeros;     // [m]
  const int32_t* x_code_sums; // [m, groups]
  const void* bias;           // [n] in y_dtype, or nullptr
  void* y;                    // [m, n]
  Dtype y_dtype;
};
int linear_cuda(const CudaLinearParams& p, void* stream);
#endif

}  // namespace llmpack::btc
