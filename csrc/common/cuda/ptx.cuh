// THE one header where inline PTX lives. Under nvcc each wrapper is one PTX
// instruction; in the SIMT emulator build (LLMPACK_SIMT_EMULATION) the same
// call runs the emulated instruction (common/simt/ptx_emu.cpp), with the
// PTX ISA's semantics and fragment layouts, and checks its preconditions
// (full warp, aligned addresses, valid sparsity metadata).
//
// Fragment layouts (PTX ISA 9.x, "Warp-level matrix fragments"); for a lane,
// g = lane / 4 ("groupID") and t = lane % 4 ("threadID_in_group"). A 32-bit
// register holding two 16-bit elements has the lower-indexed one in bits 0-15.
//
// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32
//   A 16x16 (row-major): a[0] = (row g,   cols 2t, 2t+1)   a[1] = (row g+8, cols 2t, 2t+1)
//                        a[2] = (row g,   cols 2t+8, +9)   a[3] = (row g+8, cols 2t+8, +9)
//   B 16x8  (col-major): b[0] = (rows 2t, 2t+1, col g)     b[1] = (rows 2t+8, 2t+9, col g)
//   C/D 16x8 f32:        c[0], c[1] = row g, cols 2t, 2t+1; c[2], c[3] = row g+8, same cols
//
// mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.{f16,bf16}.{f16,bf16}.f32
//   A is 16x32 and 2:4 sparse along K: each chunk j of 4 columns (K = 4j..4j+3)
//   of a row keeps 2 values, stored compressed (16x16):
//     a[0] = row g,   chunk t     (the two kept values, lower K index in bits 0-15)
//     a[1] = row g+8, chunk t
//     a[2] = row g,   chunk t+4
//     a[3] = row g+8, chunk t+4
//   B 32x8 (col-major): b[q] = (rows 2t + 8q, 2t + 8q + 1, col g), q = 0..3
//   C/D as for m16n8k16.
//   Metadata e: one nibble per (row, chunk) = i0 | i1 << 2, the positions of the
//   two kept values within the chunk, i0 < i1 (the "ordered" form; valid
//   nibbles 0x4 0x8 0x9 0xC 0xD 0xE -- exactly llmpack's 2:4 nibble). Which lane
//   supplies it (Selector = sparsity selector, 0 or 1):
//     Selector 0: lane 4g+0 (T0 of each quad):  bits 4j..4j+3   = row g,   chunk j   (j = 0..3)
//                                               bits 16+4j..+3  = row g+8, chunk j   (j = 0..3)
//                 lane 4g+1 (T1):               bits 4j..4j+3   = row g,   chunk 4+j (j = 0..3)
//                                               bits 16+4j..+3  = row g+8, chunk 4+j (j = 0..3)
//     Selector 1: the same with lanes 4g+2 (T2) and 4g+3 (T3).
//   i.e. T0 holds K 0..15 and T1 holds K 16..31 of rows g (low half) and g+8
//   (high half); the other two lanes of the quad pass anything (ignored), so a
//   warp can keep two k-steps of metadata in one register per lane and issue
//   them with Selector 0 and 1. Built from llmpack's layout (meta byte b of a
//   row = groups 2b (low nibble) and 2b+1): for a 32-wide K block starting at
//   group G0 = k0/4, T0's low half is the row's groups G0..G0+3, i.e. meta
//   bytes k0/8 and k0/8+1 of row g as a little-endian uint16; T1's low half is
//   bytes k0/8+2, k0/8+3; the high halves are the same bytes of row g+8.
//   Source: PTX ISA "Sparse matrix storage" (selector: "0 (threads T0, T1) or
//   1 (threads T2, T3)") and "Matrix Fragments for sparse mma.m16n8k32 with
//   .f16 and .bf16 types" (Figure "Sparse MMA .m16n8k32 metadata layout").
//   We use ::ordered_metadata (PTX ISA 8.5, CUDA >= 12.5, sm_80+): the ISA
//   advises it because plain mma.sp "may have substantially reduced
//   performance on some target architectures"; semantics are the same for
//   ordered nibbles. With older nvcc the plain form is emitted.
//
// mma.sync.aligned.m8n8k128.row.col.s32.b1.b1.s32.and.popc
//   A 8x128 bits: a = row g, cols 32t..32t+31 (bit i = col 32t+i)
//   B 128x8 bits: b = rows 32t..32t+31 (bit i = row 32t+i), col g
//   C/D s32:      c[0], c[1] = row g, cols 2t, 2t+1.   D = C + popc(A_row AND B_col), wrapping.
// mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc
//   A 16x256: a[0] = row g, cols 32t+i; a[1] = row g+8, cols 32t+i;
//             a[2] = row g, cols 128+32t+i; a[3] = row g+8, cols 128+32t+i
//   B 256x8:  b[0] = rows 32t+i, b[1] = rows 128+32t+i, col g
//   C/D:      c[0], c[1] = row g, cols 2t, 2t+1; c[2], c[3] = row g+8.
//   (The ISA's formula prints "col = threadID_in_group*32 + i for i < 64"; the
//   figure, and the only reading that covers all 256 columns once, is i & 31.)
//
// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16
//   Each lane passes one row address: lanes 8m..8m+7 give rows 0..7 of matrix
//   m (16 bytes each, 16-byte aligned, in shared memory; lanes past 8*num are
//   ignored). r[m] of lane (g, t) = (row g, cols 2t, 2t+1) of matrix m; with
//   .trans = (rows 2t, 2t+1, col g), i.e. the fragment of the transpose.
//
// cp.async.cg.shared.global [smem], [gmem], 16 + commit_group / wait_group /
//   wait_all. The emulator performs the copy when a wait covers its group,
//   so reading the destination too early shows stale data there too.
//
// All mma / ldmatrix wrappers are warp-collective (.sync.aligned): all 32
// lanes must call them together.
#pragma once

#include <cstdint>

#include "common/cuda/runtime.cuh"

#if defined(LLMPACK_SIMT_EMULATION)
#define LLMPACK_PTX_EMULATED 1
#else
#define LLMPACK_PTX_EMULATED 0
#endif

// Device passes for sm_80+ emit the instruction; older device passes trap;
// nvcc's host pass never calls these.
#if !LLMPACK_PTX_EMULATED && defined(__CUDA_ARCH__)
#if __CUDA_ARCH__ >= 800
#define LLMPACK_PTX_SM80 1
#else
#define LLMPACK_PTX_SM80 0
#endif
#endif

#if defined(__CUDACC_VER_MAJOR__) && \
    (__CUDACC_VER_MAJOR__ > 12 || (__CUDACC_VER_MAJOR__ == 12 && __CUDACC_VER_MINOR__ >= 5))
#define LLMPACK_PTX_MMA_SP "mma.sp::ordered_metadata.sync.aligned"
#else
#define LLMPACK_PTX_MMA_SP "mma.sp.sync.aligned"
#endif

namespace llmpack::ptx {

#if !LLMPACK_PTX_EMULATED
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
#endif

// ---- dense mma, f16 / bf16 inputs, f32 accumulate ----------------------------------------
__device__ __forceinline__ void mma_m16n8k16_f16f32(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                     const float c[4] LLMPACK_SITE_PARAM) {
#if LLMPACK_PTX_EMULATED
  ::llmpack::simt::ptx::mma_m16n8k16(false, d, a, b, c, llmpack_site);
#elif defined(__CUDA_ARCH__)
#if LLMPACK_PTX_SM80
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#else
  __trap();
#endif
#endif
}

__device__ __forceinline__ void mma_m16n8k16_bf16f32(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                      const float c[4] LLMPACK_SITE_PARAM) {
#if LLMPACK_PTX_EMULATED
  ::llmpack::simt::ptx::mma_m16n8k16(true, d, a, b, c, llmpack_site);
#elif defined(__CUDA_ARCH__)
#if LLMPACK_PTX_SM80
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#else
  __trap();
#endif
#endif
}

// ---- 2:4 sparse mma (A sparse), f16 / bf16 inputs, f32 accumulate -------------------------
template <int Selector = 0>
__device__ __forceinline__ void mma_sp_m16n8k32_f16f32(float d[4], const uint32_t a[4], const uint32_t b[4],
                                                        const float c[4], uint32_t e LLMPACK_SITE_PARAM) {
  static_assert(Selector == 0 || Selector == 1, "m16n8k32 sparsity selector is 0 (T0,T1) or 1 (T2,T3)");
#if LLMPACK_PTX_EMULATED
  ::llmpack::simt::ptx::mma_sp_m16n8k32(false, Selector, d, a, b, c, e, llmpack_site);
#elif defined(__CUDA_ARCH__)
#if LLMPACK_PTX_SM80
  asm volatile(LLMPACK_PTX_MMA_SP
               ".m16n8k32.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, "
               "{%12,%13,%14,%15}, %16, %17;\n"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]),
                 "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]), "r"(e), "n"(Selector));
#else
  __trap();
#endif
#endif
}

template <int Selector = 0>
__device__ __forceinline__ void mma_sp_m16n8k32_bf16f32(float d[4], const uint32_t a[4], const uint32_t b[4],
                                                         const float c[4], uint32_t e LLMPACK_SITE_PARAM) {
  static_assert(Selector == 0 || Selector == 1, "m16n8k32 sparsity selector is 0 (T0,T1) or 1 (T2,T3)");
#if LLMPACK_PTX_EMULATED
  ::llmpack::simt::ptx::mma_sp_m16n8k32(true, Selector, d, a, b, c, e, llmpack_site);
#elif defined(__CUDA_ARCH__)
#if LLMPACK_PTX_SM80
  asm volatile(LLMPACK_PTX_MMA_SP
               ".m16n8k32.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, "
               "{%12,%13,%14,%15}, %16, %17;\n"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]),
                 "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]), "r"(e), "n"(Selector));
#else
  __trap();
#endif
#endif
}

// ---- binary mma: D = C + popc(A AND B), s32 ---------------------------------------------
__device__ __forceinline__ void bmma_m8n8k128_and_popc(int d[2], uint32_t a, uint32_t b,
                                                       const int c[2] LLMPACK_SITE_PARAM) {
#if LLMPACK_PTX_EMULATED
  ::llmpack::simt::ptx::bmma_m8n8k128_and_popc(d, a, b, c, llmpack_site);
#elif defined(__CUDA_ARCH__)
#if LLMPACK_PTX_SM80
  asm volatile("mma.sync.aligned.m8n8k128.row.col.s32.b1.b1.s32.and.popc {%0,%1}, {%2}, {%3}, {%4,%5};\n"
               : "=r"(d[0]), "=r"(d[1])
               : "r"(a), "r"(b), "r"(c[0]), "r"(c[1]));
#else
  __trap();
#endif
#endif
}

__device__ __forceinline__ void bmma_m16n8k256_and_popc(int d[4], const uint32_t a[4], const uint32_t b[2],
                                                        const int c[4] LLMPACK_SITE_PARAM) {
#if LLMPACK_PTX_EMULATED
  ::llmpack::simt::ptx::bmma_m16n8k256_and_popc(d, a, b, c, llmpack_site);
#elif defined(__CUDA_ARCH__)
#if LLMPACK_PTX_SM80
  asm volatile(
      "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(c[0]), "r"(c[1]), "r"(c[2]),
        "r"(c[3]));
#else
  __trap();
#endif
#endif
}

// ---- ldmatrix (16-bit elements, 8x8 matrices) -------------------------------------------
// smem_row_ptr: this lane's row address (see the table above).
#if LLMPACK_PTX_EMULATED
#define LLMPACK_PTX_LDMATRIX(fn, num, trans, asm_str, outs)                                      \
  __device__ __forceinline__ void fn(uint32_t* r, const void* smem_row_ptr LLMPACK_SITE_PARAM) { \
    ::llmpack::simt::ptx::ldmatrix(num, trans, r, smem_row_ptr, llmpack_site);                   \
  }
#else
#define LLMPACK_PTX_LDMATRIX(fn, num, trans, asm_str, outs)           \
  __device__ __forceinline__ void fn(uint32_t* r, const void* smem_row_ptr) { \
    LLMPACK_PTX_LDMATRIX_BODY(asm_str, outs)                          \
  }
#if defined(__CUDA_ARCH__)
#define LLMPACK_PTX_LDMATRIX_BODY(asm_str, outs) \
  asm volatile(asm_str : LLMPACK_PTX_UNPAREN outs : "r"(smem_addr(smem_row_ptr)) : "memory");
#else
#define LLMPACK_PTX_LDMATRIX_BODY(asm_str, outs) \
  (void)r;                                       \
  (void)smem_row_ptr;
#endif
#define LLMPACK_PTX_UNPAREN(...) __VA_ARGS__
#endif

LLMPACK_PTX_LDMATRIX(ldmatrix_x1, 1, false, "ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n", ("=r"(r[0])))
LLMPACK_PTX_LDMATRIX(ldmatrix_x2, 2, false, "ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n",
                     ("=r"(r[0]), "=r"(r[1])))
LLMPACK_PTX_LDMATRIX(ldmatrix_x4, 4, false, "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n",
                     ("=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])))
LLMPACK_PTX_LDMATRIX(ldmatrix_x1_trans, 1, true, "ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n",
                     ("=r"(r[0])))
LLMPACK_PTX_LDMATRIX(ldmatrix_x2_trans, 2, true, "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n",
                     ("=r"(r[0]), "=r"(r[1])))
LLMPACK_PTX_LDMATRIX(ldmatrix_x4_trans, 4, true,
                     "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n",
                     ("=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])))
#undef LLMPACK_PTX_LDMATRIX

// ---- cp.async (sm_80) -----------------------------------------------------------------------
// 16 bytes global -> shared, bypassing L1 (.cg). Both addresses 16-byte aligned.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem LLMPACK_SITE_PARAM) {
#if LLMPACK_PTX_EMULATED
  ::llmpack::simt::ptx::cp_async_16(smem, gmem, llmpack_site);
#elif defined(__CUDA_ARCH__)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem)), "l"(gmem) : "memory");
#endif
}

__device__ __forceinline__ void cp_async_commit(LLMPACK_SITE_PARAM_ONLY) {
#if LLMPACK_PTX_EMULATED
  ::llmpack::simt::ptx::cp_async_commit(llmpack_site);
#elif defined(__CUDA_ARCH__)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits for every committed group and any copies not yet committed.
__device__ __forceinline__ void cp_async_wait_all(LLMPACK_SITE_PARAM_ONLY) {
#if LLMPACK_PTX_EMULATED
  ::llmpack::simt::ptx::cp_async_wait(-1, llmpack_site);
#elif defined(__CUDA_ARCH__)
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// Waits until at most N of the most recently committed groups are pending.
template <int N>
__device__ __forceinline__ void cp_async_wait(LLMPACK_SITE_PARAM_ONLY) {
  static_assert(N >= 0 && N <= 7, "cp.async.wait_group takes 0..7");
#if LLMPACK_PTX_EMULATED
  ::llmpack::simt::ptx::cp_async_wait(N, llmpack_site);
#elif defined(__CUDA_ARCH__)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// ---- special registers ---------------------------------------------------------------------
__device__ __forceinline__ unsigned lane_id() {
#if LLMPACK_PTX_EMULATED
  return ::llmpack::simt::detail::lane_id();
#elif defined(__CUDA_ARCH__)
  unsigned r;
  asm volatile("mov.u32 %0, %%laneid;\n" : "=r"(r));
  return r;
#else
  return 0;
#endif
}

// Bytes of dynamic shared memory of this launch.
__device__ __forceinline__ unsigned dynamic_smem_size() {
#if LLMPACK_PTX_EMULATED
  return static_cast<unsigned>(::llmpack::simt::detail::dynamic_smem_size());
#elif defined(__CUDA_ARCH__)
  unsigned r;
  asm volatile("mov.u32 %0, %%dynamic_smem_size;\n" : "=r"(r));
  return r;
#else
  return 0;
#endif
}

}  // namespace llmpack::ptx
