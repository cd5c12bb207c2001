// BTC CPU kernels, avx512_bf16 build: the avx512 flags + AVX512_BF16 +
// AVX512_VNNI (flags: cmake/LlmpackIsa.cmake; every CPU with AVX512_BF16 has
// VNNI, and the level requires both). The body is btc_cpu_kernels.h: with
// VNNI a u8 x s8 chunk dot is one vpdpbusd (chunk_dot / dot_acc), exact for
// every wbits with 8-bit activations.
#define LLMPACK_ISA_NS avx512_bf16
#include "btc/btc_cpu_kernels.h"

namespace llmpack::btc {
extern const CpuKernels kCpuAvx512Bf16;
const CpuKernels kCpuAvx512Bf16 = {&avx512_bf16::linear, &avx512_bf16::matmul_int};
}  // namespace llmpack::btc
