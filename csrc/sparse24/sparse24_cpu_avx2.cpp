// 2:4 CPU kernels, avx2 build (flags: cmake/LlmpackIsa.cmake).
#define LLMPACK_ISA_NS avx2
#include "sparse24/sparse24_cpu_kernels.h"

namespace llmpack::sparse24 {
extern const CpuKernels kCpuAvx2;
const CpuKernels kCpuAvx2 = {&avx2::compress, &avx2::decompress};
}  // namespace llmpack::sparse24
