// BTC CPU kernels, avx512 build (flags: cmake/LlmpackIsa.cmake); the body is
// btc_cpu_kernels.h.
#define LLMPACK_ISA_NS avx512
#include "btc/btc_cpu_kernels.h"

namespace llmpack::btc {
extern const CpuKernels kCpuAvx512;
const CpuKernels kCpuAvx512 = {&avx512::linear, &avx512::matmul_int};
}  // namespace llmpack::btc
