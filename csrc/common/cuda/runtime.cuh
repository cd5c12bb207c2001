// The one include a kernel file (.cu) starts with. Under nvcc it is the CUDA
// runtime plus fp16/bf16 types; in the SIMT emulator build (host compiler,
// LLMPACK_SIMT_EMULATION defined) the same names come from the emulator, so
// the kernel source is identical in both. Never include torch headers here.
#pragma once

#if defined(LLMPACK_SIMT_EMULATION)
#include <source_location>

#include "common/simt/simt.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include <cstddef>

#include "common/hostdevice.h"

// Compute capability x10 of the device code being compiled: __CUDA_ARCH__ in
// nvcc's device passes, LLMPACK_SIMT_ARCH (default 800) in the emulator, 0 in
// host code. Kernels branch on this rather than on __CUDA_ARCH__, so the
// emulator runs the code path the GPU runs.
#if defined(LLMPACK_SIMT_EMULATION)
#define LLMPACK_CUDA_ARCH LLMPACK_SIMT_ARCH
#elif defined(__CUDA_ARCH__)
#define LLMPACK_CUDA_ARCH __CUDA_ARCH__
#else
#define LLMPACK_CUDA_ARCH 0
#endif

// A trailing parameter that captures the caller's source line for the
// emulator's error messages (barrier identity, "which mma failed"); expands
// to nothing under nvcc. Used by ptx.cuh and helpers that wrap a
// warp-synchronous operation.
#if defined(LLMPACK_SIMT_EMULATION)
#define LLMPACK_SITE_PARAM , ::std::source_location llmpack_site = ::std::source_location::current()
#define LLMPACK_SITE_PARAM_ONLY ::std::source_location llmpack_site = ::std::source_location::current()
#else
#define LLMPACK_SITE_PARAM
#define LLMPACK_SITE_PARAM_ONLY
#endif

namespace llmpack::cuda {

// The dynamic shared memory of the launch (LLMPACK_LAUNCH's smem bytes),
// 16-byte aligned, in both worlds. Under nvcc this is the usual
// `extern __shared__` array; kernels never declare `extern __shared__`
// themselves (the emulator cannot provide that declaration).
template <class T>
__device__ __forceinline__ T* dynamic_smem(LLMPACK_SITE_PARAM_ONLY) {
#if defined(LLMPACK_SIMT_EMULATION)
  return static_cast<T*>(::llmpack::simt::detail::dynamic_smem_base(llmpack_site));
#else
  extern __shared__ __align__(16) unsigned char llmpack_dynamic_smem[];
  return reinterpret_cast<T*>(llmpack_dynamic_smem);
#endif
}

// Same, declaring that the kernel uses `count` elements: the emulator fails
// the launch with a clear message when the launch provided fewer bytes (no
// check, no cost under nvcc).
template <class T>
__device__ __forceinline__ T* dynamic_smem(size_t count LLMPACK_SITE_PARAM) {
#if defined(LLMPACK_SIMT_EMULATION)
  ::llmpack::simt::detail::check_dynamic_smem(count * sizeof(T), llmpack_site);
  return static_cast<T*>(::llmpack::simt::detail::dynamic_smem_base(llmpack_site));
#else
  (void)count;
  return dynamic_smem<T>();
#endif
}

}  // namespace llmpack::cuda
