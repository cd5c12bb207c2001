// Paged decode attention, generic build (flags: cmake/LlmpackIsa.cmake); the body
// is kvcache_cpu_kernels.h.
#define LLMPACK_ISA_NS generic
#include "kvcache/kvcache_cpu_kernels.h"

namespace llmpack::kvcache {
extern const CpuKernels kCpuGeneric;
const CpuKernels kCpuGeneric = {&generic::decode};
}  // namespace llmpack::kvcache
