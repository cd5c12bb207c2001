// SIMT emulator: the CUDA execution model in host C++, so a kernel source
// (.cu) compiles both with nvcc and, for tests, with the host compiler
// (-x c++ -DLLMPACK_SIMT_EMULATION). Never used in the real library.
//
// Model (docs/emulator.md has the full story):
//   * One launch at a time (a process-wide lock); blocks run one after the
//     other; every CUDA thread of a block is a fiber with its own stack,
//     scheduled cooperatively on the launching OS thread. A thread runs until
//     it reaches a block barrier, a warp-synchronous operation (shuffle, vote,
//     __syncwarp, mma, ldmatrix) or its end; the scheduler then runs the next
//     thread (order: LLMPACK_SIMT_SCHEDULE=forward|reverse|random[:seed]).
//   * Warp collectives complete when every non-exited lane named in the mask
//     has arrived at the same operation with the same mask; their results are
//     computed from all lanes' inputs at once, with exact PTX semantics.
//   * Misuse is an error, never a hang: a barrier some threads exited before
//     or that threads reach at different call sites, a collective whose mask
//     excludes the caller or on which lanes disagree, a shuffle reading a lane
//     that did not take part, mma / ldmatrix on an incomplete warp, invalid
//     launch configurations, bad metadata, misaligned
//     ldmatrix / cp.async addresses, dynamic shared memory used past the
//     launch's size. The launch then throws std::runtime_error naming the
//     kernel, block, thread and source line.
//   * __shared__ is `static` storage shared by the threads of the block
//     (blocks run sequentially); dynamic shared memory is a per-launch buffer
//     (see llmpack::cuda::dynamic_smem<T>() in common/cuda/runtime.cuh).
#pragma once

#if !defined(LLMPACK_SIMT_EMULATION)
#error "common/simt/simt.h is the SIMT emulator: only for builds with LLMPACK_SIMT_EMULATION"
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "common/simt/half.h"
#include "common/simt/types.h"

// ---- CUDA qualifiers ----------------------------------------------------------
#define __device__
#define __host__
#define __global__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __shared__ static
#define __constant__
#define __managed__
#define __grid_constant__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// __restrict__ is understood by GCC and Clang as is.

// Architecture the emulator models for limits (shared memory per block) and
// for LLMPACK_CUDA_ARCH (common/cuda/runtime.cuh). -DLLMPACK_SIMT_ARCH=900 for sm_90.
#ifndef LLMPACK_SIMT_ARCH
#define LLMPACK_SIMT_ARCH 800
#endif

namespace llmpack::simt {

using Loc = std::source_location;

// Reports a misuse or a failed check from device code: throws, and the launch
// fails with the current thread's identity and `loc` in the message.
[[noreturn]] void fail(const Loc& loc, const char* what);

namespace detail {

struct Builtins {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
// The scheduler updates this before it switches into a CUDA thread.
extern Builtins g_builtins;

enum class BarOp : int { sync, count, all, any };
int block_barrier(BarOp op, int pred, const Loc& loc);

// Warp collectives. Each lane passes its inputs in a LaneIO that lives on its
// own stack while it waits; the lane that completes the collective runs
// `exec` over all participating lanes (indexed by lane id).
struct LaneIO {
  uint32_t in[16];
  uint32_t out[8];
  const void* ptr;
  int arg[4];
};
using WarpExec = void (*)(LaneIO* const* lanes, unsigned mask);
struct WarpOp {
  const char* name;
  WarpExec exec;
  bool whole_warp;  // .aligned instructions: all 32 lanes, mask must be full
};
void warp_collective(const WarpOp& op, unsigned mask, LaneIO& io, const Loc& loc);

enum ShflMode : int { kShflIdx = 0, kShflUp = 1, kShflDown = 2, kShflBfly = 3 };
uint64_t shfl(int mode, unsigned mask, uint64_t value, int b, int width, const Loc& loc);
enum VoteMode : int { kBallot = 0, kAny = 1, kAll = 2 };
unsigned vote(int mode, unsigned mask, int pred, const Loc& loc);
void syncwarp(unsigned mask, const Loc& loc);
unsigned match(bool all, unsigned mask, uint64_t value, int* pred, const Loc& loc);
enum RedMode : int { kRedAdd = 0, kRedMin, kRedMax, kRedAnd, kRedOr, kRedXor };
unsigned reduce(int mode, bool is_signed, unsigned mask, unsigned value, const Loc& loc);

unsigned lane_id();
unsigned active_mask();  // lanes of the caller's warp that have not exited
void yield_now();        // __nanosleep: let the other threads run (spin-waits)
unsigned long long clock_now();

void* dynamic_smem_base(const Loc& loc);
size_t dynamic_smem_size();
void check_dynamic_smem(size_t bytes, const Loc& loc);  // fails when bytes > launch smem

// printf-style message for the emulator's errors (defined in simt.cpp, used
// by simt.cpp and ptx_emu.cpp).
std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));

}  // namespace detail

// ---- launch -------------------------------------------------------------------
struct LaunchSpec {
  const char* name;  // for messages (LLMPACK_LAUNCH passes the kernel expression)
  dim3 grid, block;
  size_t smem;
};
// Runs `body(ctx)` as every thread of every block. Throws std::runtime_error
// on invalid configurations and on any error detected while running.
void run_kernel(const LaunchSpec& spec, void (*body)(const void*), const void* ctx);

template <class... KernelArgs, class... Args>
int launch_named(const char* name, void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                 Args&&... args) {
  static_assert(sizeof...(KernelArgs) == sizeof...(Args), "wrong number of kernel arguments");
  using Params = std::tuple<std::decay_t<KernelArgs>...>;
  struct Ctx {
    void (*kernel)(KernelArgs...);
    Params params;  // the launch's copy of the arguments; each thread gets its own copy
  };
  const Ctx ctx{kernel, Params(static_cast<KernelArgs>(std::forward<Args>(args))...)};
  run_kernel(
      {name, grid, block, smem},
      [](const void* p) {
        const Ctx* c = static_cast<const Ctx*>(p);
        std::apply([c](const auto&... a) { c->kernel(a...); }, c->params);
      },
      &ctx);
  return 0;
}

template <class... KernelArgs, class... Args>
int launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, Args&&... args) {
  return launch_named(nullptr, kernel, grid, block, smem, std::forward<Args>(args)...);
}

// ---- PTX instructions (the emulated side of common/cuda/ptx.cuh) ------------
namespace ptx {
void mma_m16n8k16(bool bf16, float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], const Loc& loc);
void mma_sp_m16n8k32(bool bf16, int selector, float d[4], const uint32_t a[4], const uint32_t b[4],
                     const float c[4], uint32_t e, const Loc& loc);
void bmma_m8n8k128_and_popc(int d[2], uint32_t a, uint32_t b, const int c[2], const Loc& loc);
void bmma_m16n8k256_and_popc(int d[4], const uint32_t a[4], const uint32_t b[2], const int c[4], const Loc& loc);
void ldmatrix(int num, bool trans, uint32_t* r, const void* row_ptr, const Loc& loc);
void cp_async_16(void* smem, const void* gmem, const Loc& loc);
void cp_async_commit(const Loc& loc);
void cp_async_wait(int pending_groups_allowed, const Loc& loc);  // -1: wait_all
}  // namespace ptx

}  // namespace llmpack::simt

// ---- built-in variables -----------------------------------------------------------
#define threadIdx (static_cast<const uint3&>(::llmpack::simt::detail::g_builtins.thread_idx))
#define blockIdx (static_cast<const uint3&>(::llmpack::simt::detail::g_builtins.block_idx))
#define blockDim (static_cast<const dim3&>(::llmpack::simt::detail::g_builtins.block_dim))
#define gridDim (static_cast<const dim3&>(::llmpack::simt::detail::g_builtins.grid_dim))
constexpr int warpSize = 32;

// ---- synchronisation ------------------------------------------------------------
inline void __syncthreads(std::source_location loc = std::source_location::current()) {
  ::llmpack::simt::detail::block_barrier(::llmpack::simt::detail::BarOp::sync, 0, loc);
}
inline int __syncthreads_count(int pred, std::source_location loc = std::source_location::current()) {
  return ::llmpack::simt::detail::block_barrier(::llmpack::simt::detail::BarOp::count, pred, loc);
}
inline int __syncthreads_and(int pred, std::source_location loc = std::source_location::current()) {
  return ::llmpack::simt::detail::block_barrier(::llmpack::simt::detail::BarOp::all, pred, loc);
}
inline int __syncthreads_or(int pred, std::source_location loc = std::source_location::current()) {
  return ::llmpack::simt::detail::block_barrier(::llmpack::simt::detail::BarOp::any, pred, loc);
}
inline void __syncwarp(unsigned mask = 0xFFFFFFFFu, std::source_location loc = std::source_location::current()) {
  ::llmpack::simt::detail::syncwarp(mask, loc);
}
// Memory fences: threads interleave only at synchronisation points and every
// access goes straight to memory, so fences have nothing to order.
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}
inline void __nanosleep(unsigned) { ::llmpack::simt::detail::yield_now(); }
[[noreturn]] inline void __trap(std::source_location loc = std::source_location::current()) {
  ::llmpack::simt::fail(loc, "__trap() called");
}
inline void __brkpt(std::source_location loc = std::source_location::current()) {
  ::llmpack::simt::fail(loc, "__brkpt() called");
}
inline long long clock64() { return static_cast<long long>(::llmpack::simt::detail::clock_now()); }

// ---- warp shuffles and votes -------------------------------------------------------
namespace llmpack::simt::detail {
template <class T>
inline uint64_t to_bits(const T& v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a type larger than 8 bytes");
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <class T>
inline T from_bits(uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}
}  // namespace llmpack::simt::detail

template <class T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize,
                     std::source_location loc = std::source_location::current()) {
  using namespace ::llmpack::simt::detail;
  return from_bits<T>(shfl(kShflIdx, mask, to_bits(var), srcLane, width, loc));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                        std::source_location loc = std::source_location::current()) {
  using namespace ::llmpack::simt::detail;
  return from_bits<T>(shfl(kShflUp, mask, to_bits(var), static_cast<int>(delta), width, loc));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                          std::source_location loc = std::source_location::current()) {
  using namespace ::llmpack::simt::detail;
  return from_bits<T>(shfl(kShflDown, mask, to_bits(var), static_cast<int>(delta), width, loc));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize,
                         std::source_location loc = std::source_location::current()) {
  using namespace ::llmpack::simt::detail;
  return from_bits<T>(shfl(kShflBfly, mask, to_bits(var), laneMask, width, loc));
}
inline unsigned __ballot_sync(unsigned mask, int pred, std::source_location loc = std::source_location::current()) {
  return ::llmpack::simt::detail::vote(::llmpack::simt::detail::kBallot, mask, pred, loc);
}
inline int __any_sync(unsigned mask, int pred, std::source_location loc = std::source_location::current()) {
  return static_cast<int>(::llmpack::simt::detail::vote(::llmpack::simt::detail::kAny, mask, pred, loc));
}
inline int __all_sync(unsigned mask, int pred, std::source_location loc = std::source_location::current()) {
  return static_cast<int>(::llmpack::simt::detail::vote(::llmpack::simt::detail::kAll, mask, pred, loc));
}
// Approximation: the lanes of the caller's warp that have not exited (the
// emulator does not model divergence, so it cannot say which lanes are
// converged at this point).
inline unsigned __activemask() { return ::llmpack::simt::detail::active_mask(); }
template <class T>
inline unsigned __match_any_sync(unsigned mask, T value, std::source_location loc = std::source_location::current()) {
  return ::llmpack::simt::detail::match(false, mask, ::llmpack::simt::detail::to_bits(value), nullptr, loc);
}
template <class T>
inline unsigned __match_all_sync(unsigned mask, T value, int* pred,
                                 std::source_location loc = std::source_location::current()) {
  return ::llmpack::simt::detail::match(true, mask, ::llmpack::simt::detail::to_bits(value), pred, loc);
}
#define LLMPACK_SIMT_REDUCE(fn, mode)                                                                        \
  inline unsigned fn(unsigned mask, unsigned v, std::source_location loc = std::source_location::current()) { \
    return ::llmpack::simt::detail::reduce(::llmpack::simt::detail::mode, false, mask, v, loc);               \
  }                                                                                                           \
  inline int fn(unsigned mask, int v, std::source_location loc = std::source_location::current()) {           \
    return static_cast<int>(                                                                                  \
        ::llmpack::simt::detail::reduce(::llmpack::simt::detail::mode, true, mask, static_cast<unsigned>(v), loc)); \
  }
LLMPACK_SIMT_REDUCE(__reduce_add_sync, kRedAdd)
LLMPACK_SIMT_REDUCE(__reduce_min_sync, kRedMin)
LLMPACK_SIMT_REDUCE(__reduce_max_sync, kRedMax)
#undef LLMPACK_SIMT_REDUCE
inline unsigned __reduce_and_sync(unsigned mask, unsigned v, std::source_location loc = std::source_location::current()) {
  return ::llmpack::simt::detail::reduce(::llmpack::simt::detail::kRedAnd, false, mask, v, loc);
}
inline unsigned __reduce_or_sync(unsigned mask, unsigned v, std::source_location loc = std::source_location::current()) {
  return ::llmpack::simt::detail::reduce(::llmpack::simt::detail::kRedOr, false, mask, v, loc);
}
inline unsigned __reduce_xor_sync(unsigned mask, unsigned v, std::source_location loc = std::source_location::current()) {
  return ::llmpack::simt::detail::reduce(::llmpack::simt::detail::kRedXor, false, mask, v, loc);
}

// ---- atomics ------------------------------------------------------------------------
// Threads interleave only at synchronisation points, so a read-modify-write
// is atomic as written. Integer arithmetic wraps, as on the GPU.
namespace llmpack::simt::detail {
template <class T, class F>
inline T atomic_rmw(T* p, F f) {
  const T old = *p;
  *p = f(old);
  return old;
}
template <class T>
inline T wrap_add(T a, T b) {
  using U = std::make_unsigned_t<T>;
  return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
}
}  // namespace llmpack::simt::detail

#define LLMPACK_SIMT_ATOMIC_INT(T)                                                                      \
  inline T atomicAdd(T* p, T v) {                                                                       \
    return ::llmpack::simt::detail::atomic_rmw(p, [v](T o) { return ::llmpack::simt::detail::wrap_add(o, v); }); \
  }                                                                                                     \
  inline T atomicExch(T* p, T v) { return ::llmpack::simt::detail::atomic_rmw(p, [v](T) { return v; }); }  \
  inline T atomicMin(T* p, T v) { return ::llmpack::simt::detail::atomic_rmw(p, [v](T o) { return v < o ? v : o; }); } \
  inline T atomicMax(T* p, T v) { return ::llmpack::simt::detail::atomic_rmw(p, [v](T o) { return v > o ? v : o; }); } \
  inline T atomicAnd(T* p, T v) { return ::llmpack::simt::detail::atomic_rmw(p, [v](T o) { return static_cast<T>(o & v); }); } \
  inline T atomicOr(T* p, T v) { return ::llmpack::simt::detail::atomic_rmw(p, [v](T o) { return static_cast<T>(o | v); }); }  \
  inline T atomicXor(T* p, T v) { return ::llmpack::simt::detail::atomic_rmw(p, [v](T o) { return static_cast<T>(o ^ v); }); } \
  inline T atomicCAS(T* p, T cmp, T v) {                                                                \
    return ::llmpack::simt::detail::atomic_rmw(p, [cmp, v](T o) { return o == cmp ? v : o; });         \
  }
LLMPACK_SIMT_ATOMIC_INT(int)
LLMPACK_SIMT_ATOMIC_INT(unsigned int)
LLMPACK_SIMT_ATOMIC_INT(unsigned long long)
LLMPACK_SIMT_ATOMIC_INT(long long)
#undef LLMPACK_SIMT_ATOMIC_INT
inline int atomicSub(int* p, int v) {
  return ::llmpack::simt::detail::atomic_rmw(p, [v](int o) { return ::llmpack::simt::detail::wrap_add(o, -v); });
}
inline unsigned atomicSub(unsigned* p, unsigned v) {
  return ::llmpack::simt::detail::atomic_rmw(p, [v](unsigned o) { return o - v; });
}
inline unsigned atomicInc(unsigned* p, unsigned v) {
  return ::llmpack::simt::detail::atomic_rmw(p, [v](unsigned o) { return o >= v ? 0u : o + 1; });
}
inline unsigned atomicDec(unsigned* p, unsigned v) {
  return ::llmpack::simt::detail::atomic_rmw(p, [v](unsigned o) { return (o == 0 || o > v) ? v : o - 1; });
}
inline unsigned short atomicCAS(unsigned short* p, unsigned short cmp, unsigned short v) {
  return ::llmpack::simt::detail::atomic_rmw(p, [cmp, v](unsigned short o) { return o == cmp ? v : o; });
}
inline float atomicAdd(float* p, float v) {
  return ::llmpack::simt::detail::atomic_rmw(p, [v](float o) { return o + v; });
}
inline double atomicAdd(double* p, double v) {
  return ::llmpack::simt::detail::atomic_rmw(p, [v](double o) { return o + v; });
}
inline float atomicExch(float* p, float v) { return ::llmpack::simt::detail::atomic_rmw(p, [v](float) { return v; }); }
inline __half atomicAdd(__half* p, __half v) { return ::llmpack::simt::detail::atomic_rmw(p, [v](__half o) { return __hadd(o, v); }); }
inline __half2 atomicAdd(__half2* p, __half2 v) {
  return ::llmpack::simt::detail::atomic_rmw(p, [v](__half2 o) { return __hadd2(o, v); });
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* p, __nv_bfloat16 v) {
  return ::llmpack::simt::detail::atomic_rmw(p, [v](__nv_bfloat16 o) { return __hadd(o, v); });
}
inline __nv_bfloat162 atomicAdd(__nv_bfloat162* p, __nv_bfloat162 v) {
  return ::llmpack::simt::detail::atomic_rmw(p, [v](__nv_bfloat162 o) { return __hadd2(o, v); });
}
// Scope variants: one memory, so the same operations.
#define atomicAdd_block atomicAdd
#define atomicAdd_system atomicAdd
#define atomicMin_block atomicMin
#define atomicMax_block atomicMax
#define atomicCAS_block atomicCAS
#define atomicExch_block atomicExch

// ---- integer / float intrinsics ------------------------------------------------------
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  x = ((x >> 8) & 0x00FF00FFu) | ((x & 0x00FF00FFu) << 8);
  return (x >> 16) | (x << 16);
}
inline unsigned long long __brevll(unsigned long long x) {
  return (static_cast<unsigned long long>(__brev(static_cast<unsigned>(x))) << 32) | __brev(static_cast<unsigned>(x >> 32));
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const unsigned long long v = (static_cast<unsigned long long>(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((v >> (8 * ((s >> (4 * i)) & 7))) & 0xFF) << (8 * i);
  return r;
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>((v << (shift & 31)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>(v >> (shift & 31));
}
inline unsigned __funnelshift_lc(unsigned lo, unsigned hi, unsigned shift) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>((v << (shift > 32 ? 32 : shift)) >> 32);
}
inline unsigned __funnelshift_rc(unsigned lo, unsigned hi, unsigned shift) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>(v >> (shift > 32 ? 32 : shift));
}
inline unsigned __umulhi(unsigned a, unsigned b) { return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32); }
inline int __mulhi(int a, int b) { return static_cast<int>((static_cast<long long>(a) * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline long long __mul64hi(long long a, long long b) { return static_cast<long long>((static_cast<__int128>(a) * b) >> 64); }
inline int __float_as_int(float f) { return ::llmpack::simt::detail::from_bits<int>(::llmpack::simt::detail::to_bits(f)); }
inline unsigned __float_as_uint(float f) { return ::llmpack::simt::fp::f32_bits(f); }
inline float __int_as_float(int i) { return ::llmpack::simt::fp::bits_f32(static_cast<uint32_t>(i)); }
inline float __uint_as_float(unsigned u) { return ::llmpack::simt::fp::bits_f32(u); }
inline long long __double_as_longlong(double d) { return ::llmpack::simt::detail::from_bits<long long>(::llmpack::simt::detail::to_bits(d)); }
inline double __longlong_as_double(long long v) { return ::llmpack::simt::detail::from_bits<double>(::llmpack::simt::detail::to_bits(v)); }
inline int __float2int_rn(float f) { return static_cast<int>(std::nearbyint(f)); }
inline int __float2int_rz(float f) { return static_cast<int>(std::trunc(f)); }
inline int __float2int_rd(float f) { return static_cast<int>(std::floor(f)); }
inline int __float2int_ru(float f) { return static_cast<int>(std::ceil(f)); }
inline unsigned __float2uint_rn(float f) { return static_cast<unsigned>(std::nearbyint(f)); }
inline unsigned __float2uint_rz(float f) { return static_cast<unsigned>(std::trunc(f)); }
inline float __int2float_rn(int i) { return static_cast<float>(i); }
inline float __uint2float_rn(unsigned u) { return static_cast<float>(u); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; }  // NaN -> 0
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanhf(float x) { return std::tanh(x); }
// CUDA's min/max overloads for device code.
#define LLMPACK_SIMT_MINMAX(T)                              \
  inline T min(T a, T b) { return b < a ? b : a; }         \
  inline T max(T a, T b) { return a < b ? b : a; }
LLMPACK_SIMT_MINMAX(int)
LLMPACK_SIMT_MINMAX(unsigned int)
LLMPACK_SIMT_MINMAX(long)
LLMPACK_SIMT_MINMAX(unsigned long)
LLMPACK_SIMT_MINMAX(long long)
LLMPACK_SIMT_MINMAX(unsigned long long)
#undef LLMPACK_SIMT_MINMAX
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline unsigned min(int a, unsigned b) { return min(static_cast<unsigned>(a), b); }
inline unsigned min(unsigned a, int b) { return min(a, static_cast<unsigned>(b)); }
inline unsigned max(int a, unsigned b) { return max(static_cast<unsigned>(a), b); }
inline unsigned max(unsigned a, int b) { return max(a, static_cast<unsigned>(b)); }

// Cache-hinted loads / stores: plain accesses.
template <class T>
inline T __ldg(const T* p) { return *p; }
template <class T>
inline T __ldcg(const T* p) { return *p; }
template <class T>
inline T __ldca(const T* p) { return *p; }
template <class T>
inline T __ldcs(const T* p) { return *p; }
template <class T>
inline T __ldlu(const T* p) { return *p; }
template <class T>
inline T __ldcv(const T* p) { return *p; }
template <class T>
inline void __stcg(T* p, T v) { *p = v; }
template <class T>
inline void __stcs(T* p, T v) { *p = v; }
template <class T>
inline void __stwb(T* p, T v) { *p = v; }
template <class T>
inline void __stwt(T* p, T v) { *p = v; }

// ---- half2 <-> float2 ------------------------------------------------------------------
inline float2 __half22float2(__half2 h) { return {__half2float(h.x), __half2float(h.y)}; }
inline __half2 __float22half2_rn(float2 f) { return __floats2half2_rn(f.x, f.y); }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {__bfloat162float(h.x), __bfloat162float(h.y)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return __floats2bfloat162_rn(f.x, f.y); }
