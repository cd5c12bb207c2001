// CPU reorder of 2:4 metadata into CUTLASS's sm80 sparse-GEMM layout. The
// index logic is cutlass_meta_copy_word / cutlass_meta_pos (sparse24_reorder.h),
// shared with the CUDA kernel. Memory-bound and done once per weight, so one
// plain loop over canonical 16-bit words, rows split across torch's pool.
#include "sparse24/sparse24_reorder.h"

#include "common/parallel.h"

namespace llmpack::sparse24 {

void meta_to_cutlass_cpu(const MetaReorderParams& p) {
  const int64_t padded_rows = cutlass_meta_rows(p.rows);
  const int64_t words = cutlass_meta_words_from_cols(p.mcols);
  // Every (row, word) of the padded buffer is visited once and the mapping is
  // a bijection, so every output byte is written (padding with zeros).
  parallel_for(0, padded_rows, grain_for(words), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < words; ++c) cutlass_meta_copy_word(p, r, c, padded_rows);
  });
}

}  // namespace llmpack::sparse24
