// 2:4 metadata in the layout CUTLASS's sm80 sparse GEMM reads (16-bit A:
// fp16 / bf16), and the one index function that maps our canonical layout
// (sparse24.h) onto it. The CPU reorder (sparse24_reorder.cpp), the CUDA
// reorder (sparse24_reorder_cuda.cu) and nothing else use cutlass_meta_pos();
// the plain-PyTorch oracle (python/llmpack/reference/sparse24_cutlass.py) is
// written separately from CUTLASS's documented reorder rules.
//
// Step 1, the element type. CUTLASS's sparse GEMM for 16-bit A calls one
// metadata element E a uint16_t covering 16 logical K columns = 4 groups of 4;
// group j of the word sits in bits 4j..4j+3 as i0 | i1 << 2 (the order
// cutlass/util/host_uncompress.h decodes). Read as little-endian uint16, our
// canonical meta row (two groups per byte, low nibble first) *is* that
// "unreordered" E matrix [N, K/16]: word c of row n = bytes 2c, 2c+1. The
// reorder therefore only moves whole 16-bit words; nibbles stay put.
//
// Step 2, where a word goes (cutlass/util/host_reorder.h reorder_meta, with
// GemmKernel::LayoutE = layout::ColumnMajorInterleaved<2>): word (n, c) lands
// at 16-bit index
//     (c / 2) * (2 * Np) + (n / 32) * 64 + idx(n % 32, c % 2),   Np = N rounded up to 32
//     idx = (n%8) << 3 | ((n/16)%2) << 2 | (c%2) << 1 | ((n/8)%2)
// i.e. memory is [K/32 k-steps][Np/32 row blocks][64 words], and inside a
// 128-byte block of 32 rows x 32 logical K the 32-bit word number
// (n%8)*4 + ((n/16)%2)*2 + (c%2) holds row n%8 (+16 if n%32 >= 16) in its low
// half and the row 8 below it in its high half, for the K half c%2.
//
// Why interleaved: mma.sp.m16n8k32 (f16/bf16) takes one 32-bit metadata
// register per thread, and the sparsity selector (0 or 1 for this shape) says
// which two lanes of each quad supply it: 0 -> lanes 0,1, 1 -> lanes 2,3. The
// layout above puts in lane 0/1 of quad g rows g and g+8 of a 16-row tile for
// K 0-15 / 16-31. CUTLASS lets one register serve two consecutive 16-row MMAs
// (selector 0 for rows 0-15, 1 for rows 16-31: kMaxID2 = 2 in
// gemm/warp/mma_sparse_tensor_op.h), so the 32 registers a warp needs for a
// 32-row x 32-K tile are exactly the 128 contiguous bytes above, lane l taking
// 32-bit word l (an ldmatrix of 8 x 16-byte rows hands out words in that
// order): one conflict-free shared-memory load, no shuffles. That fixes
// both the row interleave (stride 8 within 16, 16-row halves next to each
// other) and the 2x2 "Z to N" swap of (row, word) pairs that host_reorder.h
// describes. Column pairs (32 logical K) are the outer, strided dimension
// (ColumnMajorInterleaved<2>, leading dimension 2 * Np words).
//
// Shapes. The buffer is defined for any N and K % 4 == 0: rows are padded to
// a multiple of 32 and words per row to an even count (K to a multiple of
// 32), the padding (and the canonical padding nibble when K/4 is odd) is
// zero. The GEMM only accepts N % 32 == 0 and K % 64 == 0 (sparse24_cutlass.h),
// where there is no padding; zero nibbles are not valid mma.sp metadata and
// are never read.
#pragma once

#include <cstdint>

#include "common/hostdevice.h"
#include "sparse24/sparse24.h"

namespace llmpack::sparse24 {

constexpr int kCutlassMetaRowBlock = 32;  // rows interleaved together
constexpr int kCutlassMetaWordGroups = 4;  // groups of 4 per 16-bit word

// Rows of the CUTLASS buffer: N rounded up to 32.
LLMPACK_HD int64_t cutlass_meta_rows(int64_t n) {
  return (n + kCutlassMetaRowBlock - 1) / kCutlassMetaRowBlock * kCutlassMetaRowBlock;
}
// 16-bit words per row, from the canonical byte count per row: an even
// number (one column pair = 32 logical K).
LLMPACK_HD int64_t cutlass_meta_words_from_cols(int64_t mcols) { return (mcols + 3) / 4 * 2; }
// Bytes of the whole buffer for a canonical meta of shape [n, mcols].
LLMPACK_HD int64_t cutlass_meta_bytes_from_cols(int64_t n, int64_t mcols) {
  return cutlass_meta_rows(n) * cutlass_meta_words_from_cols(mcols) * 2;
}

// Where canonical group `group` of row `row` lives in the CUTLASS buffer:
// the 16-bit word index (little-endian: byte 2*word is its low byte) and the
// bit offset of the group's nibble inside that word. `padded_rows` is
// cutlass_meta_rows(N), the stride between column pairs in words / 2.
struct CutlassMetaPos {
  int64_t word;
  int bit;
};

LLMPACK_HD CutlassMetaPos cutlass_meta_pos(int64_t row, int64_t group, int64_t padded_rows) {
  const int64_t c = group / kCutlassMetaWordGroups;  // canonical 16-bit word of the row
  const int r = static_cast<int>(row % kCutlassMetaRowBlock);
  const int idx = ((r & 7) << 3) | (((r >> 4) & 1) << 2) | (static_cast<int>(c & 1) << 1) | ((r >> 3) & 1);
  const int64_t word = (c >> 1) * (2 * padded_rows) + (row / kCutlassMetaRowBlock) * 64 + idx;
  return {word, static_cast<int>(group % kCutlassMetaWordGroups) * 4};
}

// Canonical meta [rows, mcols] -> CUTLASS buffer of
// cutlass_meta_bytes_from_cols(rows, mcols) bytes (every byte written).
// The metadata is validated on the way (the GEMM hands it to the tensor cores
// unchecked, where an invalid nibble is undefined): every group's nibble must
// be one of the six valid ones and a canonical padding nibble must be 0.
struct MetaReorderParams {
  const uint8_t* meta;  // [rows, mcols], canonical (sparse24.h)
  uint8_t* out;         // cutlass_meta_bytes_from_cols(rows, mcols) bytes
  int64_t rows;         // N
  int64_t mcols;        // meta_cols(K)
  // K/4 when the caller knows K (then exact: the high nibble of the last byte
  // is a group iff groups is even, else padding that must be 0), or -1 when
  // only the meta is known (then that one nibble may be either).
  int64_t groups;
  // Out: lowest row holding an invalid nibble, or kNoError; pre-filled with
  // kNoError by the caller (device memory for the CUDA launcher). The output
  // is complete either way. May be null: no validation on the CPU; the CUDA
  // kernel then traps on an invalid nibble (used where a sync is unwanted).
  int64_t* first_bad_row;
};

// True for a canonical byte whose two nibbles are valid. `last` is whether it
// is the row's last byte, whose high nibble may be padding.
LLMPACK_HD bool cutlass_meta_byte_ok(unsigned byte, bool last, int64_t groups, int64_t mcols) {
  const unsigned lo = byte & 0xF, hi = byte >> 4;
  if (!valid_nibble(lo)) return false;
  if (!last) return valid_nibble(hi);
  if (groups < 0) return hi == 0 || valid_nibble(hi);   // K unknown
  return groups == 2 * mcols ? valid_nibble(hi) : hi == 0;
}

// Copies one canonical 16-bit word (row, c) of the zero-padded canonical meta
// to its CUTLASS position; returns false when it holds an invalid nibble.
// Shared by the CPU loop and the CUDA kernel.
LLMPACK_HD bool cutlass_meta_copy_word(const MetaReorderParams& p, int64_t row, int64_t c,
                                       int64_t padded_rows) {
  const int64_t b = 2 * c;
  const bool in_row = row < p.rows;
  const uint8_t lo = (in_row && b < p.mcols) ? p.meta[row * p.mcols + b] : uint8_t(0);
  const uint8_t hi = (in_row && b + 1 < p.mcols) ? p.meta[row * p.mcols + b + 1] : uint8_t(0);
  const CutlassMetaPos pos = cutlass_meta_pos(row, c * kCutlassMetaWordGroups, padded_rows);
  p.out[2 * pos.word] = lo;
  p.out[2 * pos.word + 1] = hi;
  bool ok = true;
  if (in_row && b < p.mcols) ok = cutlass_meta_byte_ok(lo, b + 1 == p.mcols, p.groups, p.mcols);
  if (in_row && b + 1 < p.mcols) ok = ok && cutlass_meta_byte_ok(hi, b + 2 == p.mcols, p.groups, p.mcols);
  return ok;
}

// CPU (sparse24_reorder.cpp) and CUDA (sparse24_reorder_cuda.cu; returns a
// cudaError_t as int) implementations.
void meta_to_cutlass_cpu(const MetaReorderParams& p);
int launch_meta_to_cutlass_cuda(const MetaReorderParams& p, void* stream);

}  // namespace llmpack::sparse24
