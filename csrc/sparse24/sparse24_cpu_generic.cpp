// 2:4 CPU kernels, generic build: portable C++ only.
#define LLMPACK_ISA_NS generic
#include "sparse24/sparse24_cpu_kernels.h"

namespace llmpack::sparse24::generic {
namespace {

template <class T>
struct ScalarKernel {
  static constexpr int kRows = 1;
  static bool dot(const LinearCtx& c, DType dt, int64_t row, int64_t /*nrows == 1*/, float* acc) {
    return dot_rows_scalar<T>(c, dt, row, 0, c.k / kGroup, 0, c.m, acc);
  }
};

void linear(const LinearParams& p) { linear_dispatch<ScalarKernel>(p); }

}  // namespace
}  // namespace llmpack::sparse24::generic

namespace llmpack::sparse24 {
extern const CpuKernels kCpuGeneric;
const CpuKernels kCpuGeneric = {&generic::compress, &generic::decompress, &generic::linear};
}  // namespace llmpack::sparse24
