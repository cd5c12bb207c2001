// Build and machine facts for `llmpack info` and the tests, exported as plain
// C functions that Python reads with ctypes. This is the only Python binding
// outside torch.ops: a feature query needs no tensors, so neither pybind11 nor
// a torch op is warranted.
#include <string>

#include "common/isa.h"

namespace llmpack {
std::string cpu_feature_list();
}

#define LLMPACK_EXPORT extern "C" __attribute__((visibility("default")))

#ifndef LLMPACK_VERSION
#define LLMPACK_VERSION "0.0.0"
#endif

LLMPACK_EXPORT const char* llmpack_version() { return LLMPACK_VERSION; }

LLMPACK_EXPORT int llmpack_cpu_isa() { return static_cast<int>(llmpack::cpu_isa()); }

LLMPACK_EXPORT int llmpack_active_isa() { return static_cast<int>(llmpack::active_isa()); }

LLMPACK_EXPORT int llmpack_set_active_isa(int level) {
  return static_cast<int>(llmpack::set_active_isa(static_cast<llmpack::Isa>(level)));
}

LLMPACK_EXPORT const char* llmpack_cpu_features() {
  static const std::string feats = llmpack::cpu_feature_list();
  return feats.c_str();
}

// Comma-separated CUDA architectures the kernels were compiled for; "" when
// the library was built without CUDA.
LLMPACK_EXPORT const char* llmpack_cuda_archs() {
#if defined(LLMPACK_CUDA_ARCHS_STR)
  return LLMPACK_CUDA_ARCHS_STR;
#else
  return "";
#endif
}

LLMPACK_EXPORT int llmpack_has_cutlass() {
#if defined(LLMPACK_WITH_CUTLASS)
  return 1;
#else
  return 0;
#endif
}
