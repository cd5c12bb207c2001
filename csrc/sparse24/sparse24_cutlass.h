// 2:4 sparse linear on the tensor cores through CUTLASS's sm80 structured-
// sparse GEMM (CUTLASS 2.x; the same code runs on sm_90). For larger M; the
// decode shapes (small M) have their own kernel.
//
// What runs. The sparse operand of mma.sp is always A, so W [N, K] is A and
// the GEMM computes D[N, M] = W . x^T:
//   A = values [N, K/2] row-major (ld K/2), E = meta in CUTLASS's layout
//   (sparse24_reorder.h), B = x^T, i.e. x [M, K] row-major read as a
//   column-major [K, M] matrix (ld K).
// y [M, N] row-major would be D column-major, which CUTLASS's sparse GEMM
// does not offer: kernel::DefaultSparseGemm is only specialized for a
// row-major C/D (gemm/kernel/default_gemm_sparse.h; dense CUTLASS gets a
// column-major output by swapping A and B, which a sparse A forbids). So D is
// written row-major into the workspace (ld = M rounded up to 8, fp32
// accumulation rounded once to the output dtype), and a small tiled transpose
// kernel writes y = D^T, adding the bias in fp32 on the way (with a bias the
// result is therefore rounded twice: once to fp16/bf16 in D, once after the add).
//
// Kernels: fp16 and bf16 in/out, fp32 accumulate; threadblock 128 x 128 x 64
// (M > 64) or 128 x 64 x 64 (M <= 64), warp 64 x 64 x 64 / 64 x 32 x 64, mma
// 16 x 8 x 32, 3 stages (tile shapes from CUTLASS's own sm80 sparse kernel list).
//
// No torch here: raw pointers and a cudaStream_t passed as void*.
#pragma once

#include <cstddef>
#include <cstdint>

#include "sparse24/sparse24.h"
#include "sparse24/sparse24_reorder.h"

namespace llmpack::sparse24 {

// Return codes of launch_linear_cutlass besides 0 (ok) and positive
// cudaError_t values from the launches.
constexpr int kCutlassUnsupported = -1;        // shape/dtype/alignment: use another path
constexpr int kCutlassWorkspaceTooSmall = -2;  // caller passed < cutlass_workspace_bytes()
constexpr int kCutlassNotBuilt = -3;           // library built without CUTLASS

// K granularity of the kernels (the threadblock K tile): CUTLASS needs K to be
// a multiple of it (out-of-range metadata would read as 0, which is invalid).
constexpr int64_t kCutlassKTile = 64;
// Rows of W (N) must be a multiple of this (the metadata row interleave).
constexpr int64_t kCutlassNAlign = 32;

// Bytes of the reordered metadata for W [n, k] (sparse24_meta_to_cutlass's
// output; any k % 4 == 0).
inline size_t cutlass_meta_bytes(int64_t n, int64_t k) {
  return static_cast<size_t>(cutlass_meta_bytes_from_cols(n, meta_cols(k)));
}

// True when launch_linear_cutlass can run this shape/dtype (given 16-byte
// aligned pointers): built with CUTLASS, dtype f16/bf16, n % 32 == 0,
// k % 64 == 0, m >= 1, and m, n, k within CUTLASS's 32-bit problem sizes.
bool cutlass_linear_supported(int64_t m, int64_t n, int64_t k, DType dtype);

// Device workspace launch_linear_cutlass needs: D [n, round_up(m, 8)] in the
// output dtype, rounded up to 256 bytes. 0 when unsupported.
size_t cutlass_workspace_bytes(int64_t m, int64_t n, int64_t k, DType dtype);

// y = x @ W^T (+ bias) for p.dtype f16/bf16. p.meta and p.first_bad_row are
// not used: meta_cutlass is the reordered metadata (cutlass_meta_bytes(p.n,
// p.k) bytes, from meta_to_cutlass_cpu / launch_meta_to_cutlass_cuda), which
// must have been validated when it was made (its first_bad_row): the tensor
// cores take it unchecked. x, values, meta_cutlass and workspace must be
// 16-byte aligned (else kCutlassUnsupported); workspace must not overlap y.
// Asynchronous on `stream` (a cudaStream_t): two launches, the GEMM and the
// transpose (+ bias). Returns 0, kCutlass* (< 0) or a cudaError_t (> 0).
int launch_linear_cutlass(const LinearParams& p, const uint8_t* meta_cutlass, void* workspace,
                          size_t workspace_bytes, void* stream);

// The second launch of launch_linear_cutlass on its own: y [p.m, p.n] =
// D^T (+ p.bias) for D [p.n, ldd] row-major in p.dtype (f16/bf16). Exposed so
// the emulator tests can run this hand-written kernel (the GEMM cannot run there).
int launch_transpose_bias_cuda(const LinearParams& p, const void* d, int64_t ldd, void* stream);

}  // namespace llmpack::sparse24
