// CUDA runtime types for the SIMT emulator: dim3, the built-in vector types
// (with CUDA's alignment, so 16-byte vector loads keep their alignment
// requirements), cudaError_t / cudaStream_t and the few runtime calls our
// launch code makes. Host C++ only.
#pragma once

#include <cstddef>
#include <cstdint>

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return {x, y, z}; }
};

// Vector types: T1..T4 with CUDA's alignments (2-element types aligned to
// their size, 4-element types to min(size, 16); 3-element types unaligned).
#define LLMPACK_SIMT_VEC(name, T, a2, a4)                                                \
  struct name##1 { T x; };                                                               \
  struct alignas(a2) name##2 { T x, y; };                                                \
  struct name##3 { T x, y, z; };                                                         \
  struct alignas(a4) name##4 { T x, y, z, w; };                                          \
  inline name##1 make_##name##1(T x) { return {x}; }                                     \
  inline name##2 make_##name##2(T x, T y) { return {x, y}; }                             \
  inline name##3 make_##name##3(T x, T y, T z) { return {x, y, z}; }                     \
  inline name##4 make_##name##4(T x, T y, T z, T w) { return {x, y, z, w}; }

LLMPACK_SIMT_VEC(char, signed char, 2, 4)
LLMPACK_SIMT_VEC(uchar, unsigned char, 2, 4)
LLMPACK_SIMT_VEC(short, short, 4, 8)
LLMPACK_SIMT_VEC(ushort, unsigned short, 4, 8)
LLMPACK_SIMT_VEC(int, int, 8, 16)
LLMPACK_SIMT_VEC(float, float, 8, 16)
LLMPACK_SIMT_VEC(longlong, long long, 16, 16)
LLMPACK_SIMT_VEC(ulonglong, unsigned long long, 16, 16)
LLMPACK_SIMT_VEC(double, double, 16, 16)
#undef LLMPACK_SIMT_VEC

// uint1..uint4 separately: uint3 is the index type above.
struct uint1 { unsigned int x; };
struct alignas(8) uint2 { unsigned int x, y; };
struct alignas(16) uint4 { unsigned int x, y, z, w; };
inline uint1 make_uint1(unsigned x) { return {x}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return {x, y, z}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

static_assert(alignof(float4) == 16 && alignof(int4) == 16 && alignof(uint4) == 16 && alignof(float2) == 8);

// ---- runtime API subset ------------------------------------------------------
enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};
typedef cudaError_t cudaError;
typedef struct CUstream_st* cudaStream_t;

enum cudaFuncAttribute : int {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};

namespace llmpack::simt {
cudaError_t get_last_error(bool reset);
void set_last_error(cudaError_t e);
}  // namespace llmpack::simt

inline cudaError_t cudaGetLastError() { return llmpack::simt::get_last_error(true); }
inline cudaError_t cudaPeekAtLastError() { return llmpack::simt::get_last_error(false); }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}
// Accepted and ignored: the emulator has no per-function limits to raise
// (launch() checks dynamic shared memory against the architecture's maximum).
template <class F>
inline cudaError_t cudaFuncSetAttribute(F*, cudaFuncAttribute, int) {
  return cudaSuccess;
}
