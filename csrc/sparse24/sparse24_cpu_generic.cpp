// 2:4 CPU kernels, generic build (flags: cmake/LlmpackIsa.cmake).
#define LLMPACK_ISA_NS generic
#include "sparse24/sparse24_cpu_kernels.h"

namespace llmpack::sparse24 {
extern const CpuKernels kCpuGeneric;
const CpuKernels kCpuGeneric = {&generic::compress, &generic::decompress};
}  // namespace llmpack::sparse24
