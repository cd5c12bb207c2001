// Paged decode attention, avx2 build (flags: cmake/LlmpackIsa.cmake); the body
// is kvcache_cpu_kernels.h.
#define LLMPACK_ISA_NS avx2
#include "kvcache/kvcache_cpu_kernels.h"

namespace llmpack::kvcache {
extern const CpuKernels kCpuAvx2;
const CpuKernels kCpuAvx2 = {&avx2::decode};
}  // namespace llmpack::kvcache
