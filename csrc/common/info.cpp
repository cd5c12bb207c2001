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

#if defined(LLMPACK_SANITIZE_BUILD)
// Sanitized build only: a deliberate bug of the given kind, so the tests can
// show that a report really fails the run (kind 1: heap overflow read, 2:
// signed integer overflow). Never compiled into a release library.
LLMPACK_EXPORT int llmpack_sanitizer_selftest(int kind) {
  if (kind == 1) {
    volatile int n = 4;  // sizes unknown at compile time: ASan, not UBSan's object-size check, reports it
    int* p = new int[n]();
    int v = p[n];
    delete[] p;
    return v;
  }
  if (kind == 2) {
    volatile int big = 0x7fffffff;
    return big + kind;
  }
  return 0;
}
#endif
