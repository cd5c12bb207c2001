#include "common/parallel.h"

#include <torch/csrc/stable/ops.h>

namespace llmpack {

void parallel_for_raw(int64_t begin, int64_t end, int64_t grain, RangeFn fn, void* ctx) {
  // One thread's worth of work runs inline: no pool hand-off for small calls.
  if (end - begin <= grain || num_threads() == 1) {
    fn(begin, end, ctx);
    return;
  }
  torch::stable::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { fn(b, e, ctx); });
}

int num_threads() { return static_cast<int>(torch::stable::get_num_threads()); }

}  // namespace llmpack
