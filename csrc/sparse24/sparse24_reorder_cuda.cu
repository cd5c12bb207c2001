// CUDA reorder of 2:4 metadata into CUTLASS's sm80 sparse-GEMM layout; same
// index function as the CPU path (sparse24_reorder.h). One thread per
// canonical 16-bit word: reads are coalesced along a row, writes scatter
// within 128-byte blocks. Done once per weight (cache the result), so this is
// kept simple rather than staged through shared memory. Invalid nibbles are
// reported through p.first_bad_row (device memory, pre-filled with kNoError).
#include "common/cuda/launch.cuh"
#include "sparse24/sparse24_reorder.h"

namespace llmpack::sparse24 {
namespace {

constexpr int kReorderThreads = 256;

__global__ void meta_to_cutlass_kernel(MetaReorderParams p) {
  const long long padded_rows = cutlass_meta_rows(p.rows);
  const long long words = cutlass_meta_words_from_cols(p.mcols);
  const long long total = padded_rows * words;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
       i += (long long)gridDim.x * blockDim.x)
    if (!cutlass_meta_copy_word(p, i / words, i % words, padded_rows)) {
      if (!p.first_bad_row) __trap();  // per-call reorder inside sparse24_linear: no sync to report
      atomicMin(reinterpret_cast<unsigned long long*>(p.first_bad_row), static_cast<unsigned long long>(i / words));
    }
}

}  // namespace

int launch_meta_to_cutlass_cuda(const MetaReorderParams& p, void* stream) {
  const long long total = cutlass_meta_rows(p.rows) * cutlass_meta_words_from_cols(p.mcols);
  const long long blocks = (total + kReorderThreads - 1) / kReorderThreads;
  const unsigned grid = blocks < 4096 ? static_cast<unsigned>(blocks) : 4096u;  // grid-stride loop
  return LLMPACK_LAUNCH(meta_to_cutlass_kernel, dim3(grid), dim3(kReorderThreads), 0, stream, p);
}

}  // namespace llmpack::sparse24
