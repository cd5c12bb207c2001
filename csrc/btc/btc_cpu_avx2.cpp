// BTC CPU kernels, avx2 build (flags: cmake/LlmpackIsa.cmake); the body is
// btc_cpu_kernels.h.
#define LLMPACK_ISA_NS avx2
#include "btc/btc_cpu_kernels.h"

namespace llmpack::btc {
extern const CpuKernels kCpuAvx2;
const CpuKernels kCpuAvx2 = {&avx2::linear, &avx2::matmul_int};
}  // namespace llmpack::btc
