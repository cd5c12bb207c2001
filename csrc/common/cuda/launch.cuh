// The one way our kernels are launched. Under nvcc this is a plain
// <<<grid, block, smem, stream>>> launch; in the emulator build the same call
// runs the kernel on the CPU (common/simt/). Kernel files call LLMPACK_LAUNCH
// and never write <<<>>> themselves, so every kernel can run in either world.
#pragma once

#include <utility>

#include "common/cuda/runtime.cuh"

namespace llmpack::cuda {

inline unsigned ceil_div(long long a, long long b) { return static_cast<unsigned>((a + b - 1) / b); }

template <class... KernelArgs, class... Args>
int launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, void* stream,
           Args&&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return 0;  // empty problem: nothing to run
#if defined(LLMPACK_SIMT_EMULATION)
  return ::llmpack::simt::launch(kernel, grid, block, smem, std::forward<Args>(args)...);
#else
  if (smem > 48 * 1024) {
    // Opt-in above the 48 KiB default for dynamic shared memory.
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
    if (e != cudaSuccess) return static_cast<int>(e);
  }
  kernel<<<grid, block, smem, static_cast<cudaStream_t>(stream)>>>(
      static_cast<KernelArgs>(std::forward<Args>(args))...);
  return static_cast<int>(cudaGetLastError());
#endif
}

}  // namespace llmpack::cuda

#define LLMPACK_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::llmpack::cuda::launch(kernel, grid, block, smem, stream, __VA_ARGS__)
