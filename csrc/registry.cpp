// The one schema registry: every llmpack op is defined here, once. Kernel
// families register their CPU / CUDA implementations in csrc/<family>/*_ops.cpp;
// fake (meta) implementations live in python/llmpack/_ops.py. (LLMPACK_LIBRARY
// is torch.ops.llmpack, or llmpack_simt in the emulator build: registration.h.)
#include "common/registration.h"

LLMPACK_LIBRARY(m) {
  // 2:4 pack: W [N, K] (K % 4 == 0) -> (values [N, K/2], meta uint8 [N, ceil(K/8)]); layout in csrc/sparse24/sparse24.h.
  m.def("sparse24_compress(Tensor W) -> (Tensor values, Tensor meta)");
  // 2:4 unpack: exact inverse of sparse24_compress (dropped entries come back as +0).
  m.def("sparse24_decompress(Tensor values, Tensor meta) -> Tensor");
  // y [..., N] = x [..., K] @ W^T + bias with W given packed as (values, meta); fp32 accumulation.
  m.def("sparse24_linear(Tensor x, Tensor values, Tensor meta, Tensor? bias=None) -> Tensor");
  // 2:4 meta [N, ceil(K/8)] -> flat uint8 [round_up(N, 32) * round_up(ceil(K/8), 4)] in CUTLASS's sm80
  // sparse-GEMM metadata layout (zero-padded, validated); layout in csrc/sparse24/sparse24_reorder.h.
  m.def("sparse24_meta_to_cutlass(Tensor meta) -> Tensor");
#if defined(LLMPACK_SIMT_EMULATION)
  // Test-only (emulator build): the CUTLASS path's transpose+bias kernel, y [m, N] = d[:, :m]^T (+ bias).
  m.def("_transpose_bias(Tensor d, Tensor? bias, int m) -> Tensor");
#endif
}
