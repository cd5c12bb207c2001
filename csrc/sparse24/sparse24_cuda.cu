// 2:4 pack / unpack on CUDA. One thread per metadata byte (two groups, 8
// elements): the byte is written whole by one thread, so no atomics on meta.
// Memory-bound and offline; coalescing is good enough with consecutive
// threads taking consecutive bytes of a row.
#include "common/cuda/launch.cuh"
#include "sparse24/sparse24.h"

namespace llmpack::sparse24 {
namespace {

constexpr int kThreads = 256;

template <class Bits>
__global__ void compress_kernel(CompressParams p) {
  const long long groups = p.cols / kGroup, mcols = meta_cols(p.cols);
  const long long total = p.rows * mcols;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
       i += (long long)gridDim.x * blockDim.x) {
    const long long r = i / mcols, b = i % mcols;
    const Bits* w = static_cast<const Bits*>(p.w) + r * p.cols;
    Bits* v = static_cast<Bits*>(p.values) + r * values_cols(p.cols);
    uint8_t byte = 0;
    for (int h = 0; h < 2; ++h) {
      const long long g = 2 * b + h;
      if (g >= groups) break;
      const Bits* x = w + g * kGroup;
      unsigned mask = 0;
      for (int j = 0; j < kGroup; ++j) mask |= unsigned(is_nonzero_bits(x[j], sizeof(Bits))) << j;
      const uint8_t nib = nibble_for_mask(mask);
      if (nib == 0) {
        atomicMin(reinterpret_cast<unsigned long long*>(p.first_bad_group),
                  static_cast<unsigned long long>(r * groups + g));
        continue;
      }
      v[2 * g] = x[nib & 3];
      v[2 * g + 1] = x[nib >> 2];
      byte |= uint8_t(nib << (4 * h));
    }
    p.meta[r * mcols + b] = byte;
  }
}

template <class Bits>
__global__ void decompress_kernel(DecompressParams p) {
  const long long groups = p.cols / kGroup, mcols = meta_cols(p.cols);
  const long long total = p.rows * mcols;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
       i += (long long)gridDim.x * blockDim.x) {
    const long long r = i / mcols, b = i % mcols;
    const uint8_t byte = p.meta[i];
    const Bits* v = static_cast<const Bits*>(p.values) + r * values_cols(p.cols);
    Bits* w = static_cast<Bits*>(p.w) + r * p.cols;
    bool ok = true;
    for (int h = 0; h < 2; ++h) {
      const long long g = 2 * b + h;
      const unsigned nib = (byte >> (4 * h)) & 0xF;
      if (g >= groups) {
        ok = ok && nib == 0;  // padding nibble
        break;
      }
      if (!valid_nibble(nib)) {
        ok = false;
        continue;
      }
      Bits* x = w + g * kGroup;
      for (int j = 0; j < kGroup; ++j) x[j] = 0;
      x[nib & 3] = v[2 * g];
      x[nib >> 2] = v[2 * g + 1];
    }
    if (!ok)
      atomicMin(reinterpret_cast<unsigned long long*>(p.first_bad_byte), static_cast<unsigned long long>(i));
  }
}

unsigned grid_for(long long work) {
  // Grid-stride loops: cap the grid, enough blocks to fill any current GPU.
  const unsigned blocks = cuda::ceil_div(work, kThreads);
  return blocks < 4096u ? blocks : 4096u;
}

}  // namespace

int launch_compress_cuda(const CompressParams& p, void* stream) {
  const unsigned grid = grid_for(p.rows * meta_cols(p.cols));
  return p.elem_bytes == 2 ? LLMPACK_LAUNCH(compress_kernel<uint16_t>, dim3(grid), dim3(kThreads), 0, stream, p)
                           : LLMPACK_LAUNCH(compress_kernel<uint32_t>, dim3(grid), dim3(kThreads), 0, stream, p);
}

int launch_decompress_cuda(const DecompressParams& p, void* stream) {
  const unsigned grid = grid_for(p.rows * meta_cols(p.cols));
  return p.elem_bytes == 2 ? LLMPACK_LAUNCH(decompress_kernel<uint16_t>, dim3(grid), dim3(kThreads), 0, stream, p)
                           : LLMPACK_LAUNCH(decompress_kernel<uint32_t>, dim3(grid), dim3(kThreads), 0, stream, p);
}

}  // namespace llmpack::sparse24
