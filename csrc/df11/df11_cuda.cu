// DFloat11 decode on CUDA: one thread per chunk of kChunk values (the index
// gives each chunk's first byte, so chunks decode independently). Each block
// first builds the single-symbol table (4096 x 16 bits) in shared memory from
// the 256 code lengths: one lookup per value. A thread decodes its chunk
// sequentially; its writes are strided by kChunk across the warp (not
// coalesced), which a later version can fix by staging through shared
// memory. Never timed on a GPU: compiled for sm_80/sm_90 and run in the SIMT
// emulator against the reference.
#include "common/cuda/launch.cuh"
#include "df11/df11.h"

namespace llmpack::df11 {
namespace {

constexpr int kThreads = 128;

__global__ void decode_kernel(const uint8_t* lengths, const uint8_t* stream, const uint32_t* offsets,
                              const uint8_t* sm, uint16_t* out, long long n, long long* bad_chunk) {
  __shared__ uint8_t lens[kSymbols];
  __shared__ uint32_t code[kSymbols];
  __shared__ uint16_t first[kLutSize];
  for (int s = threadIdx.x; s < kSymbols; s += blockDim.x) lens[s] = lengths[s];
  for (int i = threadIdx.x; i < kLutSize; i += blockDim.x) first[i] = 0;
  __syncthreads();
  if (threadIdx.x == 0) canonical_codes(lens, code);  // validated on the host
  __syncthreads();
  fill_single_table(lens, code, first, threadIdx.x, kSymbols, blockDim.x);
  __syncthreads();

  const long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (c >= num_chunks(n)) return;
  const long long first_value = c * kChunk;
  const long long count = n - first_value < kChunk ? n - first_value : kChunk;
  unsigned long long pos = (unsigned long long)offsets[c] * 8;
  const unsigned long long end = (unsigned long long)offsets[c + 1] * 8;
  bool ok = true;
  for (long long i = 0; i < count; ++i) {
    if (pos >= end) {
      ok = false;
      break;
    }
    const uint16_t f = first[peek64(stream, pos) & (kLutSize - 1)];
    const unsigned len = f >> 8;
    if (len == 0) {
      ok = false;
      break;
    }
    out[first_value + i] = combine(f & 0xFF, sm[first_value + i]);
    pos += len;
  }
  if (!ok || pos > end)
    atomicMin(reinterpret_cast<unsigned long long*>(bad_chunk), static_cast<unsigned long long>(c));
}

}  // namespace

int decode_cuda(const uint8_t* lengths, const uint8_t* stream, const uint32_t* offsets, const uint8_t* sm,
                uint16_t* out, int64_t n, int64_t* bad_chunk, void* stream_handle) {
  const unsigned blocks = cuda::ceil_div(num_chunks(n), kThreads);
  return LLMPACK_LAUNCH(decode_kernel, dim3(blocks), dim3(kThreads), 0, stream_handle, lengths, stream, offsets, sm,
                        out, static_cast<long long>(n), reinterpret_cast<long long*>(bad_chunk));
}

}  // namespace llmpack::df11
