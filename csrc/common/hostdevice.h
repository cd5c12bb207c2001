// Lets one inline function serve the CPU kernels, the CUDA kernels and the
// SIMT emulator build. On the host it is `static inline` on purpose: the same
// header is compiled into generic, AVX2 and AVX-512 units, and a shared
// (COMDAT) inline copy could let the linker hand the AVX-512 instance to the
// generic unit. Internal linkage gives every unit its own copy.
#pragma once
#if defined(__CUDACC__)
#define LLMPACK_HD __host__ __device__ __forceinline__
#else
#define LLMPACK_HD static inline
#endif
