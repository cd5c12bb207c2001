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
// Fields (weights only, CPU only; btc_to_fields / btc_to_planes convert):
//   fields  uint8 [rows, k_words, 4 * bits]: the same bytes per chunk as the
//   planes, the same chunk order, but each chunk's codes split into fields
//   of 4, 2 and 1 bits, low bits first: bits = 4 n4 + 2 n2 + n1 (n2, n1 in
//   {0, 1}; 8 bits: two nibble fields). Per chunk, in this order:
//     nibble field  16 bytes: byte j holds element j (low nibble) and j + 16
//     crumb field    8 bytes: byte j, bits 2s .. 2s+1 hold element 8s + j
//     plane field    4 bytes: one plane word (element e at bit 8 (e % 4) + e / 4)
//   An AVX2 unit expands a nibble field with one shift and one AND, a crumb
//   field with one variable shift and one AND, where planes take a shift,
//   an AND and an OR per bit: 4 bits ~12 -> ~4 cycles a chunk on Zen 3.
// Groups: group_size 32, 64 or 128 elements (1, 2 or 4 words), or per
// channel (group_size = -1: one group of all K). groups = ceil(K / group_size);
// group g covers elements g*gs .. min((g+1)*gs, K) - 1 (len_g of them).
// Per-(row, group) tensors, [rows, groups]:
//   scales     fp32 / fp16 / bf16
//   zeros      uint8 (integer zero point, < 2^b)  -- or --
//   offsets    the scales' dtype (float offset m)
//   code_sums  int32  sum of the group's codes (the corrections' input)
// Per row, optional: scaled_sums fp32 [rows] = sum_g s_g code_sums_g, as
// btc_scaled_sums computes it (QuantLinear caches it for the CPU kernels).
#pragma once

#include <cstdint>
#include <cstring>

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
  const uint32_t* planes;     // [n, kw, wbits], or the fields' bytes (then fields = true)
  const void* scales;         // [n, groups], scale_dtype
  const uint8_t* zeros;       // [n, groups] or nullptr (then offsets)
  const void* offsets;        // [n, groups], scale_dtype, or nullptr
  const int32_t* code_sums;   // [n, groups]
  int64_t n, k, kw, wbits, group_size, groups;
  Dtype scale_dtype;
  bool fields;                // planes holds the fields layout (CPU only)
  // [n] fp32 sum_g s_g Q_g (the corrections' only use of the code sums), or
  // nullptr: CPU kernels then form it from the codes (SIMD) or the code sums.
  const float* scaled_sums = nullptr;
};

// One chunk's 32 codes (element order) <-> its `bits` plane words: the one
// place the planes' bit order is applied on the host (packer, converters,
// the portable kernels and the activation quantizer all go through these).
inline void planes_to_codes(const uint32_t* w, int64_t bits, uint8_t* q) {
  for (int e = 0; e < 32; ++e) {
    uint32_t v = 0;
    for (int64_t i = 0; i < bits; ++i) v |= ((w[i] >> bit_of(e)) & 1u) << i;
    q[e] = uint8_t(v);
  }
}
inline void codes_to_planes(const uint8_t* q, int64_t bits, uint32_t* w) {
  for (int64_t i = 0; i < bits; ++i) {
    uint32_t v = 0;
    for (int e = 0; e < 32; ++e) v |= uint32_t((q[e] >> i) & 1) << bit_of(e);
    w[i] = v;
  }
}

// Fields of a `bits`-bit code: nibbles (bits / 4), a crumb, a plane.
LLMPACK_HD constexpr int nibble_fields(int64_t bits) { return int(bits / 4); }
LLMPACK_HD constexpr int crumb_fields(int64_t bits) { return int(bits % 4 / 2); }
LLMPACK_HD constexpr int plane_fields(int64_t bits) { return int(bits % 2); }

// One chunk's 32 codes (element order) <-> its fields (4 * bits bytes), host side:
// the converters and the portable kernel read and write the layout through these.
inline void fields_to_codes(const uint8_t* f, int64_t bits, uint8_t* q) {
  int lo = 0;
  for (int e = 0; e < 32; ++e) q[e] = 0;
  for (int t = 0; t < nibble_fields(bits); ++t, lo += 4, f += 16)
    for (int j = 0; j < 16; ++j) {
      q[j] = uint8_t(q[j] | ((f[j] & 15) << lo));
      q[j + 16] = uint8_t(q[j + 16] | ((f[j] >> 4) << lo));
    }
  if (crumb_fields(bits)) {
    for (int e = 0; e < 32; ++e) q[e] = uint8_t(q[e] | (((f[e % 8] >> (2 * (e / 8))) & 3) << lo));
    lo += 2, f += 8;
  }
  if (plane_fields(bits)) {
    uint32_t w;
    uint8_t b[32];
    std::memcpy(&w, f, 4);
    planes_to_codes(&w, 1, b);
    for (int e = 0; e < 32; ++e) q[e] = uint8_t(q[e] | (b[e] << lo));
  }
}

inline void codes_to_fields(const uint8_t* q, int64_t bits, uint8_t* f) {
  int lo = 0;
  for (int t = 0; t < nibble_fields(bits); ++t, lo += 4, f += 16)
    for (int j = 0; j < 16; ++j) f[j] = uint8_t(((q[j] >> lo) & 15) | (((q[j + 16] >> lo) & 15) << 4));
  if (crumb_fields(bits)) {
    for (int j = 0; j < 8; ++j) {
      int v = 0;
      for (int s = 0; s < 4; ++s) v |= ((q[8 * s + j] >> lo) & 3) << (2 * s);
      f[j] = uint8_t(v);
    }
    lo += 2, f += 8;
  }
  if (plane_fields(bits)) {
    uint32_t w;
    uint8_t b[32];
    for (int e = 0; e < 32; ++e) b[e] = uint8_t(q[e] >> lo);
    codes_to_planes(b, 1, &w);
    std::memcpy(f, &w, 4);
  }
}

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
extern const CpuKernels kCpuGeneric, kCpuAvx2, kCpuAvx512, kCpuAvx512Bf16;

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
