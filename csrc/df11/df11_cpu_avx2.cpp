// DFloat11 CPU kernels, avx2 build (flags: cmake/LlmpackIsa.cmake); the body
// is df11_cpu_kernels.h.
#define LLMPACK_ISA_NS avx2
#include "df11/df11_cpu_kernels.h"

namespace llmpack::df11 {
extern const CpuKernels kCpuAvx2;
const CpuKernels kCpuAvx2 = {&avx2::histogram, &avx2::encode, &avx2::decode, &avx2::linear};
}  // namespace llmpack::df11
