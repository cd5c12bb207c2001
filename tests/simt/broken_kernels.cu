// Deliberately broken kernels, each next to its fixed version, to show that
// the emulator catches the bug class. Compiled as C++ in the emulator build
// (never with nvcc). Usage: simt_broken_kernels DEMO; tests/test_emulator_broken.py
// runs each and checks the outcome:
//   exit 0  the bug was caught (emulator error or result mismatch) and the
//           fixed kernel passed
//   exit 3  the bug went unnoticed
//   crash   expected for out-of-bounds accesses: an AddressSanitizer report
//           (ASan build) or the emulator's guard-page message (plain build)
#include <sys/resource.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/cuda/launch.cuh"
#include "common/cuda/ptx.cuh"

extern "C" int llmpack_simt_set_schedule(const char* spec);

namespace {

// ---- missing barrier: neighbours read shared memory before it is written ---------------------
__global__ void k_neighbours(const float* in, float* out, int with_barrier) {
  __shared__ float s[256];
  const int t = threadIdx.x;
  s[t] = in[blockIdx.x * 256 + t];
  if (with_barrier) __syncthreads();  // the bug: without it, neighbours may not have written yet
  out[blockIdx.x * 256 + t] = s[(t + 1) % 256] - s[(t + 255) % 256];
}

int missing_barrier() {
  const int blocks = 3;
  std::vector<float> in(blocks * 256), out(blocks * 256), ref(blocks * 256);
  for (int i = 0; i < blocks * 256; ++i) in[i] = static_cast<float>(i * i % 1009);
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < 256; ++t) ref[b * 256 + t] = in[b * 256 + (t + 1) % 256] - in[b * 256 + (t + 255) % 256];
  bool caught_everywhere = true, fixed_ok = true;
  for (const char* sched : {"forward", "reverse", "random:1"}) {
    llmpack_simt_set_schedule(sched);
    for (int with_barrier = 0; with_barrier < 2; ++with_barrier) {
      LLMPACK_LAUNCH(k_neighbours, dim3(blocks), dim3(256), 0, nullptr, in.data(), out.data(), with_barrier);
      int bad = 0;
      for (int i = 0; i < blocks * 256; ++i) bad += out[i] != ref[i];
      std::printf("missing_barrier: %s kernel, schedule %s: %d of %d outputs wrong\n",
                  with_barrier ? "fixed" : "broken", sched, bad, blocks * 256);
      if (with_barrier) fixed_ok &= bad == 0;
      else caught_everywhere &= bad > 0;
    }
  }
  llmpack_simt_set_schedule("forward");
  return caught_everywhere && fixed_ok ? 0 : 3;
}

// ---- wrong fragment index: A's registers 1 and 2 swapped ------------------------------------------
inline uint32_t pack(__half lo, __half hi) {
  return static_cast<uint32_t>(__half_as_ushort(lo)) | (static_cast<uint32_t>(__half_as_ushort(hi)) << 16);
}

__global__ void k_mma_tile(const __half* A, const __half* B, float* C, int bug) {
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  uint32_t a[4], b[2];
  a[0] = pack(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]);
  a[1] = pack(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]);
  a[2] = pack(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]);
  a[3] = pack(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9]);
  if (bug) {  // the bug: rows g+8 and columns +8 confused
    const uint32_t x = a[1];
    a[1] = a[2];
    a[2] = x;
  }
  b[0] = pack(B[(2 * t) * 8 + g], B[(2 * t + 1) * 8 + g]);
  b[1] = pack(B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g]);
  float d[4], z[4] = {0, 0, 0, 0};
  llmpack::ptx::mma_m16n8k16_f16f32(d, a, b, z);
  for (int i = 0; i < 4; ++i) C[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = d[i];
}

int wrong_fragment() {
  std::vector<__half> A(256), B(128);
  std::vector<float> C(128), ref(128, 0.0f);
  for (int i = 0; i < 256; ++i) A[i] = __float2half(static_cast<float>((i * 7) % 11 - 5));
  for (int i = 0; i < 128; ++i) B[i] = __float2half(static_cast<float>((i * 5) % 9 - 4));
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n)
      for (int k = 0; k < 16; ++k) ref[r * 8 + n] += __half2float(A[r * 16 + k]) * __half2float(B[k * 8 + n]);
  int bad[2];
  for (int bug = 1; bug >= 0; --bug) {
    LLMPACK_LAUNCH(k_mma_tile, dim3(1), dim3(32), 0, nullptr, A.data(), B.data(), C.data(), bug);
    bad[bug] = 0;
    for (int i = 0; i < 128; ++i) bad[bug] += C[i] != ref[i];
    std::printf("wrong_fragment: %s kernel: %d of 128 outputs differ from the reference GEMM\n",
                bug ? "broken" : "fixed", bad[bug]);
  }
  return bad[1] > 0 && bad[0] == 0 ? 0 : 3;
}

// ---- off-by-one store into dynamic shared memory -----------------------------------------------
__global__ void k_shift_dyn(const float* in, float* out) {
  float* s = llmpack::cuda::dynamic_smem<float>();
  const int t = threadIdx.x;
  s[t + 1] = in[t];  // the bug: should be s[t]; thread 255 writes one float past the end
  __syncthreads();
  out[t] = s[t + 1];
}

// The same bug in a kernel that states how much dynamic smem it uses.
__global__ void k_shift_dyn_declared(const float* in, float* out) {
  float* s = llmpack::cuda::dynamic_smem<float>(blockDim.x + 1);
  const int t = threadIdx.x;
  s[t + 1] = in[t];
  __syncthreads();
  out[t] = s[t + 1];
}

int smem_off_by_one() {
  std::vector<float> in(256, 1.0f), out(256);
  std::printf("smem_off_by_one: launching with 1024 bytes of dynamic shared memory...\n");
  std::fflush(stdout);
  LLMPACK_LAUNCH(k_shift_dyn, dim3(1), dim3(256), 256 * sizeof(float), nullptr, in.data(), out.data());
  std::printf("smem_off_by_one: not detected\n");
  return 3;
}

int smem_declared_too_small() {
  std::vector<float> in(256, 1.0f), out(256);
  try {
    LLMPACK_LAUNCH(k_shift_dyn_declared, dim3(1), dim3(256), 256 * sizeof(float), nullptr, in.data(), out.data());
  } catch (const std::runtime_error& e) {
    std::printf("smem_declared_too_small: caught: %s\n", e.what());
    LLMPACK_LAUNCH(k_shift_dyn_declared, dim3(1), dim3(256), 257 * sizeof(float), nullptr, in.data(), out.data());
    std::printf("smem_declared_too_small: with 1028 bytes the kernel runs\n");
    return 0;
  }
  return 3;
}

// ---- off-by-one store into a static __shared__ array --------------------------------------------
__global__ void k_shift_static(const float* in, float* out) {
  __shared__ float s[128];
  const int t = threadIdx.x;
  s[t + 1] = in[t];  // the bug: thread 127 writes s[128]
  __syncthreads();
  out[t] = s[t];
}

int static_smem_off_by_one() {
  std::vector<float> in(128, 1.0f), out(128);
  LLMPACK_LAUNCH(k_shift_static, dim3(1), dim3(128), 0, nullptr, in.data(), out.data());
  std::printf("static_smem_off_by_one: not detected (needs the ASan build)\n");
  return 3;
}

// ---- off-by-one store into global memory ----------------------------------------------------------
__global__ void k_fill(float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[i] = static_cast<float>(i);  // the bug: should be i < n
}

int global_off_by_one() {
  const int n = 100;
  float* out = new float[n];
  LLMPACK_LAUNCH(k_fill, dim3(1), dim3(128), 0, nullptr, out, n);
  delete[] out;
  std::printf("global_off_by_one: not detected (needs the ASan build)\n");
  return 3;
}

// ---- threads exit before a barrier --------------------------------------------------------------------
__global__ void k_early_exit(const float* in, float* out, int n) {
  __shared__ float s[256];
  const int t = threadIdx.x;
  if (t >= n) return;  // the bug: these threads never reach the barrier below
  s[t] = in[t];
  __syncthreads();
  out[t] = s[n - 1 - t];
}

int exited_before_barrier() {
  std::vector<float> in(256, 2.0f), out(256);
  try {
    LLMPACK_LAUNCH(k_early_exit, dim3(1), dim3(256), 0, nullptr, in.data(), out.data(), 200);
  } catch (const std::runtime_error& e) {
    std::printf("exited_before_barrier: caught: %s\n", e.what());
    return 0;
  }
  return 3;
}

// ---- shuffle with a mask that leaves out the caller ----------------------------------------------------
__global__ void k_warp_sum(const int* in, int* out) {
  int v = in[threadIdx.x];
  const unsigned mask = 0xFFFFFFFFu << 1;  // the bug: meant ~0u, lane 0 is left out
  for (int d = 16; d > 0; d /= 2) v += __shfl_xor_sync(mask, v, d);
  out[threadIdx.x] = v;
}

int shfl_bad_mask() {
  std::vector<int> in(32, 1), out(32);
  try {
    LLMPACK_LAUNCH(k_warp_sum, dim3(1), dim3(32), 0, nullptr, in.data(), out.data());
  } catch (const std::runtime_error& e) {
    std::printf("shfl_bad_mask: caught: %s\n", e.what());
    return 0;
  }
  return 3;
}

// ---- spin-wait on a flag another block sets ----------------------------------------------------------
__global__ void k_wait_for_block1(volatile int* flag, int* out) {
  if (blockIdx.x == 1) {
    if (threadIdx.x == 0) *flag = 1;
    return;
  }
  // the bug: block 0 waits for block 1, which is not guaranteed to run
  // concurrently on a GPU (and never does in the emulator)
  while (*flag == 0) {
  }
  out[threadIdx.x] = 1;
}

int spin_on_other_block() {
  int flag = 0;
  std::vector<int> out(32);
  LLMPACK_LAUNCH(k_wait_for_block1, dim3(2), dim3(32), 0, nullptr, &flag, out.data());
  std::printf("spin_on_other_block: not detected\n");
  return 3;
}

struct Demo {
  const char* name;
  int (*fn)();
};
const Demo kDemos[] = {
    {"missing_barrier", &missing_barrier},
    {"wrong_fragment", &wrong_fragment},
    {"smem_off_by_one", &smem_off_by_one},
    {"smem_declared_too_small", &smem_declared_too_small},
    {"static_smem_off_by_one", &static_smem_off_by_one},
    {"global_off_by_one", &global_off_by_one},
    {"exited_before_barrier", &exited_before_barrier},
    {"shfl_bad_mask", &shfl_bad_mask},
    {"spin_on_other_block", &spin_on_other_block},
};

}  // namespace

int main(int argc, char** argv) {
  const struct rlimit no_core = {0, 0};  // the crashing demos should not leave core files
  setrlimit(RLIMIT_CORE, &no_core);
  if (argc != 2 || !std::strcmp(argv[1], "--list")) {
    for (const Demo& d : kDemos) std::printf("%s\n", d.name);
    return argc == 2 ? 0 : 2;
  }
  for (const Demo& d : kDemos)
    if (!std::strcmp(d.name, argv[1])) return d.fn();
  std::fprintf(stderr, "unknown demo %s\n", argv[1]);
  return 2;
}
