// The PTX instructions of common/cuda/ptx.cuh, emulated as warp collectives:
// each lane deposits its registers, and the lane that completes the
// collective assembles the full matrices from all 32 lanes' fragments (the
// layouts of the PTX ISA, "Matrix fragments for mma.m16n8k16 / sparse
// mma.m16n8k32 / mma.m8n8k128 / mma.m16n8k256" and "ldmatrix"), computes
// the result and hands every lane its fragment of it.
//
// Numerics: products of f16 / bf16 inputs are exact in double; each output
// element is C + sum of products accumulated in double and rounded once to
// f32. The PTX ISA leaves accumulation order and intermediate rounding
// unspecified, so hardware may differ in the last bits; compare GEMM results
// with a tolerance (bit-exact agreement holds whenever every partial sum is
// exactly representable, e.g. small integers).
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/simt/simt.h"

namespace llmpack::simt {
namespace detail {
[[noreturn]] void ptx_fail(const std::string& what);
bool in_dynamic_smem(const void* p, size_t n, size_t* offset);
size_t dynamic_smem_bytes_now();
void cp_async_push(void* dst, const void* src);
void cp_async_commit_now();
void cp_async_wait_now(int n);
bool in_kernel();
}  // namespace detail

namespace {

using detail::LaneIO;
using detail::ptx_fail;
using detail::WarpOp;

using detail::fmt;

inline float f16x(uint32_t reg, int half, bool bf16) {
  const auto bits = static_cast<uint16_t>(reg >> (16 * half));
  return bf16 ? fp::bf16_bits_to_f32(bits) : fp::f16_bits_to_f32(bits);
}
inline float as_f32(uint32_t u) { return fp::bits_f32(u); }
inline uint32_t f32_as(float f) { return fp::f32_bits(f); }

// ---- mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 ----------------
// LaneIO.in: a[0..3], b[0..1] at 4..5, c[0..3] at 6..9. out: d[0..3].
template <bool BF16>
void exec_mma_16816(LaneIO* const* L, unsigned) {
  double A[16][16], B[16][8], C[16][8];
  for (unsigned lane = 0; lane < 32; ++lane) {
    const unsigned g = lane >> 2, t = lane & 3;
    const uint32_t* in = L[lane]->in;
    for (unsigned i = 0; i < 8; ++i) {  // a_i: register i/2, half i%2
      const unsigned row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
      const unsigned col = t * 2 + (i & 1) + (i >= 4 ? 8 : 0);
      A[row][col] = f16x(in[i / 2], i & 1, BF16);
    }
    for (unsigned i = 0; i < 4; ++i) {  // b_i
      const unsigned row = t * 2 + (i & 1) + (i >= 2 ? 8 : 0);
      B[row][g] = f16x(in[4 + i / 2], i & 1, BF16);
    }
    for (unsigned i = 0; i < 4; ++i) C[g + (i >= 2 ? 8 : 0)][t * 2 + (i & 1)] = as_f32(in[6 + i]);
  }
  for (unsigned lane = 0; lane < 32; ++lane) {
    const unsigned g = lane >> 2, t = lane & 3;
    for (unsigned i = 0; i < 4; ++i) {
      const unsigned row = g + (i >= 2 ? 8 : 0), col = t * 2 + (i & 1);
      double acc = C[row][col];
      for (unsigned k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
      L[lane]->out[i] = f32_as(static_cast<float>(acc));
    }
  }
}
const WarpOp kMma16816[2] = {{"mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", &exec_mma_16816<false>, true},
                             {"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", &exec_mma_16816<true>, true}};

// ---- mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.{f16,bf16}... --------
// LaneIO.in: a[0..3], b[0..3] at 4..7, c[0..3] at 8..11, e at 12. out: d[0..3].
//
// A (16x32, 2:4 along K) is stored compressed: per row, chunk j (K columns
// 4j..4j+3) keeps two values. Fragment: lane (g = lane/4, t = lane%4) holds
//   a0,a1 (reg 0): row g,   chunk t        a2,a3 (reg 1): row g+8, chunk t
//   a4,a5 (reg 2): row g,   chunk t+4      a6,a7 (reg 3): row g+8, chunk t+4
// (low half = the nonzero with the lower K index). Metadata nibble of (row r,
// chunk j) = i0 | i1 << 2 (positions in the chunk, i0 < i1), held by lane
//   4*(r%8) + 2*selector + j/4, bits 16*(r/8) + 4*(j%4) .. +3
// i.e. with selector 0: T0 of each quad has chunks 0-3 of rows g (bits 0-15)
// and g+8 (bits 16-31), T1 has chunks 4-7 of the same rows; selector 1 moves
// this to T2 / T3. Other lanes' e is ignored.
template <bool BF16, int Sel>
void exec_mma_sp_16832(LaneIO* const* L, unsigned) {
  double vals[16][16], A[16][32] = {}, B[32][8], C[16][8];
  for (unsigned lane = 0; lane < 32; ++lane) {
    const unsigned g = lane >> 2, t = lane & 3;
    const uint32_t* in = L[lane]->in;
    for (unsigned q = 0; q < 4; ++q) {
      const unsigned row = g + 8 * (q & 1), chunk = t + 4 * (q >> 1);
      vals[row][2 * chunk] = f16x(in[q], 0, BF16);
      vals[row][2 * chunk + 1] = f16x(in[q], 1, BF16);
    }
    for (unsigned q = 0; q < 4; ++q)
      for (unsigned h = 0; h < 2; ++h) B[2 * t + h + 8 * q][g] = f16x(in[4 + q], h, BF16);
    for (unsigned i = 0; i < 4; ++i) C[g + (i >= 2 ? 8 : 0)][t * 2 + (i & 1)] = as_f32(in[8 + i]);
  }
  for (unsigned r = 0; r < 16; ++r) {
    for (unsigned j = 0; j < 8; ++j) {
      const unsigned src = 4 * (r % 8) + 2 * Sel + j / 4, shift = 16 * (r / 8) + 4 * (j % 4);
      const unsigned nib = (L[src]->in[12] >> shift) & 0xF, i0 = nib & 3, i1 = nib >> 2;
      if (!(i0 < i1)) {
        ptx_fail(fmt("mma.sp::ordered_metadata (sparsity selector %d): invalid metadata nibble 0x%x from lane %u, "
                     "bits %u..%u (row %u, k %u..%u): a nibble is i0 | i1 << 2 with i0 < i1 (0x4 0x8 0x9 0xc 0xd 0xe)",
                     Sel, nib, src, shift, shift + 3, r, 4 * j, 4 * j + 3));
      }
      A[r][4 * j + i0] = vals[r][2 * j];
      A[r][4 * j + i1] = vals[r][2 * j + 1];
    }
  }
  for (unsigned lane = 0; lane < 32; ++lane) {
    const unsigned g = lane >> 2, t = lane & 3;
    for (unsigned i = 0; i < 4; ++i) {
      const unsigned row = g + (i >= 2 ? 8 : 0), col = t * 2 + (i & 1);
      double acc = C[row][col];
      for (unsigned k = 0; k < 32; ++k) acc += A[row][k] * B[k][col];
      L[lane]->out[i] = f32_as(static_cast<float>(acc));
    }
  }
}
const WarpOp kMmaSp[2][2] = {
    {{"mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 (selector 0)", &exec_mma_sp_16832<false, 0>, true},
     {"mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 (selector 1)", &exec_mma_sp_16832<false, 1>, true}},
    {{"mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 (selector 0)", &exec_mma_sp_16832<true, 0>, true},
     {"mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 (selector 1)", &exec_mma_sp_16832<true, 1>, true}}};

// ---- mma.sync.aligned.m8n8k128.row.col.s32.b1.b1.s32.and.popc ---------------------------
// LaneIO.in: a at 0, b at 1, c[0..1] at 2..3. A row g, bits 32t..32t+31 (bit i of
// the register = column 32t+i); B column g, rows 32t..; C/D row g, cols 2t, 2t+1.
void exec_bmma_88128(LaneIO* const* L, unsigned) {
  uint32_t A[8][4], B[8][4];
  for (unsigned lane = 0; lane < 32; ++lane) {
    A[lane >> 2][lane & 3] = L[lane]->in[0];
    B[lane >> 2][lane & 3] = L[lane]->in[1];
  }
  for (unsigned lane = 0; lane < 32; ++lane) {
    const unsigned g = lane >> 2, t = lane & 3;
    for (unsigned i = 0; i < 2; ++i) {
      const unsigned col = 2 * t + i;
      uint32_t acc = L[lane]->in[2 + i];
      for (unsigned w = 0; w < 4; ++w) acc += static_cast<uint32_t>(__builtin_popcount(A[g][w] & B[col][w]));
      L[lane]->out[i] = acc;  // s32 accumulation wraps
    }
  }
}
const WarpOp kBmma88128 = {"mma.sync.aligned.m8n8k128.row.col.s32.b1.b1.s32.and.popc", &exec_bmma_88128, true};

// ---- mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc --------------------------
// LaneIO.in: a[0..3], b[0..1] at 4..5, c[0..3] at 6..9.
// A: a reg 0 row g, cols 32t+i; reg 1 row g+8, cols 32t+i; reg 2 row g, cols
// 128+32t+i; reg 3 row g+8, cols 128+32t+i. B: reg 0 rows 32t+i, reg 1 rows
// 128+32t+i, column g. C/D: c0,c1 row g, c2,c3 row g+8, cols 2t, 2t+1.
void exec_bmma_168256(LaneIO* const* L, unsigned) {
  uint32_t A[16][8], B[8][8];
  for (unsigned lane = 0; lane < 32; ++lane) {
    const unsigned g = lane >> 2, t = lane & 3;
    const uint32_t* in = L[lane]->in;
    A[g][t] = in[0];
    A[g + 8][t] = in[1];
    A[g][4 + t] = in[2];
    A[g + 8][4 + t] = in[3];
    B[g][t] = in[4];
    B[g][4 + t] = in[5];
  }
  for (unsigned lane = 0; lane < 32; ++lane) {
    const unsigned g = lane >> 2, t = lane & 3;
    for (unsigned i = 0; i < 4; ++i) {
      const unsigned row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
      uint32_t acc = L[lane]->in[6 + i];
      for (unsigned w = 0; w < 8; ++w) acc += static_cast<uint32_t>(__builtin_popcount(A[row][w] & B[col][w]));
      L[lane]->out[i] = acc;
    }
  }
}
const WarpOp kBmma168256 = {"mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc", &exec_bmma_168256, true};

// ---- ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16 ---------------------------
// Lanes 8m..8m+7 give the row addresses of matrix m (16 bytes per row; lanes
// beyond 8*num are ignored). Lane (g, t) receives in register m the elements
// (row g, cols 2t, 2t+1) of matrix m, or with .trans (rows 2t, 2t+1, col g).
void check_row(const char* name, const void* p, unsigned lane, unsigned m, unsigned r) {
  if (!p) ptx_fail(fmt("%s: lane %u gives a null address for row %u of matrix %u", name, lane, r, m));
  if (reinterpret_cast<uintptr_t>(p) & 15) {
    ptx_fail(fmt("%s: lane %u gives row address %p (row %u of matrix %u), which is not 16-byte aligned", name, lane,
                 p, r, m));
  }
  size_t off = 0;
  if (detail::in_dynamic_smem(p, 16, &off) && off + 16 > detail::dynamic_smem_bytes_now()) {
    ptx_fail(fmt("%s: lane %u reads bytes %zu..%zu of dynamic shared memory (row %u of matrix %u), past the %zu "
                 "bytes of the launch",
                 name, lane, off, off + 15, r, m, detail::dynamic_smem_bytes_now()));
  }
}

template <int Num, bool Trans>
void exec_ldmatrix(LaneIO* const* L, unsigned);

const WarpOp kLdmatrix[3][2] = {
    {{"ldmatrix.sync.aligned.m8n8.x1.shared.b16", &exec_ldmatrix<1, false>, true},
     {"ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16", &exec_ldmatrix<1, true>, true}},
    {{"ldmatrix.sync.aligned.m8n8.x2.shared.b16", &exec_ldmatrix<2, false>, true},
     {"ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16", &exec_ldmatrix<2, true>, true}},
    {{"ldmatrix.sync.aligned.m8n8.x4.shared.b16", &exec_ldmatrix<4, false>, true},
     {"ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16", &exec_ldmatrix<4, true>, true}}};

template <int Num, bool Trans>
void exec_ldmatrix(LaneIO* const* L, unsigned) {
  const char* name = kLdmatrix[Num == 1 ? 0 : Num == 2 ? 1 : 2][Trans].name;
  const unsigned char* rows[32];
  for (unsigned m = 0; m < Num; ++m) {
    for (unsigned r = 0; r < 8; ++r) {
      const unsigned lane = 8 * m + r;
      check_row(name, L[lane]->ptr, lane, m, r);
      rows[lane] = static_cast<const unsigned char*>(L[lane]->ptr);
    }
  }
  for (unsigned lane = 0; lane < 32; ++lane) {
    const unsigned g = lane >> 2, t = lane & 3;
    for (unsigned m = 0; m < Num; ++m) {
      uint32_t v;
      if (!Trans) {
        std::memcpy(&v, rows[8 * m + g] + 4 * t, 4);
      } else {
        uint16_t lo, hi;
        std::memcpy(&lo, rows[8 * m + 2 * t] + 2 * g, 2);
        std::memcpy(&hi, rows[8 * m + 2 * t + 1] + 2 * g, 2);
        v = lo | (static_cast<uint32_t>(hi) << 16);
      }
      L[lane]->out[m] = v;
    }
  }
}

}  // namespace

namespace ptx {

void mma_m16n8k16(bool bf16, float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], const Loc& loc) {
  LaneIO io;
  for (int i = 0; i < 4; ++i) io.in[i] = a[i], io.in[6 + i] = f32_as(c[i]);
  io.in[4] = b[0];
  io.in[5] = b[1];
  detail::warp_collective(kMma16816[bf16], 0xFFFFFFFFu, io, loc);
  for (int i = 0; i < 4; ++i) d[i] = as_f32(io.out[i]);
}

void mma_sp_m16n8k32(bool bf16, int selector, float d[4], const uint32_t a[4], const uint32_t b[4], const float c[4],
                     uint32_t e, const Loc& loc) {
  if (selector != 0 && selector != 1) {
    fail(loc, "mma.sp m16n8k32: the sparsity selector must be 0 (threads T0, T1) or 1 (T2, T3)");
  }
  LaneIO io;
  for (int i = 0; i < 4; ++i) io.in[i] = a[i], io.in[4 + i] = b[i], io.in[8 + i] = f32_as(c[i]);
  io.in[12] = e;
  detail::warp_collective(kMmaSp[bf16][selector], 0xFFFFFFFFu, io, loc);
  for (int i = 0; i < 4; ++i) d[i] = as_f32(io.out[i]);
}

void bmma_m8n8k128_and_popc(int d[2], uint32_t a, uint32_t b, const int c[2], const Loc& loc) {
  LaneIO io;
  io.in[0] = a;
  io.in[1] = b;
  io.in[2] = static_cast<uint32_t>(c[0]);
  io.in[3] = static_cast<uint32_t>(c[1]);
  detail::warp_collective(kBmma88128, 0xFFFFFFFFu, io, loc);
  d[0] = static_cast<int>(io.out[0]);
  d[1] = static_cast<int>(io.out[1]);
}

void bmma_m16n8k256_and_popc(int d[4], const uint32_t a[4], const uint32_t b[2], const int c[4], const Loc& loc) {
  LaneIO io;
  for (int i = 0; i < 4; ++i) io.in[i] = a[i], io.in[6 + i] = static_cast<uint32_t>(c[i]);
  io.in[4] = b[0];
  io.in[5] = b[1];
  detail::warp_collective(kBmma168256, 0xFFFFFFFFu, io, loc);
  for (int i = 0; i < 4; ++i) d[i] = static_cast<int>(io.out[i]);
}

void ldmatrix(int num, bool trans, uint32_t* r, const void* row_ptr, const Loc& loc) {
  const int k = num == 1 ? 0 : num == 2 ? 1 : num == 4 ? 2 : -1;
  if (k < 0) fail(loc, "ldmatrix: .num must be x1, x2 or x4");
  LaneIO io;
  io.ptr = row_ptr;
  detail::warp_collective(kLdmatrix[k][trans], 0xFFFFFFFFu, io, loc);
  for (int m = 0; m < num; ++m) r[m] = io.out[m];
}

// cp.async.cg.shared.global [smem], [gmem], 16. The copy is deferred until a
// cp.async.wait_group / wait_all covers its group (or the thread exits), so a
// kernel that reads the destination before waiting sees stale data, as it may
// on the GPU.
void cp_async_16(void* smem, const void* gmem, const Loc& loc) {
  if (!detail::in_kernel()) fail(loc, "cp.async outside a kernel");
  if (reinterpret_cast<uintptr_t>(smem) & 15) {
    fail(loc, fmt("cp.async: shared-memory destination %p is not 16-byte aligned", smem).c_str());
  }
  if (reinterpret_cast<uintptr_t>(gmem) & 15) {
    fail(loc, fmt("cp.async: global source %p is not 16-byte aligned", gmem).c_str());
  }
  size_t off = 0;
  if (detail::in_dynamic_smem(gmem, 16, &off)) fail(loc, "cp.async: the source must be global memory, not shared memory");
  if (detail::in_dynamic_smem(smem, 16, &off) && off + 16 > detail::dynamic_smem_bytes_now()) {
    fail(loc, fmt("cp.async: writes bytes %zu..%zu of dynamic shared memory, past the %zu bytes of the launch", off,
                  off + 15, detail::dynamic_smem_bytes_now())
                  .c_str());
  }
  detail::cp_async_push(smem, gmem);
}

void cp_async_commit(const Loc& loc) {
  if (!detail::in_kernel()) fail(loc, "cp.async.commit_group outside a kernel");
  detail::cp_async_commit_now();
}

void cp_async_wait(int n, const Loc& loc) {
  if (!detail::in_kernel()) fail(loc, "cp.async.wait outside a kernel");
  detail::cp_async_wait_now(n);
}

}  // namespace ptx
}  // namespace llmpack::simt
