// DFloat11 CPU kernels, generic build (flags: cmake/LlmpackIsa.cmake); the body
// is df11_cpu_kernels.h.
#define LLMPACK_ISA_NS generic
#include "df11/df11_cpu_kernels.h"

namespace llmpack::df11 {
extern const CpuKernels kCpuGeneric;
const CpuKernels kCpuGeneric = {&generic::histogram, &generic::encode, &generic::decode, &generic::linear};
}  // namespace llmpack::df11
