// 2:4 sparse linear for decode shapes (M <= 16) on the tensor cores, with
// mma.sp.m16n8k32 (common/cuda/ptx.cuh documents its fragments).
//
// Mapping. The sparse operand of mma.sp is A, so a block takes 16 rows of W
// (the mma's M) and all of x's rows as B's 8 columns (two n8 tiles for
// M = 9..16): D[16 weight rows, 8 x rows] = W_tile . x^T. Our packed layout
// feeds the fragments directly, with no reorder and no shared memory:
//   A: a[0] = the two kept values of group t of row g = one 32-bit load of
//      `values` (they sit side by side); a[1..3] likewise for row g+8 and
//      group t+4.
//   E: quad lane t = 0 / 1 (selector 0) needs groups 0..3 / 4..7 of the
//      k-step for rows g (low half) and g+8 (high half): two canonical meta
//      bytes per row, read as one little-endian uint16.
//   B: b[q] = x[row g][k0 + 2t + 8q .. +1], one 32-bit load.
// Decode is memory-bound: each k-step streams 16 rows x 32 K of W (512 B of
// values + 64 B of meta) once; x stays in L1/L2. The block's 4 warps split K
// (warp w takes k-steps w, w+4, ...) and reduce their fp32 partials through
// shared memory, so N/16 blocks keep every SM busy even for N = 576.
//
// Metadata is validated as it is read (the tensor cores' behaviour on an
// invalid nibble is undefined): a bad nibble is replaced by a valid one for
// the mma, its weight row goes to p.first_bad_row when that is given, and the
// kernel traps. A trap rather than a flag the host reads back: the op then
// needs no device->host sync per call (decode loops and CUDA graphs stay
// asynchronous), and a corrupted stream still ends in an error, never in
// silently wrong output.
#include "common/cuda/launch.cuh"
#include "common/cuda/ptx.cuh"
#include "sparse24/sparse24.h"

namespace llmpack::sparse24 {
namespace {

constexpr int kWarps = 4;
constexpr int kTileRows = 16;  // mma M: weight rows per block
constexpr int kStepK = 32;     // mma K

__device__ __forceinline__ uint32_t ld32(const uint16_t* p) { return *reinterpret_cast<const uint32_t*>(p); }

__device__ __forceinline__ float to_float(uint16_t bits, bool bf16) {
  if (bf16) return __uint_as_float(uint32_t(bits) << 16);
  return __half2float(__ushort_as_half(bits));
}

__device__ __forceinline__ uint16_t from_float(float v, bool bf16) {
  if (bf16) return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  return __half_as_ushort(__float2half_rn(v));
}

// Nibbles of groups g4..g4+3 of `row` as 16 bits (group g4 lowest). Groups at
// or past the end of K read as 0x4 (positions 0,1 over zero values); the
// canonical padding nibble (K/4 odd) must be 0, else *bad is set.
__device__ __forceinline__ uint32_t meta16(const uint8_t* meta, long long mcols, long long row, long long g4,
                                           long long groups, bool* bad) {
  uint32_t out = 0;
  for (int i = 0; i < 4; ++i) {
    const long long gi = g4 + i;
    uint32_t nib = 0x4;
    if (gi < groups) {
      nib = (meta[row * mcols + (gi >> 1)] >> ((gi & 1) * 4)) & 0xF;
    } else if (gi == groups && (groups & 1)) {
      *bad |= ((meta[row * mcols + (gi >> 1)] >> 4) != 0);
    }
    out |= nib << (4 * i);
  }
  return out;
}

template <bool kBf16, int kNTiles>
__global__ void linear_smallm_kernel(LinearParams p) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const long long row_lo = (long long)blockIdx.x * kTileRows + g, row_hi = row_lo + 8;
  const bool ok_lo = row_lo < p.n, ok_hi = row_hi < p.n;
  const uint16_t* vals = static_cast<const uint16_t*>(p.values);
  const uint16_t* x = static_cast<const uint16_t*>(p.x);
  const long long vcols = p.k / 2, mcols = meta_cols(p.k), groups = p.k / kGroup;
  const long long steps = (p.k + kStepK - 1) / kStepK;

  float acc[kNTiles][4];
  for (int j = 0; j < kNTiles; ++j)
    for (int i = 0; i < 4; ++i) acc[j][i] = 0.f;
  bool bad_lo = false, bad_hi = false;

  for (long long s = warp; s < steps; s += kWarps) {  // uniform across the warp
    const long long g0 = s * (kStepK / kGroup);
    const long long ga = g0 + t, gb = g0 + t + 4;
    uint32_t a[4];
    a[0] = ok_lo && ga < groups ? ld32(vals + row_lo * vcols + 2 * ga) : 0u;
    a[1] = ok_hi && ga < groups ? ld32(vals + row_hi * vcols + 2 * ga) : 0u;
    a[2] = ok_lo && gb < groups ? ld32(vals + row_lo * vcols + 2 * gb) : 0u;
    a[3] = ok_hi && gb < groups ? ld32(vals + row_hi * vcols + 2 * gb) : 0u;

    uint32_t e = 0x44444444u;  // lanes t = 2, 3 are not read with selector 0
    if (t < 2) {
      const long long g4 = g0 + 4 * t;
      const uint32_t lo = ok_lo ? meta16(p.meta, mcols, row_lo, g4, groups, &bad_lo) : 0x4444u;
      const uint32_t hi = ok_hi ? meta16(p.meta, mcols, row_hi, g4, groups, &bad_hi) : 0x4444u;
      e = lo | (hi << 16);
      const uint32_t inv = invalid_nibbles(e);  // bit 2 of each bad nibble
      bad_lo |= (inv & 0xFFFFu) != 0;
      bad_hi |= (inv >> 16) != 0;
      const uint32_t fix = (inv >> 2) * 0xFu;   // whole bad nibbles
      e = (e & ~fix) | (0x44444444u & fix);
    }

    for (int j = 0; j < kNTiles; ++j) {
      const long long xr = g + 8 * j;
      uint32_t b[4];
      for (int q = 0; q < 4; ++q) {
        const long long kk = s * kStepK + 2 * t + 8 * q;
        b[q] = xr < p.m && kk < p.k ? ld32(x + xr * p.k + kk) : 0u;
      }
      if (kBf16)
        ptx::mma_sp_m16n8k32_bf16f32<0>(acc[j], a, b, acc[j], e);
      else
        ptx::mma_sp_m16n8k32_f16f32<0>(acc[j], a, b, acc[j], e);
    }
  }

  if (bad_lo || bad_hi) {
    if (p.first_bad_row)
      atomicMin(reinterpret_cast<unsigned long long*>(p.first_bad_row),
                (unsigned long long)(bad_lo ? row_lo : row_hi));
    __trap();  // corrupted metadata
  }

  // Split-K reduction: warps 1..3 park their fragments, warp 0 adds them up.
  __shared__ float partial[kWarps - 1][kNTiles][4][32];
  if (warp > 0)
    for (int j = 0; j < kNTiles; ++j)
      for (int i = 0; i < 4; ++i) partial[warp - 1][j][i][lane] = acc[j][i];
  __syncthreads();
  if (warp != 0) return;
  const uint16_t* bias = static_cast<const uint16_t*>(p.bias);
  uint16_t* y = static_cast<uint16_t*>(p.y);
  for (int j = 0; j < kNTiles; ++j)
    for (int i = 0; i < 4; ++i) {
      float v = acc[j][i];
      for (int w = 0; w < kWarps - 1; ++w) v += partial[w][j][i][lane];
      const long long n = i < 2 ? row_lo : row_hi;            // D row: weight row
      const long long m = 2 * t + (i & 1) + 8 * j;            // D col: x row
      if (n < p.n && m < p.m) {
        if (bias) v += to_float(bias[n], kBf16);
        y[m * p.n + n] = from_float(v, kBf16);
      }
    }
}

}  // namespace

bool smallm_linear_supported(int64_t m, DType dtype) { return dtype != DType::f32 && m >= 1 && m <= 16; }

int launch_linear_smallm_cuda(const LinearParams& p, void* stream) {
  if (!smallm_linear_supported(p.m, p.dtype)) return -1;
  const dim3 grid(cuda::ceil_div(p.n, kTileRows)), block(32 * kWarps);
  const bool bf16 = p.dtype == DType::bf16;
  if (p.m <= 8)
    return bf16 ? LLMPACK_LAUNCH((linear_smallm_kernel<true, 1>), grid, block, 0, stream, p)
                : LLMPACK_LAUNCH((linear_smallm_kernel<false, 1>), grid, block, 0, stream, p);
  return bf16 ? LLMPACK_LAUNCH((linear_smallm_kernel<true, 2>), grid, block, 0, stream, p)
              : LLMPACK_LAUNCH((linear_smallm_kernel<false, 2>), grid, block, 0, stream, p);
}

}  // namespace llmpack::sparse24
