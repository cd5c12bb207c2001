// Paged decode attention, avx512 build (flags: cmake/LlmpackIsa.cmake); the body
// is kvcache_cpu_kernels.h.
#define LLMPACK_ISA_NS avx512
#include "kvcache/kvcache_cpu_kernels.h"

namespace llmpack::kvcache {
extern const CpuKernels kCpuAvx512;
const CpuKernels kCpuAvx512 = {&avx512::decode};
}  // namespace llmpack::kvcache
