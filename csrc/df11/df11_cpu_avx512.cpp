// DFloat11 CPU kernels, avx512 build (flags: cmake/LlmpackIsa.cmake); the body
// is df11_cpu_kernels.h.
#define LLMPACK_ISA_NS avx512
#include "df11/df11_cpu_kernels.h"

namespace llmpack::df11 {
extern const CpuKernels kCpuAvx512;
const CpuKernels kCpuAvx512 = {&avx512::histogram, &avx512::encode, &avx512::decode, &avx512::linear};
}  // namespace llmpack::df11
