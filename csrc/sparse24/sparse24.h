// 2:4 structured sparsity: compressed layout, kernel parameters, and the
// per-group encoding shared by the CPU kernels, the CUDA kernels and the
// plain-PyTorch reference (python/llmpack/reference/sparse24.py).
//
// Layout of a compressed weight W [N, K] (row-major, K % 4 == 0):
//   W is split along K into groups of 4 consecutive elements; group g of row n
//   is W[n, 4g .. 4g+3]. At most 2 of the 4 are nonzero (2:4).
//   values : [N, K/2], W's dtype. values[n, 2g + j] = W[n, 4g + i_j] for the
//            two kept positions i_0 < i_1 of group g.
//   meta   : uint8 [N, ceil(K/8)]. Byte b of row n holds group 2b in its low
//            nibble and group 2b+1 in its high nibble; a group's nibble is
//            i_0 | (i_1 << 2). The low-index-in-low-bits order is the one the
//            tensor cores' mma.sp metadata uses, so a later reorder for
//            CUTLASS/mma.sp only permutes nibbles. When K/4 is odd the last
//            high nibble is padding and must be 0.
//   Valid nibbles are therefore 0x4 (0,1), 0x8 (0,2), 0xC (0,3), 0x9 (1,2),
//   0xD (1,3), 0xE (2,3); anything else is a corrupted stream.
//
// Which positions are kept: the nonzero ones (an element is "zero" when all
// bits but the sign are 0, so NaN/Inf count as nonzero and -0.0 as zero),
// topped up with the lowest-index zero positions. Decompression writes +0 to
// the two dropped positions, so the round trip is bit-exact except that a
// dropped -0.0 comes back as +0.0.
//
// K that is not a multiple of 4: pad W with zero columns to the next multiple
// of 4 before compressing (llmpack.sparse24.pad_k does it) and pad the
// activations the same way; zero columns contribute nothing to W @ x.
#pragma once

#include <cstdint>

#include "common/hostdevice.h"

namespace llmpack::sparse24 {

constexpr int kGroup = 4;  // elements per group
constexpr int kKept = 2;   // nonzeros allowed per group

LLMPACK_HD int64_t values_cols(int64_t k) { return k / 2; }
LLMPACK_HD int64_t meta_cols(int64_t k) { return (k / kGroup + 1) / 2; }

// 4-bit nonzero mask of a group -> its metadata nibble, or 0 when the group
// has more than 2 nonzeros. For <= 2 nonzeros, the kept pair is the nonzero
// positions topped up with the lowest zero positions.
LLMPACK_HD uint8_t nibble_for_mask(unsigned mask) {
  // Table indexed by the 4-bit mask (bit i = position i is nonzero).
  constexpr uint8_t kTable[16] = {
      0x4, 0x4, 0x4, 0x4, 0x8, 0x8, 0x9, 0,  // 0000 0001 0010 0011 0100 0101 0110 0111
      0xC, 0xC, 0xD, 0, 0xE, 0, 0, 0,        // 1000 1001 1010 1011 1100 1101 1110 1111
  };
  return kTable[mask & 0xF];
}

// True for the six nibbles a 2:4 group can have.
LLMPACK_HD bool valid_nibble(unsigned nib) {
  unsigned i0 = nib & 3, i1 = (nib >> 2) & 3;
  return i0 < i1;
}

// Nibbles of a 32-bit metadata word (8 groups) that are not valid 2:4
// nibbles, as a mask with bit 2 of each bad nibble set (0 = all valid).
// Branch-free SWAR, so the SIMD kernels validate metadata on the fly with a few
// integer ops per 32 K-positions: per nibble, 3 + i1 - i0 lies in [0, 6] (no
// borrow into the next nibble) and has bit 2 set exactly when i1 > i0.
LLMPACK_HD uint32_t invalid_nibbles(uint32_t word) {
  const uint32_t i0 = word & 0x33333333u, i1 = (word >> 2) & 0x33333333u;
  return ~((i1 | 0x44444444u) - i0 - 0x11111111u) & 0x44444444u;
}

// Element bits with the sign cleared: zero iff the element is +0 or -0.
LLMPACK_HD bool is_nonzero_bits(uint32_t bits, int elem_bytes) {
  return elem_bytes == 2 ? (bits & 0x7FFFu) != 0 : (bits & 0x7FFFFFFFu) != 0;
}

// "No error yet" marker for the first-bad-group / first-bad-byte outputs.
constexpr int64_t kNoError = INT64_MAX;

// Compression. Element type is carried as its width only: packing moves bits.
struct CompressParams {
  const void* w;       // [rows, cols]
  void* values;        // [rows, cols/2]
  uint8_t* meta;       // [rows, meta_cols(cols)]
  int64_t rows;
  int64_t cols;        // K, a multiple of 4
  int elem_bytes;      // 2 (fp16/bf16) or 4 (fp32)
  // Out: lowest row-major group index (n * cols/4 + g) with > 2 nonzeros, or
  // kNoError. Outputs for rows at or after that group are unspecified.
  int64_t* first_bad_group;
};

struct DecompressParams {
  const void* values;  // [rows, cols/2]
  const uint8_t* meta; // [rows, meta_cols(cols)]
  void* w;             // [rows, cols]
  int64_t rows;
  int64_t cols;
  int elem_bytes;
  // Out: lowest row-major meta byte index holding an invalid nibble, or kNoError.
  int64_t* first_bad_byte;
};

// Element types of the linear (GEMM) kernels.
enum class DType : int { f32 = 0, f16 = 1, bf16 = 2 };

// y[M, N] = x[M, K] @ W^T + bias, W [N, K] given as (values, meta) above.
// All row-major and dense; x, values, bias and y share `dtype`; accumulation
// is in fp32 on every path.
struct LinearParams {
  const void* x;        // [m, k]
  const void* values;   // [n, k/2]
  const uint8_t* meta;  // [n, meta_cols(k)], canonical layout above
  const void* bias;     // [n] or nullptr
  void* y;              // [m, n]
  int64_t m, n, k;      // k % 4 == 0
  DType dtype;
  // Out: lowest weight row whose metadata holds an invalid nibble, or
  // kNoError. The kernels validate as they stream, so a corrupted stream is
  // an error, never a silently wrong result.
  int64_t* first_bad_row;
};

// Per-ISA CPU kernels (sparse24_cpu_<isa>.cpp); chosen by pick_isa().
struct CpuKernels {
  void (*compress)(const CompressParams&);
  void (*decompress)(const DecompressParams&);
  // Streams only the compressed bytes: the decode-shape (small M) kernel.
  void (*linear)(const LinearParams&);
};
extern const CpuKernels kCpuGeneric, kCpuAvx2, kCpuAvx512, kCpuAvx512Bf16, kCpuAmx;

// CUDA launchers (sparse24_cuda.cu). Return a cudaError_t as int (0 = ok).
// first_bad_* point to device memory pre-filled with kNoError.
int launch_compress_cuda(const CompressParams& p, void* stream);
int launch_decompress_cuda(const DecompressParams& p, void* stream);
// Decode-shape linear on the tensor cores (mma.sp), fp16/bf16, 1 <= m <= 16
// (sparse24_smallm_cuda.cu). Returns -1 when unsupported (caller falls back).
bool smallm_linear_supported(int64_t m, DType dtype);
int launch_linear_smallm_cuda(const LinearParams& p, void* stream);

}  // namespace llmpack::sparse24
