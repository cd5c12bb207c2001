// 2:4 CPU kernels, avx512 build (flags: cmake/LlmpackIsa.cmake).
#define LLMPACK_ISA_NS avx512
#include "sparse24/sparse24_cpu_kernels.h"

namespace llmpack::sparse24 {
extern const CpuKernels kCpuAvx512;
const CpuKernels kCpuAvx512 = {&avx512::compress, &avx512::decompress};
}  // namespace llmpack::sparse24
