// BTC on CUDA: the arbitrary-bit quantized matmul on the binary tensor cores
// (ABQ-LLM's bit-plane method). Layouts, parameters and rules: btc.h.
//
//   quant_kernel   grid (m), 256 threads: one block per token. Pass 1: min,
//                  max, max|x| and "all finite" over the token's K values
//                  (warp shuffles + shared memory; min / max are exact, so the
//                  order is irrelevant); the scale and zero point by the rule
//                  in btc.h in fp32 (IEEE division, rintf = round half even),
//                  bit for bit the CPU quantizer's. Pass 2: warps over 32-element
//                  words; lane l codes element 4 (l % 8) + l / 8, the element
//                  whose bit in the word is l, so one __ballot_sync per plane
//                  is the packed word; the word's code sum (sum_i 2^i popc)
//                  goes to its group's code_sums by an atomicAdd (integers:
//                  order-independent).
//   int_kernel /   grid (ceil(n / 64), ceil(m / 8)), 4 warps: each warp owns a
//   linear_kernel  16-row x 8-token tile (A = 16 weight rows, B = 8 tokens of
//                  mma.m16n8k256.and.popc) and walks K in 256-bit steps (8 words).
//                  Per step a lane loads its A words (rows g, g+8; words t, 4+t)
//                  of every weight plane and its B words (token g; words t,
//                  4+t) of every activation plane -- the planes of a word are
//                  adjacent, so these are short contiguous runs -- then issues
//                  one MMA per plane pair (i, j), adding D << (i + j) into the
//                  group's int32 accumulator (exact: |I| < 2^31 is checked by
//                  the glue). A group narrower than the 256-bit step (32 / 64 /
//                  128 elements = 1 / 2 / 4 words) gets its own MMAs with the
//                  other words of A zeroed (the tensor core's k cannot be split):
//                  8 / 4 / 2 MMAs per step and plane pair instead of 1, the
//                  price of exact per-group sums on this shape. Per-channel
//                  groups accumulate across all steps. At a group's end
//                  int_kernel stores I; linear_kernel applies the epilogue
//                    zero point: y += s_g sx ((I - zx Q_g) - z_g (P_g - zx len_g))
//                    offset:     y += sx s_g (I - zx Q_g) + m_g sx (P_g - zx len_g)
//                  (the integer parts in int64, then one conversion to fp32)
//                  to 4 fp32 outputs per lane, and finally adds the bias and
//                  stores y in y_dtype. Tiles past m / n load zeros and store
//                  nothing; every lane stays in the MMAs (warp-collective).
//   wonly_kernel   abits = 16 (weight-only, x float): CUDA cores, no MMA. grid
//                  (ceil(n / 4), ceil(m / 8)), a warp per weight row and 8
//                  tokens; lane e takes element e of each word (coalesced x
//                  reads; the word's planes are one broadcast load), rebuilds
//                  its code, dequantizes it (s (q - z) or s q + m) and
//                  accumulates w * x in fp32 per token; a warp sum at the end.
//
// Binary MMA on Hopper. PTX's mma .b1 has two operations, .xor.popc (sm_75+)
// and .and.popc (sm_80+, PTX 7.1); the ISA notes that .xor.popc is not
// native from sm_90 on. What ptxas 13.0 does (checked by compiling and
// disassembling, no GPU): for sm_80 .xor.popc is one BMMA.88128.XOR.POPC;
// for sm_90 it is still accepted but lowered to two BMMA.88128.AND.POPC on
// complemented operands (popc(a ^ b) = popc(a & ~b) + popc(~a & b)) plus
// LOP3 NOTs -- i.e. Hopper's tensor cores keep only AND-popc. This kernel
// uses .and.popc only, which is one BMMA.168256.AND.POPC per call on both
// sm_80 and sm_90 (the SASS of int_kernel / linear_kernel). NVIDIA documents
// no int1 tensor-core throughput for Hopper (the H100 datasheets drop the
// A100's INT1 row; sm_90a's warpgroup wgmma is not used here), so the sm_90 build
// is correct but its speed is unknown until measured; the tiling was chosen
// for sm_80.
//
// Never timed on a GPU: compiled for sm_80 / sm_90 and run in the SIMT
// emulator against python/llmpack/reference/btc.py (tests/test_emulator_btc.py).
#include "common/cuda/launch.cuh"
#include "common/cuda/ptx.cuh"
#include "btc/btc.h"

namespace llmpack::btc {
namespace {

constexpr unsigned kFull = 0xFFFFFFFFu;
constexpr int kWarps = 4;                 // int / linear / weight-only kernels
constexpr int kThreads = 32 * kWarps;
constexpr int kTileRows = 16, kTileTokens = 8;
constexpr int kStepWords = 8;             // 256 bits per MMA step
constexpr int kMaxBits = 8;
constexpr int kQuantThreads = 256;
constexpr int kQuantWarps = kQuantThreads / 32;

__device__ __forceinline__ float load_f(const void* p, Dtype d, long long i) {
  if (d == Dtype::kF32) return static_cast<const float*>(p)[i];
  if (d == Dtype::kBF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  return __half2float(static_cast<const __half*>(p)[i]);
}
__device__ __forceinline__ void store_f(void* p, Dtype d, long long i, float v) {
  if (d == Dtype::kF32)
    static_cast<float*>(p)[i] = v;
  else if (d == Dtype::kBF16)
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  else
    static_cast<__half*>(p)[i] = __float2half_rn(v);
}

__device__ __forceinline__ bool finite_f(float v) { return (__float_as_uint(v) & 0x7F800000u) != 0x7F800000u; }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
__device__ __forceinline__ float warp_min(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

// ---- activation quantizer ----------------------------------------------------------------
__global__ void __launch_bounds__(kQuantThreads) quant_kernel(QuantParams p, const void* x, Dtype x_dtype) {
  __shared__ float red[3][kQuantWarps];
  const long long tok = blockIdx.x, k = p.k, kw = p.kw;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const long long xrow = tok * k;
  int32_t* sums = p.code_sums + tok * p.groups;
  for (long long g = threadIdx.x; g < p.groups; g += blockDim.x) sums[g] = 0;

  // Pass 1: range and finiteness (NaN-free min / max: fminf drops NaN, the flag catches it).
  float lo = INFINITY, hi = -INFINITY, amax = 0.f;
  int finite = 1;
  for (long long c = threadIdx.x; c < k; c += blockDim.x) {
    const float v = load_f(x, x_dtype, xrow + c);
    finite &= finite_f(v) ? 1 : 0;
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
    amax = fmaxf(amax, fabsf(v));
  }
  lo = warp_min(lo);
  hi = warp_max(hi);
  amax = warp_max(amax);
  if (lane == 0) red[0][warp] = lo, red[1][warp] = hi, red[2][warp] = amax;
  finite = __syncthreads_and(finite);  // (also publishes red and the zeroed sums)
  for (int w = 0; w < kQuantWarps; ++w) {
    lo = fminf(lo, red[0][w]);
    hi = fmaxf(hi, red[1][w]);
    amax = fmaxf(amax, red[2][w]);
  }

  // The rule of btc.h, fp32, round half to even.
  const int a = static_cast<int>(p.abits);
  const float top = static_cast<float>((1 << a) - 1);
  float s, zf;
  if (p.symmetric) {
    s = amax / static_cast<float>((1 << (a - 1)) - 1);
    if (s == 0.f) s = 1.f;
    zf = static_cast<float>(1 << (a - 1));
  } else {
    s = (hi - lo) / top;
    if (s == 0.f) s = 1.f;
    zf = fminf(fmaxf(rintf(-lo / s), 0.f), top);
  }
  if (!finite_f(s)) finite = 0;
  if (threadIdx.x == 0) {
    p.scales[tok] = finite ? s : NAN;
    p.zeros[tok] = finite ? static_cast<int32_t>(zf) : 0;
  }

  // Pass 2: planes and code sums. Lane l codes element e = 4 (l % 8) + l / 8 (bit_of(e) == l).
  const int e = 4 * (lane & 7) + (lane >> 3);
  const long long gw = p.group_size > 0 ? p.group_size / kWordBits : kw;  // words per group
  uint32_t* planes = p.planes + tok * kw * p.abits;
  for (long long c = warp; c < kw; c += kQuantWarps) {
    const long long col = c * kWordBits + e;
    int code = 0;
    if (finite && col < k) {
      const float v = rintf(load_f(x, x_dtype, xrow + col) / s) + zf;
      code = static_cast<int>(fminf(fmaxf(v, 0.f), top));
    }
    int sum = 0;
    for (int i = 0; i < a; ++i) {
      const unsigned word = __ballot_sync(kFull, (code >> i) & 1);
      sum += __popc(word) << i;
      if (lane == 0) planes[c * p.abits + i] = word;
    }
    if (lane == 0 && sum != 0) atomicAdd(&sums[c / gw], sum);  // sum != 0: a real word, its group exists
  }
}

// ---- the binary-MMA core -------------------------------------------------------------------
struct Tile {
  const uint32_t* w;   // [n, kw, wbits]
  const uint32_t* x;   // [m, kw, abits]
  long long n, m, k, kw;
  int wbits, abits;
  long long group_size, groups;
};

// Runs the 16 x 8 tile at (row0, tok0) of one warp over all of K; calls
// emit(g, acc) at the end of each group with acc[r] = I for row row0 + g8 +
// 8 (r / 2), token tok0 + 2 t + r % 2 (g8 = lane / 4, t = lane % 4).
template <class Emit>
__device__ __forceinline__ void core(const Tile& T, long long row0, long long tok0, Emit&& emit) {
  const int lane = static_cast<int>(ptx::lane_id());
  const int g8 = lane >> 2, t = lane & 3;
  const long long r_lo = row0 + g8, r_hi = r_lo + 8, tk = tok0 + g8;
  const bool ok_lo = r_lo < T.n, ok_hi = r_hi < T.n, ok_t = tk < T.m;
  const long long steps = (T.kw + kStepWords - 1) / kStepWords;
  // Activation bits past K never count (as on the CPU path): words past the
  // last real one read as 0, the last one keeps the bits of elements < K.
  const long long last = (T.k - 1) / kWordBits;
  const int rest = static_cast<int>(T.k - last * kWordBits);  // 1..32 real elements in it
  uint32_t last_mask = 0;
  for (int e = 0; e < rest; ++e) last_mask |= 1u << bit_of(e);
  const bool per_channel = T.group_size <= 0;
  const int gw = per_channel ? kStepWords : static_cast<int>(T.group_size / kWordBits);
  const int subs = kStepWords / gw;  // groups per step (1 for per-channel)
  int acc[4] = {0, 0, 0, 0};
  for (long long st = 0; st < steps; ++st) {
    const long long w0 = st * kStepWords + t, w1 = w0 + 4;  // this lane's two words of the step
    const bool in0 = w0 <= last, in1 = w1 <= last;
    const uint32_t xm0 = w0 == last ? last_mask : kFull, xm1 = w1 == last ? last_mask : kFull;
    uint32_t wa[kMaxBits][4], xb[kMaxBits][2];
    for (int i = 0; i < kMaxBits; ++i) {
      if (i < T.wbits) {
        wa[i][0] = ok_lo && in0 ? T.w[(r_lo * T.kw + w0) * T.wbits + i] : 0u;
        wa[i][1] = ok_hi && in0 ? T.w[(r_hi * T.kw + w0) * T.wbits + i] : 0u;
        wa[i][2] = ok_lo && in1 ? T.w[(r_lo * T.kw + w1) * T.wbits + i] : 0u;
        wa[i][3] = ok_hi && in1 ? T.w[(r_hi * T.kw + w1) * T.wbits + i] : 0u;
      }
      if (i < T.abits) {
        xb[i][0] = ok_t && in0 ? T.x[(tk * T.kw + w0) * T.abits + i] & xm0 : 0u;
        xb[i][1] = ok_t && in1 ? T.x[(tk * T.kw + w1) * T.abits + i] & xm1 : 0u;
      }
    }
    for (int h = 0; h < subs; ++h) {
      const long long gidx = per_channel ? 0 : st * subs + h;
      if (gidx >= T.groups) break;  // (warp-uniform) padding words past the last group
      // Words of this group: [h gw, (h + 1) gw) of the step; A's other words are zeroed.
      const uint32_t m0 = per_channel || t / gw == h ? kFull : 0u;
      const uint32_t m1 = per_channel || (4 + t) / gw == h ? kFull : 0u;
      if (!per_channel) acc[0] = acc[1] = acc[2] = acc[3] = 0;
      for (int i = 0; i < kMaxBits; ++i) {
        if (i >= T.wbits) break;
        const uint32_t a[4] = {wa[i][0] & m0, wa[i][1] & m0, wa[i][2] & m1, wa[i][3] & m1};
        for (int j = 0; j < kMaxBits; ++j) {
          if (j >= T.abits) break;
          const int zero[4] = {0, 0, 0, 0};
          int d[4];
          ptx::bmma_m16n8k256_and_popc(d, a, xb[j], zero);
          for (int r = 0; r < 4; ++r) acc[r] += d[r] << (i + j);
        }
      }
      if (!per_channel) emit(gidx, acc);
    }
  }
  if (per_channel) emit(0, acc);
}

__global__ void __launch_bounds__(kThreads) int_kernel(Tile T, int32_t* out) {
  const long long tok0 = static_cast<long long>(blockIdx.y) * kTileTokens;
  const long long row0 = (static_cast<long long>(blockIdx.x) * kWarps + threadIdx.x / 32) * kTileRows;
  if (row0 >= T.n) return;  // the whole warp: no MMA left half-issued
  const int lane = threadIdx.x % 32, g8 = lane >> 2, t = lane & 3;
  core(T, row0, tok0, [&](long long g, const int (&acc)[4]) {
    for (int r = 0; r < 4; ++r) {
      const long long row = row0 + g8 + 8 * (r >> 1), tok = tok0 + 2 * t + (r & 1);
      if (row < T.n && tok < T.m) out[(tok * T.n + row) * T.groups + g] = acc[r];
    }
  });
}

__global__ void __launch_bounds__(kThreads) linear_kernel(Tile T, CudaLinearParams p) {
  const long long tok0 = static_cast<long long>(blockIdx.y) * kTileTokens;
  const long long row0 = (static_cast<long long>(blockIdx.x) * kWarps + threadIdx.x / 32) * kTileRows;
  if (row0 >= T.n) return;
  const int lane = threadIdx.x % 32, g8 = lane >> 2, t = lane & 3;
  const Weight& W = p.w;
  long long rows[2], toks[2];
  bool rok[2], tok_ok[2];
  float sx[2];
  long long zx[2];
  for (int q = 0; q < 2; ++q) {
    rows[q] = row0 + g8 + 8 * q;
    toks[q] = tok0 + 2 * t + q;
    rok[q] = rows[q] < T.n;
    tok_ok[q] = toks[q] < T.m;
    sx[q] = tok_ok[q] ? p.x_scales[toks[q]] : 0.f;
    zx[q] = tok_ok[q] ? p.x_zeros[toks[q]] : 0;
  }
  float y[4] = {0.f, 0.f, 0.f, 0.f};
  core(T, row0, tok0, [&](long long g, const int (&acc)[4]) {
    const long long len = group_len(g, W.group_size, W.k);
    for (int r = 0; r < 4; ++r) {
      const int qr = r >> 1, qt = r & 1;
      if (!rok[qr] || !tok_ok[qt]) continue;
      const long long wi = rows[qr] * W.groups + g;
      const float s = load_f(W.scales, W.scale_dtype, wi);
      const long long Q = W.code_sums[wi];
      const long long P = p.x_code_sums[toks[qt] * W.groups + g];
      const long long core_i = static_cast<long long>(acc[r]) - zx[qt] * Q;  // sum q (p - zx)
      const long long xs = P - zx[qt] * len;                                  // sum (p - zx)
      if (W.zeros) {
        const long long z = W.zeros[wi];
        y[r] += s * sx[qt] * static_cast<float>(core_i - z * xs);
      } else {
        const float mo = load_f(W.offsets, W.scale_dtype, wi);
        y[r] += sx[qt] * s * static_cast<float>(core_i) + mo * sx[qt] * static_cast<float>(xs);
      }
    }
  });
  for (int r = 0; r < 4; ++r) {
    const int qr = r >> 1, qt = r & 1;
    if (!rok[qr] || !tok_ok[qt]) continue;
    float v = y[r];
    if (p.bias) v += load_f(p.bias, p.y_dtype, rows[qr]);
    store_f(p.y, p.y_dtype, toks[qt] * T.n + rows[qr], v);
  }
}

// ---- weight-only (abits = 16) ------------------------------------------------------------------
__global__ void __launch_bounds__(kThreads) wonly_kernel(CudaLinearParams p) {
  const Weight& W = p.w;
  const long long tok0 = static_cast<long long>(blockIdx.y) * kTileTokens;
  const long long row = static_cast<long long>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= W.n) return;
  const int e = threadIdx.x % 32, bit = bit_of(e);
  const int nt = p.m - tok0 < kTileTokens ? static_cast<int>(p.m - tok0) : kTileTokens;
  const long long words = (W.k + kWordBits - 1) / kWordBits;
  const uint32_t* planes = W.planes + row * W.kw * W.wbits;
  float acc[kTileTokens];
  for (int q = 0; q < kTileTokens; ++q) acc[q] = 0.f;
  for (long long c = 0; c < words; ++c) {
    const long long col = c * kWordBits + e;
    if (col >= W.k) continue;  // (no collective inside the loop)
    int code = 0;
    for (int i = 0; i < W.wbits; ++i) code |= static_cast<int>((planes[c * W.wbits + i] >> bit) & 1u) << i;
    const long long wi = row * W.groups + (W.group_size > 0 ? col / W.group_size : 0);
    const float s = load_f(W.scales, W.scale_dtype, wi);
    const float w = W.zeros ? s * static_cast<float>(code - static_cast<int>(W.zeros[wi]))
                            : fmaf(s, static_cast<float>(code), load_f(W.offsets, W.scale_dtype, wi));
    for (int q = 0; q < kTileTokens; ++q)
      if (q < nt) acc[q] = fmaf(w, load_f(p.x, p.y_dtype, (tok0 + q) * W.k + col), acc[q]);
  }
  for (int q = 0; q < kTileTokens; ++q) {
    if (q >= nt) break;  // (warp-uniform)
    float v = warp_sum(acc[q]);
    if (e == 0) {
      if (p.bias) v += load_f(p.bias, p.y_dtype, row);
      store_f(p.y, p.y_dtype, (tok0 + q) * W.n + row, v);
    }
  }
}

Tile tile_of(const uint32_t* w, const uint32_t* x, long long n, long long m, long long k, long long kw,
             long long wbits, long long abits, long long group_size, long long groups) {
  return {w, x, n, m, k, kw, static_cast<int>(wbits), static_cast<int>(abits), group_size, groups};
}

dim3 tile_grid(long long m, long long n) {
  return dim3(cuda::ceil_div(n, kTileRows * kWarps), cuda::ceil_div(m, kTileTokens));
}

}  // namespace

int quantize_acts_cuda(const QuantParams& p, const void* x, Dtype x_dtype, void* stream) {
  return LLMPACK_LAUNCH(quant_kernel, dim3(static_cast<unsigned>(p.m)), dim3(kQuantThreads), 0, stream, p, x,
                        x_dtype);
}

int matmul_int_cuda(const IntParams& p, const uint32_t* x_planes, void* stream) {
  const Tile T = tile_of(p.w_planes, x_planes, p.n, p.m, p.k, p.kw, p.wbits, p.abits, p.group_size, p.groups);
  return LLMPACK_LAUNCH(int_kernel, tile_grid(p.m, p.n), dim3(kThreads), 0, stream, T, p.out);
}

int linear_cuda(const CudaLinearParams& p, void* stream) {
  if (p.abits == 16)
    return LLMPACK_LAUNCH(wonly_kernel, dim3(cuda::ceil_div(p.w.n, kWarps), cuda::ceil_div(p.m, kTileTokens)),
                          dim3(kThreads), 0, stream, p);
  const Tile T = tile_of(p.w.planes, p.x_planes, p.w.n, p.m, p.w.k, p.w.kw, p.w.wbits, p.abits, p.w.group_size,
                         p.w.groups);
  return LLMPACK_LAUNCH(linear_kernel, tile_grid(p.m, p.w.n), dim3(kThreads), 0, stream, T, p);
}

}  // namespace llmpack::btc
