// BTC CPU kernels, generic build (flags: cmake/LlmpackIsa.cmake); the body is
// btc_cpu_kernels.h.
#define LLMPACK_ISA_NS generic
#include "btc/btc_cpu_kernels.h"

namespace llmpack::btc {
extern const CpuKernels kCpuGeneric;
const CpuKernels kCpuGeneric = {&generic::linear, &generic::matmul_int};
}  // namespace llmpack::btc
