// Parallel loops over torch's intra-op thread pool (torch.get_num_threads()),
// so our kernels neither oversubscribe nor ignore torch.set_num_threads.
// Kernel translation units include only this header, not torch's: the per-ISA
// units stay cheap to compile and free of torch's ABI.
//
// The body runs on pool threads behind a C ABI boundary: it must not throw.
// Record failures (e.g. an atomic "first bad index") and check them after.
#pragma once

#include <atomic>
#include <cstdint>

namespace llmpack {

using RangeFn = void (*)(int64_t begin, int64_t end, void* ctx);
void parallel_for_raw(int64_t begin, int64_t end, int64_t grain, RangeFn fn, void* ctx);
int num_threads();

// Calls f(begin, end) on disjoint sub-ranges of [begin, end), at least `grain`
// long, in parallel.
template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  if (begin >= end) return;
  parallel_for_raw(
      begin, end, grain,
      [](int64_t b, int64_t e, void* ctx) { (*static_cast<const F*>(ctx))(b, e); },
      const_cast<void*>(static_cast<const void*>(&f)));
}

// Grain that gives each thread at least ~`min_work` units of work, where one
// iteration costs `work_per_iter` units: stops tiny problems from paying for
// thread wake-ups.
static inline int64_t grain_for(int64_t work_per_iter, int64_t min_work = 1 << 14) {
  if (work_per_iter <= 0) return 1;
  int64_t g = min_work / work_per_iter;
  return g < 1 ? 1 : g;
}

// Lowers `slot` to v if v is smaller: the kernels' "first bad index" output,
// written from many pool threads.
static inline void record_min(std::atomic<int64_t>& slot, int64_t v) {
  int64_t cur = slot.load(std::memory_order_relaxed);
  while (v < cur && !slot.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

}  // namespace llmpack
