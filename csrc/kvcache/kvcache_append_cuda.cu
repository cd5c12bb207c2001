// paged_kv_append on CUDA: the phases of kvcache_append.h in one block, so a
// decode step's bookkeeping costs one launch and one sync (the error read)
// instead of ~60 small kernels. Threads choose the rows' slots (the victim
// scans are the only work that grows with the budget), one thread plans the
// pages (a serial pop order over at most batch * kv-heads rows), threads
// write the rows. A single block is enough: the work is a few hundred bytes
// per kv-head. Never timed on a GPU: compiled for sm_80/sm_90 and run in the
// SIMT emulator against python/llmpack/reference/kvcache.py.
#include "common/cuda/launch.cuh"
#include "kvcache/kvcache_append.h"

namespace llmpack::kvcache {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ void report(long long* error, long long code) {
  atomicMin(reinterpret_cast<unsigned long long*>(error), static_cast<unsigned long long>(code));
}

__global__ void __launch_bounds__(kThreads) append_kernel(AppendParams p, long long* error, long long* status) {
  __shared__ long long popped;
  __shared__ int write;
  const long long rows = p.batch * p.heads;
  if (threadIdx.x == 0 && !append_num_free_ok(p)) report(error, append_error_code(kBadNumFree, 0, rows));
  for (long long row = threadIdx.x; row < rows; row += blockDim.x) {
    const long long e = append_choose_slot(p, row);
    if (e >= 0) report(error, e);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    write = 0;
    if (error[0] == -1) {
      int64_t e, detail, n;
      const int64_t missing = append_plan_pages(p, &e, &detail, &n);
      if (e >= 0) {
        error[0] = e;
        error[1] = detail;
      } else {
        *status = missing;
        popped = n;
        write = missing == 0;
      }
    }
  }
  __syncthreads();
  if (!write) return;
  for (long long row = threadIdx.x; row < rows; row += blockDim.x) append_write_row(p, row);
  __syncthreads();
  if (threadIdx.x == 0) append_finish(p, popped);
}

}  // namespace

int append_cuda(const AppendParams& p, int64_t* error, int64_t* status, void* stream) {
  return LLMPACK_LAUNCH(append_kernel, dim3(1), dim3(kThreads), 0, stream, p, reinterpret_cast<long long*>(error),
                        reinterpret_cast<long long*>(status));
}

}  // namespace llmpack::kvcache
