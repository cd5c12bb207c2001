// paged_kv_reposition on CUDA (rule: kvcache_reposition.h), two launches on
// one stream and one sync (the error read):
//   check_kernel  one block: threads check the rows, the lowest error code
//                 wins (atomicMin), as the serial CPU walk would meet it;
//   step_kernel   one block per row: returns at once when the check failed
//                 (nothing is written), else threads record the new key,
//                 then each thread ranks its slots by counting the used slots
//                 that precede them (O(n) per slot instead of the CPU's one
//                 sort: n is the token budget, a few hundred) and re-rotates
//                 the ones whose target moved.
// Never timed on a GPU: compiled for sm_80/sm_90 and run in the SIMT emulator
// against python/llmpack/reference/kvcache.py.
#include "common/cuda/launch.cuh"
#include "kvcache/kvcache_reposition.h"

namespace llmpack::kvcache {
namespace {

constexpr int kThreads = 128;

__device__ __forceinline__ void store_as(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_as(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store_as(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

__global__ void __launch_bounds__(kThreads) check_kernel(RepositionParams p, long long* error) {
  for (long long row = threadIdx.x; row < p.batch * p.heads; row += blockDim.x) {
    const long long e = reposition_check_row(p, row);
    if (e >= 0) atomicMin(reinterpret_cast<unsigned long long*>(error), static_cast<unsigned long long>(e));
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) step_kernel(RepositionParams p, const long long* error) {
  const long long row = blockIdx.x;
  if (error[0] != -1 || !p.reposition[row / p.heads]) return;
  for (long long i = threadIdx.x; i < p.head_dim; i += blockDim.x) reposition_record(p, row, i);
  __syncthreads();
  const long long n = p.lengths[row];
  const int64_t* tok = p.token_index + row * reposition_capacity(p);
  T* pool = static_cast<T*>(p.k_pages);
  auto store = [pool](int64_t at, float v) { store_as(pool + at, v); };
  for (long long s = threadIdx.x; s < n; s += blockDim.x) {
    long long r = 0;
    for (long long j = 0; j < n; ++j) r += reposition_precedes(tok, j, s);
    reposition_slot(p, row, s, r, store);
  }
}

template <class T>
int launch(const RepositionParams& p, long long* error, void* stream) {
  if (const int e = LLMPACK_LAUNCH(check_kernel, dim3(1), dim3(kThreads), 0, stream, p, error)) return e;
  return LLMPACK_LAUNCH(step_kernel<T>, dim3(static_cast<unsigned>(p.batch * p.heads)), dim3(kThreads), 0, stream,
                        p, static_cast<const long long*>(error));
}

}  // namespace

int reposition_cuda(const RepositionParams& p, int64_t* error, void* stream) {
  long long* e = reinterpret_cast<long long*>(error);
  switch (p.dtype) {
    case Dtype::kF32: return launch<float>(p, e, stream);
    case Dtype::kBF16: return launch<__nv_bfloat16>(p, e, stream);
    default: return launch<__half>(p, e, stream);
  }
}

}  // namespace llmpack::kvcache
