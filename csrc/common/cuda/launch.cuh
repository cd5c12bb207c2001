// The one way our kernels are launched. Under nvcc this is a plain
// <<<grid, block, smem, stream>>> launch; in the emulator build the same call
// runs the kernel on the CPU (common/simt/). Kernel files call LLMPACK_LAUNCH
// and never write <<<>>> themselves, so every kernel can run in either world.
//
// Returns a cudaError_t as int (0 = ok). The emulator throws std::runtime_error
// instead of returning an error, so the message (kernel, block, thread, source
// line, what went wrong) reaches the caller: an op surfaces it as a Python
// RuntimeError.
#pragma once

#include <utility>

#include "common/cuda/runtime.cuh"

namespace llmpack::cuda {

inline unsigned ceil_div(long long a, long long b) { return static_cast<unsigned>((a + b - 1) / b); }

// `name` is the kernel as written at the launch site (for the emulator's messages).
template <class... KernelArgs, class... Args>
int launch_named(const char* name, void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, void* stream,
                 Args&&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return 0;  // empty problem: nothing to run
#if defined(LLMPACK_SIMT_EMULATION)
  (void)stream;
  return ::llmpack::simt::launch_named(name, kernel, grid, block, smem, std::forward<Args>(args)...);
#else
  (void)name;
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

template <class... KernelArgs, class... Args>
int launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, void* stream, Args&&... args) {
  return launch_named(nullptr, kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}

}  // namespace llmpack::cuda

#define LLMPACK_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::llmpack::cuda::launch_named(#kernel, kernel, grid, block, smem, stream, __VA_ARGS__)
