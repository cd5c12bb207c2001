// CPU reorder of 2:4 metadata into CUTLASS's sm80 sparse-GEMM layout, with
// validation. The index logic is cutlass_meta_copy_word / cutlass_meta_pos
// (sparse24_reorder.h), shared with the CUDA kernel. Memory-bound and done
// once per weight, so one plain loop over canonical 16-bit words, rows split
// across torch's pool.
#include "sparse24/sparse24_reorder.h"

#include <atomic>

#include "common/parallel.h"

namespace llmpack::sparse24 {

void meta_to_cutlass_cpu(const MetaReorderParams& p) {
  const int64_t padded_rows = cutlass_meta_rows(p.rows);
  const int64_t words = cutlass_meta_words_from_cols(p.mcols);
  std::atomic<int64_t> bad{kNoError};
  // Every (row, word) of the padded buffer is visited once and the mapping is
  // a bijection, so every output byte is written (padding with zeros).
  parallel_for(0, padded_rows, grain_for(words), [&](int64_t r0, int64_t r1) {
    int64_t first_bad = kNoError;  // rows ascend: the first bad one is this chunk's minimum
    for (int64_t r = r0; r < r1; ++r) {
      bool ok = true;
      for (int64_t c = 0; c < words; ++c) ok = cutlass_meta_copy_word(p, r, c, padded_rows) && ok;
      if (!ok && first_bad == kNoError) first_bad = r;
    }
    int64_t cur = bad.load(std::memory_order_relaxed);
    while (first_bad < cur && !bad.compare_exchange_weak(cur, first_bad, std::memory_order_relaxed)) {
    }
  });
  if (p.first_bad_row) *p.first_bad_row = bad.load();
}

}  // namespace llmpack::sparse24
