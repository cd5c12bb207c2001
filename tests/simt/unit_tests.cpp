// SIMT emulator core: indices, barriers, shared memory, warp shuffles/votes,
// atomics, fp16/bf16, launch checks, misuse detection, speed. Each test
// compares with a scalar model written from the CUDA programming guide, not
// with the emulator's own formulas.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <iterator>
#include <random>

#include "simt_test.h"

namespace {

using simt_test::Failure;
using simt_test::format;

// ---- indices ------------------------------------------------------------------------------
__global__ void k_indices(unsigned* out) {
  const unsigned bl = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned n = blockDim.x * blockDim.y * blockDim.z;
  const unsigned tl = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  unsigned* o = out + 8 * (bl * n + tl);
  o[0] = threadIdx.x, o[1] = threadIdx.y, o[2] = threadIdx.z;
  o[3] = blockIdx.x, o[4] = blockIdx.y, o[5] = blockIdx.z;
  o[6] = blockDim.x * 100 + blockDim.y * 10 + blockDim.z;
  o[7] = gridDim.x * 100 + gridDim.y * 10 + gridDim.z + 1000 * warpSize;
}

SIMT_TEST(builtin_indices) {
  for (const char* s : simt_test::kSchedules) {
    simt_test::Schedule sched(s);
    const dim3 g(3, 2, 2), b(5, 3, 2);
    std::vector<unsigned> out(8 * 12 * 30, 0xDEAD);
    CHECK(LLMPACK_LAUNCH(k_indices, g, b, 0, nullptr, out.data()) == 0);
    for (unsigned bz = 0; bz < 2; ++bz)
      for (unsigned by = 0; by < 2; ++by)
        for (unsigned bx = 0; bx < 3; ++bx)
          for (unsigned tz = 0; tz < 2; ++tz)
            for (unsigned ty = 0; ty < 3; ++ty)
              for (unsigned tx = 0; tx < 5; ++tx) {
                const unsigned bl = bx + 3 * (by + 2 * bz), tl = tx + 5 * (ty + 3 * tz);
                const unsigned* o = &out[8 * (bl * 30 + tl)];
                const unsigned want[8] = {tx, ty, tz, bx, by, bz, 532, 322 + 32000};
                for (int i = 0; i < 8; ++i) CHECK_MSG(o[i] == want[i], "block %u thread %u field %d: %u", bl, tl, i, o[i]);
              }
  }
}

// ---- barriers and static shared memory --------------------------------------------------------
__global__ void k_block_sum(const int* in, int* out, int n) {
  __shared__ int s[256];
  const int tid = threadIdx.x;
  const int i = blockIdx.x * blockDim.x + tid;
  s[tid] = i < n ? in[i] : 0;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (tid < stride) s[tid] += s[tid + stride];
    __syncthreads();
  }
  if (tid == 0) out[blockIdx.x] = s[0];
}

SIMT_TEST(barrier_block_reduction) {
  const int n = 1000, blocks = 4;
  std::vector<int> in(n), out(blocks);
  for (int i = 0; i < n; ++i) in[i] = (i * 37) % 101 - 50;
  for (const char* s : simt_test::kSchedules) {
    simt_test::Schedule sched(s);
    CHECK(LLMPACK_LAUNCH(k_block_sum, dim3(blocks), dim3(256), 0, nullptr, in.data(), out.data(), n) == 0);
    for (int b = 0; b < blocks; ++b) {
      int want = 0;
      for (int i = b * 256; i < std::min(n, (b + 1) * 256); ++i) want += in[i];
      CHECK_MSG(out[b] == want, "schedule %s block %d: %d != %d", s, b, out[b], want);
    }
  }
}

__global__ void k_sync_ops(int* out) {
  const int t = threadIdx.x;
  out[0 * 64 + t] = __syncthreads_count(t % 3 == 0);
  out[1 * 64 + t] = __syncthreads_and(t < 64);
  out[2 * 64 + t] = __syncthreads_and(t != 17);
  out[3 * 64 + t] = __syncthreads_or(t == 63);
  out[4 * 64 + t] = __syncthreads_or(0);
}

SIMT_TEST(barrier_count_and_or) {
  std::vector<int> out(5 * 64, -7);
  LLMPACK_LAUNCH(k_sync_ops, dim3(1), dim3(64), 0, nullptr, out.data());
  for (int t = 0; t < 64; ++t) {
    CHECK(out[t] == 22);
    CHECK(out[64 + t] == 1);
    CHECK(out[128 + t] == 0);
    CHECK(out[192 + t] == 1);
    CHECK(out[256 + t] == 0);
  }
}

// ---- dynamic shared memory -----------------------------------------------------------------
__global__ void k_dyn_smem(unsigned* out, int n) {
  unsigned* s = llmpack::cuda::dynamic_smem<unsigned>(n);
  const int t = threadIdx.x;
  out[t] = s[t];  // before any write: the emulator fills it with 0xFF bytes
  __syncthreads();
  s[t] = 3 * t + 1;
  __syncthreads();
  out[n + t] = s[n - 1 - t];
  out[2 * n + t] = llmpack::ptx::dynamic_smem_size();
}

SIMT_TEST(dynamic_smem) {
  const int n = 96;
  std::vector<unsigned> out(3 * n);
  LLMPACK_LAUNCH(k_dyn_smem, dim3(2), dim3(n), n * sizeof(unsigned), nullptr, out.data(), n);
  for (int t = 0; t < n; ++t) {
    CHECK_MSG(out[t] == 0xFFFFFFFFu, "uninitialised dynamic smem word %d = 0x%x", t, out[t]);
    CHECK(out[n + t] == 3u * (n - 1 - t) + 1);
    CHECK(out[2 * n + t] == n * sizeof(unsigned));
  }
}

SIMT_TEST(err_dynamic_smem_too_small) {
  const int n = 64;
  std::vector<unsigned> out(3 * n);
  EXPECT_ERROR(LLMPACK_LAUNCH(k_dyn_smem, dim3(1), dim3(n), n * 4 - 4, nullptr, out.data(), n),
               "k_dyn_smem", "uses 256 bytes of dynamic shared memory but the launch provides 252",
               "unit_tests.cpp");
}

// ---- shuffles --------------------------------------------------------------------------------
// Scalar model from the CUDA programming guide (warp shuffle functions).
int model_shfl(int mode, const int* v, int lane_base, int lane, int arg, int width) {
  const int seg = lane / width * width, in_seg = lane % width;
  int src = lane;
  switch (mode) {
    case 0: src = seg + arg % width; break;                               // __shfl_sync
    case 1: src = in_seg >= arg ? lane - arg : lane; break;               // __shfl_up_sync
    case 2: src = in_seg + arg < width ? lane + arg : lane; break;        // __shfl_down_sync
    case 3: src = (lane ^ arg) < seg + width ? (lane ^ arg) : lane; break;  // __shfl_xor_sync
  }
  return v[lane_base + src];
}

__global__ void k_shfl(const int* in, int* out, int mode, int arg, int width) {
  const int v = in[threadIdx.x];
  int r = 0;
  switch (mode) {
    case 0: r = __shfl_sync(0xFFFFFFFFu, v, arg, width); break;
    case 1: r = __shfl_up_sync(0xFFFFFFFFu, v, arg, width); break;
    case 2: r = __shfl_down_sync(0xFFFFFFFFu, v, arg, width); break;
    case 3: r = __shfl_xor_sync(0xFFFFFFFFu, v, arg, width); break;
  }
  out[threadIdx.x] = r;
}

SIMT_TEST(shfl_modes_widths) {
  std::vector<int> in(64), out(64);
  for (int i = 0; i < 64; ++i) in[i] = 1000 + i * 7;
  int launches = 0;
  for (int mode = 0; mode < 4; ++mode)
    for (int width : {32, 16, 8, 4, 2, 1})
      for (int arg : {0, 1, 2, 3, 5, 7, 8, 13, 16, 31, 37}) {
        LLMPACK_LAUNCH(k_shfl, dim3(1), dim3(64), 0, nullptr, in.data(), out.data(), mode, arg, width);
        ++launches;
        for (int t = 0; t < 64; ++t) {
          const int want = model_shfl(mode, in.data(), t / 32 * 32, t % 32, arg, width);
          CHECK_MSG(out[t] == want, "mode %d width %d arg %d thread %d: %d != %d", mode, width, arg, t, out[t], want);
        }
      }
  std::printf("  %d shuffle launches checked\n", launches);
}

__global__ void k_shfl_types(double* d, long long* ll, __half* h, float2* f2) {
  const int lane = threadIdx.x;
  d[lane] = __shfl_xor_sync(0xFFFFFFFFu, 0.25 + lane * 1e10, 3);
  ll[lane] = __shfl_down_sync(0xFFFFFFFFu, (1ll << 40) * lane + lane, 4);
  h[lane] = __shfl_sync(0xFFFFFFFFu, __float2half(lane * 0.5f), 31 - lane);
  f2[lane] = __shfl_up_sync(0xFFFFFFFFu, make_float2(lane, -lane), 1);
}

SIMT_TEST(shfl_types) {
  std::vector<double> d(32);
  std::vector<long long> ll(32);
  std::vector<__half> h(32);
  std::vector<float2> f2(32);
  LLMPACK_LAUNCH(k_shfl_types, dim3(1), dim3(32), 0, nullptr, d.data(), ll.data(), h.data(), f2.data());
  for (int l = 0; l < 32; ++l) {
    CHECK(d[l] == 0.25 + (l ^ 3) * 1e10);
    const int s = l + 4 < 32 ? l + 4 : l;
    CHECK(ll[l] == (1ll << 40) * s + s);
    CHECK(__half2float(h[l]) == (31 - l) * 0.5f);
    const int u = l >= 1 ? l - 1 : l;
    CHECK(f2[l].x == u && f2[l].y == -u);
  }
}

// Disjoint masks in one warp: each half runs its own collective.
__global__ void k_shfl_halves(int* out) {
  const int lane = threadIdx.x;
  if (lane < 16) {
    out[lane] = __shfl_xor_sync(0x0000FFFFu, lane * 10, 1);
  } else {
    out[lane] = __shfl_down_sync(0xFFFF0000u, lane * 10, 1, 16);
  }
}

SIMT_TEST(shfl_partial_masks) {
  std::vector<int> out(32);
  for (const char* s : simt_test::kSchedules) {
    simt_test::Schedule sched(s);
    LLMPACK_LAUNCH(k_shfl_halves, dim3(1), dim3(32), 0, nullptr, out.data());
    for (int l = 0; l < 16; ++l) CHECK(out[l] == (l ^ 1) * 10);
    for (int l = 16; l < 32; ++l) CHECK(out[l] == (l % 16 + 1 < 16 ? l + 1 : l) * 10);
  }
}

// ---- votes, match, reduce, syncwarp -------------------------------------------------------
__global__ void k_votes(const int* in, unsigned* out) {
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
  const int p = in[threadIdx.x];
  unsigned* o = out + 8 * threadIdx.x;
  o[0] = __ballot_sync(0xFFFFFFFFu, p);
  o[1] = __any_sync(0xFFFFFFFFu, p);
  o[2] = __all_sync(0xFFFFFFFFu, p);
  if (lane % 2 == 0) {
    o[3] = __ballot_sync(0x55555555u, p);
    o[4] = __all_sync(0x55555555u, p);
  }
  o[5] = __match_any_sync(0xFFFFFFFFu, (lane % 3) + 10 * w);
  o[6] = static_cast<unsigned>(__reduce_add_sync(0xFFFFFFFFu, lane - 5));
  o[7] = static_cast<unsigned>(__reduce_min_sync(0xFFFFFFFFu, 3 - lane));
  __syncwarp();
}

SIMT_TEST(votes_match_reduce) {
  std::vector<int> in(64);
  std::vector<unsigned> out(8 * 64, 0xABCD);
  for (int i = 0; i < 64; ++i) in[i] = (i * 5 % 7) < 3;
  in[32 + 4] = 1;
  LLMPACK_LAUNCH(k_votes, dim3(1), dim3(64), 0, nullptr, in.data(), out.data());
  for (int w = 0; w < 2; ++w) {
    unsigned ballot = 0, even = 0;
    for (int l = 0; l < 32; ++l) {
      if (in[32 * w + l]) ballot |= 1u << l;
      if (in[32 * w + l] && l % 2 == 0) even |= 1u << l;
    }
    for (int l = 0; l < 32; ++l) {
      const unsigned* o = &out[8 * (32 * w + l)];
      CHECK(o[0] == ballot);
      CHECK(o[1] == (ballot != 0));
      CHECK(o[2] == (ballot == 0xFFFFFFFFu));
      if (l % 2 == 0) {
        CHECK(o[3] == even);
        CHECK(o[4] == (even == 0x55555555u));
      }
      unsigned m = 0;
      for (int j = 0; j < 32; ++j)
        if (j % 3 == l % 3) m |= 1u << j;
      CHECK(o[5] == m);
      CHECK(static_cast<int>(o[6]) == 31 * 32 / 2 - 5 * 32);
      CHECK(static_cast<int>(o[7]) == 3 - 31);
    }
  }
}

// ---- atomics -----------------------------------------------------------------------------------
__global__ void k_atomics(int* gi, float* gf, unsigned long long* gmin, unsigned* ginc, int* gcas, int* gmax,
                          unsigned* gexch) {
  __shared__ int s_sum;
  __shared__ unsigned s_max;
  if (threadIdx.x == 0) s_sum = 0, s_max = 0;
  __syncthreads();
  atomicAdd(&s_sum, 2);
  atomicMax(&s_max, threadIdx.x * 7 % 101);
  __syncthreads();
  if (threadIdx.x == 0) atomicAdd(gi, s_sum + static_cast<int>(s_max));
  atomicAdd(gf, 0.5f);
  atomicMin(gmin, static_cast<unsigned long long>(blockIdx.x * 1000 + threadIdx.x + 5));
  atomicInc(ginc, 1000000u);
  int old = *gcas, assumed;
  do {
    assumed = old;
    old = atomicCAS(gcas, assumed, assumed + 3);
  } while (old != assumed);
  atomicMax(gmax, -static_cast<int>(threadIdx.x));
  atomicExch(gexch, blockIdx.x);
}

SIMT_TEST(atomics) {
  int gi = 0, gcas = 1, gmax = -1000;
  float gf = 0;
  unsigned long long gmin = ~0ull;
  unsigned ginc = 0, gexch = 99;
  LLMPACK_LAUNCH(k_atomics, dim3(3), dim3(128), 0, nullptr, &gi, &gf, &gmin, &ginc, &gcas, &gmax, &gexch);
  int smax = 0;
  for (int t = 0; t < 128; ++t) smax = std::max(smax, t * 7 % 101);
  CHECK(gi == 3 * (256 + smax));
  CHECK(gf == 0.5f * 384);
  CHECK(gmin == 5);
  CHECK(ginc == 384);
  CHECK(gcas == 1 + 3 * 384);
  CHECK(gmax == 0);
  CHECK(gexch == 2);
  // Wrapping integer arithmetic and unsigned long long min/max, as on the GPU.
  int w = 0x7FFFFFFF;
  CHECK(atomicAdd(&w, 1) == 0x7FFFFFFF && w == static_cast<int>(0x80000000u));
  unsigned long long u = 10;
  CHECK(atomicMax(&u, 1ull << 63) == 10 && u == 1ull << 63);
  unsigned d = 0;
  CHECK(atomicDec(&d, 5u) == 0 && d == 5);
}

// ---- fp16 / bf16 -----------------------------------------------------------------------------
uint16_t ref_f16_rn(float f) {
  _Float16 h = static_cast<_Float16>(f);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
float ref_f16_to_f32(uint16_t b) {
  _Float16 h;
  std::memcpy(&h, &b, 2);
  return static_cast<float>(h);
}

SIMT_TEST(fp16_conversions) {
  // half -> float: all 65536 patterns.
  for (uint32_t b = 0; b < 65536; ++b) {
    const float got = __half2float(__ushort_as_half(static_cast<unsigned short>(b)));
    const float want = ref_f16_to_f32(static_cast<uint16_t>(b));
    if (std::isnan(want)) {
      CHECK(std::isnan(got));
    } else {
      CHECK_MSG(llmpack::simt::fp::f32_bits(got) == llmpack::simt::fp::f32_bits(want), "half 0x%04x", b);
      // ... and back, exactly.
      CHECK(__half_as_ushort(__float2half(got)) == b);
    }
  }
  // float -> half, round to nearest even: a stride through all float patterns.
  long checked = 0;
  for (uint64_t u = 0; u < (1ull << 32); u += 4093) {
    const float f = llmpack::simt::fp::bits_f32(static_cast<uint32_t>(u));
    if (std::isnan(f)) {
      CHECK(__half_as_ushort(__float2half(f)) == 0x7FFF);
      continue;
    }
    CHECK_MSG(__half_as_ushort(__float2half(f)) == ref_f16_rn(f), "float 0x%08x", static_cast<uint32_t>(u));
    ++checked;
  }
  // Directed roundings against the sorted list of all finite halves.
  std::vector<std::pair<double, uint16_t>> halves;
  for (uint32_t b = 0; b < 65536; ++b) {
    const float v = ref_f16_to_f32(static_cast<uint16_t>(b));
    if (std::isfinite(v) && !(v == 0 && (b & 0x8000))) halves.push_back({v, static_cast<uint16_t>(b)});
  }
  std::sort(halves.begin(), halves.end());
  std::mt19937 rng(1);
  for (int k = 0; k < 200000; ++k) {
    float f;
    if (k % 2) {
      f = llmpack::simt::fp::bits_f32(static_cast<uint32_t>(rng()));
      if (!std::isfinite(f)) continue;
    } else {
      f = std::ldexp(std::uniform_real_distribution<float>(-1, 1)(rng), static_cast<int>(rng() % 44) - 28);
    }
    const double x = f;
    auto it = std::upper_bound(halves.begin(), halves.end(), std::make_pair(x, uint16_t(0xFFFF)));
    // floor: largest half <= x (or -inf); ceil: smallest half >= x (or +inf).
    uint16_t fl = it == halves.begin() ? 0xFC00 : std::prev(it)->second;
    auto jt = std::lower_bound(halves.begin(), halves.end(), std::make_pair(x, uint16_t(0)));
    uint16_t ce = jt == halves.end() ? 0x7C00 : jt->second;
    auto signed_zero = [&](uint16_t b) { return (b & 0x7FFF) == 0 ? static_cast<uint16_t>(std::signbit(f) ? 0x8000 : 0) : b; };
    fl = signed_zero(fl);
    ce = signed_zero(ce);
    const uint16_t rz = f >= 0 ? fl : ce;
    CHECK_MSG(__half_as_ushort(__float2half_rd(f)) == fl, "rd %a", f);
    CHECK_MSG(__half_as_ushort(__float2half_ru(f)) == ce, "ru %a", f);
    CHECK_MSG(__half_as_ushort(__float2half_rz(f)) == rz, "rz %a", f);
  }
  std::printf("  %ld float->half RN conversions checked against _Float16\n", checked);
}

SIMT_TEST(bf16_conversions) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(b)));
    CHECK(llmpack::simt::fp::f32_bits(f) == b << 16);
    if (!std::isnan(f)) CHECK(__bfloat16_as_ushort(__float2bfloat16(f)) == b);
  }
  for (uint64_t u = 0; u < (1ull << 32); u += 4093) {
    const uint32_t x = static_cast<uint32_t>(u);
    const float f = llmpack::simt::fp::bits_f32(x);
    const uint16_t got = __bfloat16_as_ushort(__float2bfloat16(f));
    if (std::isnan(f)) {
      CHECK(got == 0x7FFF);
      continue;
    }
    // Model: the two bf16 neighbours by truncation, nearest in double, ties to even.
    const uint32_t lo = x & 0xFFFF0000u, hi = lo + 0x10000u;
    const double dlo = llmpack::simt::fp::bits_f32(lo), dhi = llmpack::simt::fp::bits_f32(hi);
    const double el = std::fabs(f - dlo), eh = std::fabs(dhi - f);
    uint16_t want;
    if ((x & 0xFFFF) == 0) want = lo >> 16;
    else if (el < eh) want = lo >> 16;
    else if (eh < el) want = hi >> 16;
    else want = ((lo >> 16) & 1) ? hi >> 16 : lo >> 16;
    // Overflow past the largest finite bf16 rounds to infinity.
    if ((x & 0x7FFFFFFF) >= 0x7F7F8000u && (x & 0x7FFFFFFF) < 0x7F800000u) want = (x >> 16 & 0x8000) | 0x7F80;
    CHECK_MSG(got == want, "float 0x%08x: 0x%04x != 0x%04x", x, got, want);
  }
  CHECK(__bfloat16_as_ushort(__float2bfloat16_rz(1.00390625f * 1.5f)) == (llmpack::simt::fp::f32_bits(1.5f) >> 16));
}

SIMT_TEST(fp16_bf16_arithmetic) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> d(-64, 64);
  for (int k = 0; k < 100000; ++k) {
    const __half a = __float2half(d(rng)), b = __float2half(d(rng)), c = __float2half(d(rng));
    const _Float16 ra = static_cast<_Float16>(__half2float(a)), rb = static_cast<_Float16>(__half2float(b));
    auto bits = [](_Float16 v) {
      uint16_t u;
      std::memcpy(&u, &v, 2);
      return u;
    };
    CHECK(__half_as_ushort(__hadd(a, b)) == bits(static_cast<_Float16>(ra + rb)));
    CHECK(__half_as_ushort(__hsub(a, b)) == bits(static_cast<_Float16>(ra - rb)));
    CHECK(__half_as_ushort(__hmul(a, b)) == bits(static_cast<_Float16>(ra * rb)));
    if (__half2float(b) != 0) CHECK(__half_as_ushort(__hdiv(a, b)) == bits(static_cast<_Float16>(ra / rb)));
    // a*b + c is exact in double for these magnitudes: one rounding.
    const double exact = static_cast<double>(__half2float(a)) * __half2float(b) + __half2float(c);
    CHECK(__half_as_ushort(__hfma(a, b, c)) == bits(static_cast<_Float16>(exact)));
    const __half2 p = __hmul2(__halves2half2(a, b), __halves2half2(b, c));
    CHECK(__half_as_ushort(__low2half(p)) == __half_as_ushort(__hmul(a, b)));
    CHECK(__half_as_ushort(__high2half(p)) == __half_as_ushort(__hmul(b, c)));
    // bf16: the float result rounded once.
    const __nv_bfloat16 x = __float2bfloat16(d(rng)), y = __float2bfloat16(d(rng));
    CHECK(__bfloat16_as_ushort(x + y) == __bfloat16_as_ushort(__float2bfloat16(__bfloat162float(x) + __bfloat162float(y))));
    CHECK(__bfloat16_as_ushort(x * y) == __bfloat16_as_ushort(__float2bfloat16(__bfloat162float(x) * __bfloat162float(y))));
  }
  CHECK(__hisnan(__float2half(NAN)) && __half_as_ushort(__float2half(1e6f)) == 0x7C00);
  CHECK(__half_as_ushort(__float2half_rz(1e6f)) == 0x7BFF);
  CHECK(__half_as_ushort(__float2half(5.9604645e-08f)) == 0x0001);  // smallest subnormal
  CHECK(__half_as_ushort(__float2half(2.9802322e-08f)) == 0x0000);  // half of it: ties to even
}

// ---- launch configuration checks ----------------------------------------------------------
__global__ void k_noop(int* p) {
  if (threadIdx.x == 0 && p) *p = 1;
}

SIMT_TEST(err_launch_config) {
  int x = 0;
  EXPECT_ERROR(LLMPACK_LAUNCH(k_noop, dim3(1), dim3(1025), 0, nullptr, &x), "k_noop", "at most 1024 threads per block");
  EXPECT_ERROR(LLMPACK_LAUNCH(k_noop, dim3(1), dim3(2, 2, 65), 0, nullptr, &x), "z <= 64");
  EXPECT_ERROR(LLMPACK_LAUNCH(k_noop, dim3(1, 70000), dim3(32), 0, nullptr, &x), "y, z <= 65535");
  EXPECT_ERROR(LLMPACK_LAUNCH(k_noop, dim3(1), dim3(32), 200 * 1024, nullptr, &x), "exceed the", "per-block maximum");
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  CHECK(cudaGetLastError() == cudaSuccess);
  // Empty grids are no-ops (launch.cuh), like a zero-size problem.
  CHECK(LLMPACK_LAUNCH(k_noop, dim3(0), dim3(32), 0, nullptr, &x) == 0 && x == 0);
  CHECK(LLMPACK_LAUNCH(k_noop, dim3(1), dim3(1024), 0, nullptr, &x) == 0 && x == 1);
  EXPECT_ERROR(__syncthreads(), "outside a kernel launch");
}

// ---- misuse: barriers -----------------------------------------------------------------------
__global__ void k_exit_before_barrier(int* out, int n) {
  if (static_cast<int>(threadIdx.x) >= n) return;  // bug: these threads never reach the barrier
  out[threadIdx.x] = 1;
  __syncthreads();
  out[threadIdx.x] += 1;
}

SIMT_TEST(err_barrier_after_exit) {
  std::vector<int> out(128);
  EXPECT_ERROR(LLMPACK_LAUNCH(k_exit_before_barrier, dim3(2), dim3(128), 0, nullptr, out.data(), 100),
               "deadlock", "reached by 100 of 128 threads", "28 threads exited", "thread (100,0,0)",
               "unit_tests.cpp");
  // The emulator recovers: the next launch runs normally.
  CHECK(LLMPACK_LAUNCH(k_exit_before_barrier, dim3(1), dim3(128), 0, nullptr, out.data(), 128) == 0);
  CHECK(out[0] == 2 && out[127] == 2);
}

__global__ void k_divergent_barrier(int* out) {
  if (threadIdx.x < 32) {
    out[threadIdx.x] = 1;
    __syncthreads();
  } else {
    __syncthreads();
  }
}

SIMT_TEST(err_barrier_divergent) {
  std::vector<int> out(64);
  for (const char* s : simt_test::kSchedules) {
    simt_test::Schedule sched(s);
    EXPECT_ERROR(LLMPACK_LAUNCH(k_divergent_barrier, dim3(1), dim3(64), 0, nullptr, out.data()), "different barriers",
                 "k_divergent_barrier");
  }
}

// ---- misuse: warp collectives ----------------------------------------------------------------
__global__ void k_shfl_mask_excludes_self(int* out) {
  out[threadIdx.x] = __shfl_sync(0xFFFFFFFEu, 1, 0);  // lane 0 passes a mask without itself
}
__global__ void k_lanes_disagree(int* out) {
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_xor_sync(0xFFFFFFFFu, 1, 1);
  else out[threadIdx.x] = __ballot_sync(0xFFFFFFFFu, 1);
}
__global__ void k_mask_with_exited_lane(int* out) {
  if (threadIdx.x == 31) return;
  out[threadIdx.x] = __shfl_down_sync(0xFFFFFFFFu, 1, 1);
}
// A full mask in a partial warp (48 threads: warp 1 has 16 lanes) or with
// exited lanes is fine -- CUDA requires only the non-exited named lanes to take
// part -- but reading the value of a lane that is not there is an error.
__global__ void k_partial_warp_ok(int* out) { out[threadIdx.x] = __shfl_xor_sync(0xFFFFFFFFu, threadIdx.x, 1); }
__global__ void k_partial_warp_reads_missing(int* out) {
  out[threadIdx.x] = __shfl_down_sync(0xFFFFFFFFu, threadIdx.x, 8);
}
__global__ void k_ballot_after_exit(unsigned* out) {
  if (threadIdx.x % 32 >= 20) return;
  out[threadIdx.x] = __ballot_sync(0xFFFFFFFFu, threadIdx.x % 2);
}
__global__ void k_read_outside_mask(int* out) {
  if (threadIdx.x < 8) out[threadIdx.x] = __shfl_sync(0x000000FFu, 1, 9);
}
__global__ void k_warp_vs_barrier(int* out) {
  if (threadIdx.x == 0) {
    out[0] = __shfl_sync(0xFFFFFFFFu, 1, 0);
  }
  __syncthreads();
  if (threadIdx.x != 0) out[threadIdx.x] = __shfl_sync(0xFFFFFFFFu, 1, 0);
}
__global__ void k_bad_width(int* out) { out[threadIdx.x] = __shfl_xor_sync(0xFFFFFFFFu, 1, 1, 12); }

SIMT_TEST(err_warp_collectives) {
  std::vector<int> out(64);
  EXPECT_ERROR(LLMPACK_LAUNCH(k_shfl_mask_excludes_self, dim3(1), dim3(32), 0, nullptr, out.data()),
               "__shfl_sync: mask 0xfffffffe does not include the calling lane 0", "lane 0]");
  EXPECT_ERROR(LLMPACK_LAUNCH(k_lanes_disagree, dim3(1), dim3(32), 0, nullptr, out.data()), "lanes disagree",
               "__ballot_sync", "__shfl_xor_sync");
  EXPECT_ERROR(LLMPACK_LAUNCH(k_mask_with_exited_lane, dim3(1), dim3(32), 0, nullptr, out.data()),
               "__shfl_down_sync: lane 30 reads lane 31, which has exited or does not exist");
  CHECK(LLMPACK_LAUNCH(k_partial_warp_ok, dim3(1), dim3(48), 0, nullptr, out.data()) == 0);
  for (int t = 0; t < 48; ++t) CHECK(out[t] == (t ^ 1));
  EXPECT_ERROR(LLMPACK_LAUNCH(k_partial_warp_reads_missing, dim3(1), dim3(48), 0, nullptr, out.data()),
               "lane 8 reads lane 16, which has exited or does not exist", "[warp 1, lane 15]");
  std::vector<unsigned> ballots(64, 7);
  CHECK(LLMPACK_LAUNCH(k_ballot_after_exit, dim3(1), dim3(64), 0, nullptr, ballots.data()) == 0);
  for (int t = 0; t < 64; ++t) CHECK(ballots[t] == (t % 32 < 20 ? 0xAAAAAu : 7u));
  EXPECT_ERROR(LLMPACK_LAUNCH(k_read_outside_mask, dim3(1), dim3(32), 0, nullptr, out.data()),
               "reads lane 9, which is not in the mask 0x000000ff");
  EXPECT_ERROR(LLMPACK_LAUNCH(k_warp_vs_barrier, dim3(1), dim3(32), 0, nullptr, out.data()), "deadlock",
               "waits at __shfl_sync", "is waiting at __syncthreads");
  EXPECT_ERROR(LLMPACK_LAUNCH(k_bad_width, dim3(1), dim3(32), 0, nullptr, out.data()), "width 12");
}

__global__ void k_trap(int* out) {
  if (threadIdx.x == 5 && blockIdx.x == 1) __trap();
  out[threadIdx.x] = 0;
}
__global__ void k_throws(int*) {
  if (threadIdx.x == 3) throw std::logic_error("boom");
}

SIMT_TEST(err_trap_and_exceptions) {
  std::vector<int> out(32);
  EXPECT_ERROR(LLMPACK_LAUNCH(k_trap, dim3(2), dim3(32), 0, nullptr, out.data()), "block (1,0,0)",
               "thread (5,0,0)", "__trap() called");
  EXPECT_ERROR(LLMPACK_LAUNCH(k_throws, dim3(1), dim3(32), 0, nullptr, out.data()), "threw an exception: boom");
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
}

// ---- spin-wait with __nanosleep --------------------------------------------------------------
__global__ void k_spin(volatile int* flag, int* out) {
  if (threadIdx.x == 0) {
    while (*flag == 0) __nanosleep(100);  // waits for thread 63, which runs later
    out[0] = *flag;
  } else if (threadIdx.x == 63) {
    *flag = 42;
  }
}

SIMT_TEST(nanosleep_spin_wait) {
  int flag = 0, out = 0;
  LLMPACK_LAUNCH(k_spin, dim3(1), dim3(64), 0, nullptr, &flag, &out);
  CHECK(out == 42);
}

// ---- speed -------------------------------------------------------------------------------------
__global__ void k_perf(float* out) {
  __shared__ float s[256];
  float v = threadIdx.x;
  for (int r = 0; r < 2; ++r) {
    s[threadIdx.x] = v;
    __syncthreads();
    v += s[(threadIdx.x + 1) % 256];
    __syncthreads();
  }
  out[blockIdx.x * 256 + threadIdx.x] = v;
}

SIMT_TEST(speed_256_threads_4_barriers) {
  const int blocks = 200;
  std::vector<float> out(blocks * 256);
  LLMPACK_LAUNCH(k_perf, dim3(1), dim3(256), 0, nullptr, out.data());  // warm up stacks
  const auto t0 = std::chrono::steady_clock::now();
  LLMPACK_LAUNCH(k_perf, dim3(blocks), dim3(256), 0, nullptr, out.data());
  const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / blocks;
  std::printf("  %.1f us per 256-thread block with 4 barriers\n", us);
  for (int t = 0; t < 256; ++t) {
    const float v1 = t + (t + 1) % 256;
    const float v2 = v1 + ((t + 1) % 256 + (t + 2) % 256);
    CHECK(out[(blocks - 1) * 256 + t] == v2);
  }
#if !defined(__SANITIZE_ADDRESS__)
  CHECK_MSG(us < 1000.0, "%.1f us per block", us);
#endif
}

}  // namespace
