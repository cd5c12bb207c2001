// One test per emulated PTX instruction (common/cuda/ptx.cuh), each against
// a scalar model: the host distributes full matrices into per-lane fragments
// with the PTX ISA's layout written here independently (as "which lane,
// register and half holds element (row, col)", the inverse of the emulator's
// "which element does this register hold"), runs one warp through the
// wrapper, gathers D the same way and compares with D = A*B + C computed
// directly. The mma.sp metadata is built from llmpack's 2:4 meta bytes as
// ptx.cuh documents it.
#include <algorithm>
#include <cmath>
#include <random>

#include "simt_test.h"

namespace {

using simt_test::Failure;

// Per-lane registers for one warp.
struct Frag {
  uint32_t a[32][4];
  uint32_t b[32][4];
  uint32_t c[32][4];  // f32 bits or s32
  uint32_t e[32];
  uint32_t d[32][4];
};

void set16(uint32_t& reg, int half, uint16_t bits) {
  reg &= half ? 0x0000FFFFu : 0xFFFF0000u;
  reg |= static_cast<uint32_t>(bits) << (16 * half);
}
uint16_t bits16(float v, bool bf16) {
  return bf16 ? __bfloat16_as_ushort(__float2bfloat16(v)) : __half_as_ushort(__float2half(v));
}
float val16(uint16_t b, bool bf16) {
  return bf16 ? __bfloat162float(__ushort_as_bfloat16(b)) : __half2float(__ushort_as_half(b));
}
uint32_t fbits(float f) { return llmpack::simt::fp::f32_bits(f); }
float bitsf(uint32_t u) { return llmpack::simt::fp::bits_f32(u); }

// C/D 16x8 (f32 or s32): element (r, c) is register (r>=8)*2 + c%2 of lane 4*(r%8) + c/2.
void put_c(Frag& f, int r, int c, uint32_t v) { f.c[4 * (r % 8) + c / 2][2 * (r >= 8) + c % 2] = v; }
uint32_t get_d(const Frag& f, int r, int c) { return f.d[4 * (r % 8) + c / 2][2 * (r >= 8) + c % 2]; }

// ---- mma.m16n8k16 f16 / bf16 -------------------------------------------------------------------
__global__ void k_mma16816(Frag* f, int bf16) {
  const int l = threadIdx.x;
  float d[4], c[4];
  std::memcpy(c, f->c[l], 16);
  if (bf16) llmpack::ptx::mma_m16n8k16_bf16f32(d, f->a[l], f->b[l], c);
  else llmpack::ptx::mma_m16n8k16_f16f32(d, f->a[l], f->b[l], c);
  std::memcpy(f->d[l], d, 16);
}

void run_mma16816(bool bf16, bool integers, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0, 1);
  std::uniform_int_distribution<int> small(-6, 6);
  auto draw = [&] { return integers ? small(rng) * 0.5f : normal(rng); };
  float A[16][16], B[16][8], C[16][8];
  Frag f{};
  for (int r = 0; r < 16; ++r)
    for (int k = 0; k < 16; ++k) {
      const uint16_t b = bits16(draw(), bf16);
      A[r][k] = val16(b, bf16);
      // A (16x16, row-major): (r, k) -> lane 4*(r%8) + (k%8)/2, register (r>=8) + 2*(k>=8), half k%2.
      set16(f.a[4 * (r % 8) + (k % 8) / 2][(r >= 8) + 2 * (k >= 8)], k % 2, b);
    }
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 8; ++n) {
      const uint16_t b = bits16(draw(), bf16);
      B[k][n] = val16(b, bf16);
      // B (16x8, col-major): (k, n) -> lane 4*n + (k%8)/2, register k/8, half k%2.
      set16(f.b[4 * n + (k % 8) / 2][k / 8], k % 2, b);
    }
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) put_c(f, r, n, fbits(C[r][n] = draw() * 4));
  LLMPACK_LAUNCH(k_mma16816, dim3(1), dim3(32), 0, nullptr, &f, bf16 ? 1 : 0);
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) {
      double ref = C[r][n];
      for (int k = 0; k < 16; ++k) ref += static_cast<double>(A[r][k]) * B[k][n];
      const float got = bitsf(get_d(f, r, n));
      if (integers) {
        CHECK_MSG(got == static_cast<float>(ref), "D[%d][%d] = %g, want %g", r, n, got, ref);
      } else {
        CHECK_MSG(std::fabs(got - ref) <= 1e-6 * (1 + std::fabs(ref)), "D[%d][%d] = %g, want %g", r, n, got, ref);
      }
    }
}

SIMT_TEST(ptx_mma_m16n8k16_f16f32) {
  for (unsigned s = 0; s < 5; ++s) run_mma16816(false, true, s), run_mma16816(false, false, 100 + s);
}
SIMT_TEST(ptx_mma_m16n8k16_bf16f32) {
  for (unsigned s = 0; s < 5; ++s) run_mma16816(true, true, s), run_mma16816(true, false, 100 + s);
}

// ---- mma.sp.m16n8k32 f16 / bf16 ------------------------------------------------------------------
template <int Sel>
__global__ void k_mma_sp(Frag* f, int bf16) {
  const int l = threadIdx.x;
  float d[4], c[4];
  std::memcpy(c, f->c[l], 16);
  if (bf16) llmpack::ptx::mma_sp_m16n8k32_bf16f32<Sel>(d, f->a[l], f->b[l], c, f->e[l]);
  else llmpack::ptx::mma_sp_m16n8k32_f16f32<Sel>(d, f->a[l], f->b[l], c, f->e[l]);
  std::memcpy(f->d[l], d, 16);
}

struct Sparse {
  float A[16][32];  // dense view, zeros where dropped
  uint8_t meta[16][4];  // llmpack layout: byte b = nibble(group 2b) | nibble(group 2b+1) << 4
};

void build_sparse(Frag& f, Sparse& s, bool bf16, bool integers, int sel, std::mt19937& rng) {
  static const int kPairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
  std::normal_distribution<float> normal(0, 1);
  std::uniform_int_distribution<int> small(-6, 6);
  std::memset(&s, 0, sizeof s);
  for (int r = 0; r < 16; ++r)
    for (int j = 0; j < 8; ++j) {
      const int* p = kPairs[rng() % 6];
      for (int v = 0; v < 2; ++v) {
        const uint16_t b = bits16(integers ? small(rng) * 0.5f : normal(rng), bf16);
        s.A[r][4 * j + p[v]] = val16(b, bf16);
        // Compressed A: (row r, chunk j, value v) -> lane 4*(r%8) + j%4, register (r>=8) + 2*(j>=4), half v.
        set16(f.a[4 * (r % 8) + j % 4][(r >= 8) + 2 * (j >= 4)], v, b);
      }
      const uint8_t nib = static_cast<uint8_t>(p[0] | (p[1] << 2));
      s.meta[r][j / 2] |= static_cast<uint8_t>(nib << (4 * (j % 2)));
    }
  // Metadata per ptx.cuh: lanes 4g + 2*sel (T0) and 4g + 2*sel + 1 (T1) hold
  // u16(meta bytes 0,1 | 2,3 of row g) | u16(same bytes of row g+8) << 16; the
  // other lanes' e must be ignored, so they get garbage.
  for (int l = 0; l < 32; ++l) f.e[l] = static_cast<uint32_t>(rng());
  auto u16 = [&](int row, int byte) { return static_cast<uint32_t>(s.meta[row][byte] | (s.meta[row][byte + 1] << 8)); };
  for (int g = 0; g < 8; ++g) {
    f.e[4 * g + 2 * sel] = u16(g, 0) | (u16(g + 8, 0) << 16);
    f.e[4 * g + 2 * sel + 1] = u16(g, 2) | (u16(g + 8, 2) << 16);
  }
}

void run_mma_sp(bool bf16, int sel, bool integers, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0, 1);
  Frag f{};
  Sparse s;
  build_sparse(f, s, bf16, integers, sel, rng);
  float B[32][8], C[16][8];
  for (int k = 0; k < 32; ++k)
    for (int n = 0; n < 8; ++n) {
      const uint16_t b = bits16(integers ? static_cast<float>(static_cast<int>(rng() % 9) - 4) : normal(rng), bf16);
      B[k][n] = val16(b, bf16);
      // B (32x8, col-major): (k, n) -> lane 4*n + (k%8)/2, register k/8, half k%2.
      set16(f.b[4 * n + (k % 8) / 2][k / 8], k % 2, b);
    }
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) put_c(f, r, n, fbits(C[r][n] = static_cast<float>(static_cast<int>(rng() % 21) - 10)));
  if (sel == 0) LLMPACK_LAUNCH(k_mma_sp<0>, dim3(1), dim3(32), 0, nullptr, &f, bf16 ? 1 : 0);
  else LLMPACK_LAUNCH(k_mma_sp<1>, dim3(1), dim3(32), 0, nullptr, &f, bf16 ? 1 : 0);
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) {
      double ref = C[r][n];
      for (int k = 0; k < 32; ++k) ref += static_cast<double>(s.A[r][k]) * B[k][n];
      const float got = bitsf(get_d(f, r, n));
      if (integers) CHECK_MSG(got == static_cast<float>(ref), "D[%d][%d] = %g, want %g", r, n, got, ref);
      else CHECK_MSG(std::fabs(got - ref) <= 1e-6 * (1 + std::fabs(ref)), "D[%d][%d] = %g, want %g", r, n, got, ref);
    }
}

SIMT_TEST(ptx_mma_sp_m16n8k32_f16f32_selector0) {
  for (unsigned s = 0; s < 6; ++s) run_mma_sp(false, 0, true, s), run_mma_sp(false, 0, false, 50 + s);
}
SIMT_TEST(ptx_mma_sp_m16n8k32_f16f32_selector1) {
  for (unsigned s = 0; s < 6; ++s) run_mma_sp(false, 1, true, s), run_mma_sp(false, 1, false, 50 + s);
}
SIMT_TEST(ptx_mma_sp_m16n8k32_bf16f32_selector0) {
  for (unsigned s = 0; s < 6; ++s) run_mma_sp(true, 0, true, s), run_mma_sp(true, 0, false, 50 + s);
}
SIMT_TEST(ptx_mma_sp_m16n8k32_bf16f32_selector1) {
  for (unsigned s = 0; s < 6; ++s) run_mma_sp(true, 1, true, s), run_mma_sp(true, 1, false, 50 + s);
}

__global__ void k_mma_sp_mixed_selector(Frag* f) {
  const int l = threadIdx.x;
  float d[4], c[4] = {};
  if (l < 16) llmpack::ptx::mma_sp_m16n8k32_f16f32<0>(d, f->a[l], f->b[l], c, f->e[l]);
  else llmpack::ptx::mma_sp_m16n8k32_f16f32<1>(d, f->a[l], f->b[l], c, f->e[l]);
}

SIMT_TEST(ptx_mma_sp_invalid_metadata) {
  std::mt19937 rng(9);
  Frag f{};
  Sparse s;
  build_sparse(f, s, false, true, 0, rng);
  // Row 11 (g = 3, high half), chunk 6: lane 4*3 + 1, bits 16 + 4*2.
  Frag bad = f;
  bad.e[13] = (bad.e[13] & ~(0xFu << 24)) | (0x5u << 24);  // positions (1, 1)
  EXPECT_ERROR(LLMPACK_LAUNCH(k_mma_sp<0>, dim3(1), dim3(32), 0, nullptr, &bad, 0),
               "invalid metadata nibble 0x5 from lane 13, bits 24..27 (row 11, k 24..27)", "ptx_tests.cpp");
  bad = f;
  bad.e[13] = (bad.e[13] & ~(0xFu << 24)) | (0x1u << 24);  // (1, 0): not ordered
  EXPECT_ERROR(LLMPACK_LAUNCH(k_mma_sp<0>, dim3(1), dim3(32), 0, nullptr, &bad, 0), "invalid metadata nibble 0x1");
  // The same nibble in a lane that selector 0 ignores is fine.
  bad = f;
  bad.e[14] = 0x55555555u;
  CHECK(LLMPACK_LAUNCH(k_mma_sp<0>, dim3(1), dim3(32), 0, nullptr, &bad, 0) == 0);
  EXPECT_ERROR(LLMPACK_LAUNCH(k_mma_sp_mixed_selector, dim3(1), dim3(32), 0, nullptr, &f), "lanes disagree",
               "(selector 0)", "(selector 1)");
  EXPECT_ERROR(LLMPACK_LAUNCH(k_mma_sp<0>, dim3(1), dim3(48), 0, nullptr, &f, 0), "warp 1 has only 16 threads",
               "needs all 32 lanes");
}

// ---- binary mma ---------------------------------------------------------------------------------------
__global__ void k_bmma88128(Frag* f) {
  const int l = threadIdx.x;
  int d[2], c[2] = {static_cast<int>(f->c[l][0]), static_cast<int>(f->c[l][1])};
  llmpack::ptx::bmma_m8n8k128_and_popc(d, f->a[l][0], f->b[l][0], c);
  f->d[l][0] = static_cast<uint32_t>(d[0]);
  f->d[l][1] = static_cast<uint32_t>(d[1]);
}

SIMT_TEST(ptx_bmma_m8n8k128_and_popc) {
  std::mt19937 rng(5);
  for (int rep = 0; rep < 4; ++rep) {
    Frag f{};
    bool A[8][128], B[128][8];
    int C[8][8];
    const unsigned density = rep == 3 ? 2 : 1 + rep;  // vary bit density
    for (int r = 0; r < 8; ++r)
      for (int k = 0; k < 128; ++k)
        if ((A[r][k] = rng() % (density + 1) != 0)) f.a[4 * r + k / 32][0] |= 1u << (k % 32);  // lane 4r + k/32, bit k%32
    for (int k = 0; k < 128; ++k)
      for (int n = 0; n < 8; ++n)
        if ((B[k][n] = rng() % 2 != 0)) f.b[4 * n + k / 32][0] |= 1u << (k % 32);  // lane 4n + k/32, bit k%32
    for (int r = 0; r < 8; ++r)
      for (int n = 0; n < 8; ++n) {
        C[r][n] = rep == 3 ? 0x7FFFFFF0 : static_cast<int>(rng() % 1000) - 500;  // rep 3: s32 wraps
        f.c[4 * r + n / 2][n % 2] = static_cast<uint32_t>(C[r][n]);  // lane 4r + n/2, register n%2
      }
    LLMPACK_LAUNCH(k_bmma88128, dim3(1), dim3(32), 0, nullptr, &f);
    for (int r = 0; r < 8; ++r)
      for (int n = 0; n < 8; ++n) {
        uint32_t want = static_cast<uint32_t>(C[r][n]);
        for (int k = 0; k < 128; ++k) want += A[r][k] && B[k][n];
        CHECK_MSG(f.d[4 * r + n / 2][n % 2] == want, "D[%d][%d]", r, n);
      }
  }
}

__global__ void k_bmma168256(Frag* f) {
  const int l = threadIdx.x;
  int d[4], c[4];
  for (int i = 0; i < 4; ++i) c[i] = static_cast<int>(f->c[l][i]);
  llmpack::ptx::bmma_m16n8k256_and_popc(d, f->a[l], f->b[l], c);
  for (int i = 0; i < 4; ++i) f->d[l][i] = static_cast<uint32_t>(d[i]);
}

SIMT_TEST(ptx_bmma_m16n8k256_and_popc) {
  std::mt19937 rng(6);
  for (int rep = 0; rep < 3; ++rep) {
    Frag f{};
    static bool A[16][256], B[256][8];
    int C[16][8];
    for (int r = 0; r < 16; ++r)
      for (int k = 0; k < 256; ++k)
        // A (16x256): lane 4*(r%8) + (k%128)/32, register (r>=8) + 2*(k>=128), bit k%32.
        if ((A[r][k] = rng() % 3 == 0)) f.a[4 * (r % 8) + (k % 128) / 32][(r >= 8) + 2 * (k >= 128)] |= 1u << (k % 32);
    for (int k = 0; k < 256; ++k)
      for (int n = 0; n < 8; ++n)
        // B (256x8): lane 4n + (k%128)/32, register k>=128, bit k%32.
        if ((B[k][n] = rng() % 2 == 0)) f.b[4 * n + (k % 128) / 32][k >= 128] |= 1u << (k % 32);
    for (int r = 0; r < 16; ++r)
      for (int n = 0; n < 8; ++n) put_c(f, r, n, static_cast<uint32_t>(C[r][n] = static_cast<int>(rng() % 100) - 50));
    LLMPACK_LAUNCH(k_bmma168256, dim3(1), dim3(32), 0, nullptr, &f);
    for (int r = 0; r < 16; ++r)
      for (int n = 0; n < 8; ++n) {
        int want = C[r][n];
        for (int k = 0; k < 256; ++k) want += A[r][k] && B[k][n];
        CHECK_MSG(static_cast<int>(get_d(f, r, n)) == want, "D[%d][%d]", r, n);
      }
  }
}

// ---- ldmatrix ---------------------------------------------------------------------------------------------
constexpr int kStride = 24;  // halfs per shared row: 48 bytes, 16-byte aligned, not contiguous

// Element (matrix m, row r, col c) = 0x1000*m + 0x100*r + c.
uint16_t mat(int m, int r, int c) { return static_cast<uint16_t>(0x1000 * m + 0x100 * r + c); }

template <int Num, bool Trans>
__global__ void k_ldmatrix(uint32_t* out, int null_unused, int misalign) {
  __shared__ __align__(16) uint16_t s[4 * 8 * kStride];
  for (int i = threadIdx.x; i < 4 * 8 * kStride; i += 32) s[i] = mat(i / (8 * kStride), (i / kStride) % 8, i % kStride);
  __syncwarp();
  const int lane = threadIdx.x, m = lane / 8, r = lane % 8;
  const void* p = (null_unused && lane >= 8 * Num) ? nullptr : &s[(m * 8 + r) * kStride + misalign];
  uint32_t regs[4] = {};
  if (Num == 1) Trans ? llmpack::ptx::ldmatrix_x1_trans(regs, p) : llmpack::ptx::ldmatrix_x1(regs, p);
  if (Num == 2) Trans ? llmpack::ptx::ldmatrix_x2_trans(regs, p) : llmpack::ptx::ldmatrix_x2(regs, p);
  if (Num == 4) Trans ? llmpack::ptx::ldmatrix_x4_trans(regs, p) : llmpack::ptx::ldmatrix_x4(regs, p);
  for (int i = 0; i < 4; ++i) out[4 * lane + i] = regs[i];
}

template <int Num, bool Trans>
void run_ldmatrix() {
  for (int null_unused = 0; null_unused < 2; ++null_unused) {
    std::vector<uint32_t> out(128, 0xDEADBEEF);
    LLMPACK_LAUNCH((k_ldmatrix<Num, Trans>), dim3(1), dim3(32), 0, nullptr, out.data(), null_unused, 0);
    for (int lane = 0; lane < 32; ++lane)
      for (int m = 0; m < Num; ++m) {
        // PTX ISA figure "ldmatrix fragment layout": lane holds row lane/4, cols 2*(lane%4) + {0,1};
        // with .trans the matrix is read column-major, i.e. that fragment of the transpose.
        const int row = lane / 4, col = 2 * (lane % 4);
        const uint32_t want = Trans ? (mat(m, col, row) | static_cast<uint32_t>(mat(m, col + 1, row)) << 16)
                                    : (mat(m, row, col) | static_cast<uint32_t>(mat(m, row, col + 1)) << 16);
        CHECK_MSG(out[4 * lane + m] == want, "x%d%s lane %d reg %d: 0x%08x != 0x%08x", Num, Trans ? ".trans" : "",
                  lane, m, out[4 * lane + m], want);
      }
  }
}

SIMT_TEST(ptx_ldmatrix_x1) { run_ldmatrix<1, false>(); }
SIMT_TEST(ptx_ldmatrix_x2) { run_ldmatrix<2, false>(); }
SIMT_TEST(ptx_ldmatrix_x4) { run_ldmatrix<4, false>(); }
SIMT_TEST(ptx_ldmatrix_x1_trans) { run_ldmatrix<1, true>(); }
SIMT_TEST(ptx_ldmatrix_x2_trans) { run_ldmatrix<2, true>(); }
SIMT_TEST(ptx_ldmatrix_x4_trans) { run_ldmatrix<4, true>(); }

__global__ void k_ldmatrix_dyn(uint32_t* out, int row_bytes) {
  unsigned char* s = llmpack::cuda::dynamic_smem<unsigned char>();
  uint32_t regs[4];
  llmpack::ptx::ldmatrix_x4(regs, s + threadIdx.x * row_bytes);
  out[threadIdx.x] = regs[0];
}

SIMT_TEST(ptx_ldmatrix_errors) {
  std::vector<uint32_t> out(128);
  EXPECT_ERROR(LLMPACK_LAUNCH((k_ldmatrix<4, false>), dim3(1), dim3(32), 0, nullptr, out.data(), 0, 1),
               "ldmatrix.sync.aligned.m8n8.x4.shared.b16", "not 16-byte aligned");
  EXPECT_ERROR(LLMPACK_LAUNCH(k_ldmatrix_dyn, dim3(1), dim3(40), 1024, nullptr, out.data(), 16),
               "ldmatrix.sync.aligned.m8n8.x4.shared.b16: warp 1 has only 8 threads", "needs all 32 lanes");
  // 32 rows of 16 bytes = 512 bytes; the launch gives 500.
  EXPECT_ERROR(LLMPACK_LAUNCH(k_ldmatrix_dyn, dim3(1), dim3(32), 500, nullptr, out.data(), 16),
               "lane 31 reads bytes 496..511 of dynamic shared memory", "past the 500 bytes");
  CHECK(LLMPACK_LAUNCH(k_ldmatrix_dyn, dim3(1), dim3(32), 512, nullptr, out.data(), 16) == 0);
}

// ldmatrix feeding mma the way GEMM kernels do: A row-major via .x4, B (K x N
// row-major) via .x2.trans.
__global__ void k_ldmatrix_mma(const __half* a, const __half* b, float* c) {
  __shared__ __align__(16) __half As[16][kStride];
  __shared__ __align__(16) __half Bs[16][8];
  const int lane = threadIdx.x;
  for (int i = lane; i < 256; i += 32) As[i / 16][i % 16] = a[i];
  for (int i = lane; i < 128; i += 32) Bs[i / 8][i % 8] = b[i];
  __syncwarp();
  uint32_t ra[4], rb[2];
  llmpack::ptx::ldmatrix_x4(ra, &As[lane % 16][(lane / 16) * 8]);
  llmpack::ptx::ldmatrix_x2_trans(rb, &Bs[lane % 16][0]);
  float d[4], z[4] = {0, 0, 0, 0};
  llmpack::ptx::mma_m16n8k16_f16f32(d, ra, rb, z);
  for (int i = 0; i < 4; ++i) c[(lane / 4 + 8 * (i / 2)) * 8 + 2 * (lane % 4) + i % 2] = d[i];
}

SIMT_TEST(ptx_ldmatrix_feeds_mma) {
  std::mt19937 rng(11);
  std::vector<__half> a(256), b(128);
  std::vector<float> c(128);
  for (auto& x : a) x = __float2half(static_cast<float>(static_cast<int>(rng() % 9) - 4));
  for (auto& x : b) x = __float2half(static_cast<float>(static_cast<int>(rng() % 9) - 4));
  LLMPACK_LAUNCH(k_ldmatrix_mma, dim3(1), dim3(32), 0, nullptr, a.data(), b.data(), c.data());
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) {
      float ref = 0;
      for (int k = 0; k < 16; ++k) ref += __half2float(a[r * 16 + k]) * __half2float(b[k * 8 + n]);
      CHECK_MSG(c[r * 8 + n] == ref, "C[%d][%d] = %g, want %g", r, n, c[r * 8 + n], ref);
    }
}

// ---- cp.async -------------------------------------------------------------------------------------------
__global__ void k_cp_async(const float* g, float* out) {
  __shared__ __align__(16) float s[64];
  const int t = threadIdx.x;  // 8 threads, each copies 2 x 16 bytes in two groups
  for (int i = 0; i < 4; ++i) s[4 * t + i] = s[32 + 4 * t + i] = -1.0f;  // its own destinations
  llmpack::ptx::cp_async_16(&s[4 * t], &g[4 * t]);  // group 1
  llmpack::ptx::cp_async_commit();
  llmpack::ptx::cp_async_16(&s[32 + 4 * t], &g[32 + 4 * t]);  // group 2
  llmpack::ptx::cp_async_commit();
  out[0 * 8 + t] = s[4 * t];  // not waited for: still the old value in the emulator
  llmpack::ptx::cp_async_wait<1>();  // group 1 done, group 2 may be pending
  out[1 * 8 + t] = s[4 * t + 3];
  out[2 * 8 + t] = s[32 + 4 * t];
  llmpack::ptx::cp_async_wait_all();
  out[3 * 8 + t] = s[32 + 4 * t + 2];
}

__global__ void k_cp_async_misaligned(const float* g) {
  __shared__ __align__(16) float s[64];
  llmpack::ptx::cp_async_16(&s[1], g);
  llmpack::ptx::cp_async_wait_all();
}

__global__ void k_cp_async_dyn(const float* g) {
  float* s = llmpack::cuda::dynamic_smem<float>();
  llmpack::ptx::cp_async_16(&s[4 * threadIdx.x], &g[4 * threadIdx.x]);
  llmpack::ptx::cp_async_wait_all();
}

SIMT_TEST(ptx_cp_async) {
  std::vector<float> g(64), out(32);
  for (int i = 0; i < 64; ++i) g[i] = 100.0f + i;
  LLMPACK_LAUNCH(k_cp_async, dim3(1), dim3(8), 0, nullptr, g.data(), out.data());
  for (int t = 0; t < 8; ++t) {
    CHECK(out[t] == -1.0f);
    CHECK(out[8 + t] == g[4 * t + 3]);
    CHECK(out[16 + t] == -1.0f);
    CHECK(out[24 + t] == g[32 + 4 * t + 2]);
  }
  EXPECT_ERROR(LLMPACK_LAUNCH(k_cp_async_misaligned, dim3(1), dim3(1), 0, nullptr, g.data()),
               "cp.async: shared-memory destination", "is not 16-byte aligned");
  EXPECT_ERROR(LLMPACK_LAUNCH(k_cp_async_dyn, dim3(1), dim3(8), 120, nullptr, g.data()),
               "writes bytes 112..127 of dynamic shared memory, past the 120 bytes");
  CHECK(LLMPACK_LAUNCH(k_cp_async_dyn, dim3(1), dim3(8), 128, nullptr, g.data()) == 0);
}

}  // namespace
