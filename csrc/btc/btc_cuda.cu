// BTC CUDA kernels: placeholder until the binary-MMA kernels land (every
// launcher reports "not supported").
#include "btc/btc.h"

namespace llmpack::btc {
int quantize_acts_cuda(const QuantParams&, const void*, Dtype, void*) { return 801; }
int matmul_int_cuda(const IntParams&, const uint32_t*, void*) { return 801; }
int linear_cuda(const CudaLinearParams&, void*) { return 801; }
}  // namespace llmpack::btc
