// Instantiates every wrapper of common/cuda/ptx.cuh (and the dynamic shared
// memory helpers of runtime.cuh) in one kernel, so nvcc must accept each inline
// PTX instruction for the target. tests/test_emulator_ptx.py compiles this for
// sm_80 and sm_90 (when nvcc is on PATH) and checks the PTX contains each
// instruction. Never linked into anything.
#include "common/cuda/ptx.cuh"

namespace {

__global__ void every_ptx_wrapper(const uint32_t* in, const float4* gsrc, float* fout, int* iout, uint32_t* uout) {
  __shared__ __align__(16) uint16_t tile[4 * 8 * 8];
  __shared__ __align__(16) float4 staged[32];
  const int lane = threadIdx.x;
  for (int i = lane; i < 4 * 8 * 8; i += 32) tile[i] = static_cast<uint16_t>(in[i % 64]);
  __syncwarp();

  uint32_t a[4], b[4];
  float c[4], d[4];
  for (int i = 0; i < 4; ++i) a[i] = in[i], b[i] = in[4 + i], c[i] = static_cast<float>(in[8 + i]);
  const uint32_t e = in[12];

  llmpack::ptx::mma_m16n8k16_f16f32(d, a, b, c);
  llmpack::ptx::mma_m16n8k16_bf16f32(d, a, b, d);
  llmpack::ptx::mma_sp_m16n8k32_f16f32<0>(d, a, b, d, e);
  llmpack::ptx::mma_sp_m16n8k32_f16f32<1>(d, a, b, d, e);
  llmpack::ptx::mma_sp_m16n8k32_bf16f32<0>(d, a, b, d, e);
  llmpack::ptx::mma_sp_m16n8k32_bf16f32<1>(d, a, b, d, e);
  for (int i = 0; i < 4; ++i) fout[4 * lane + i] = d[i];

  int ic[4] = {1, 2, 3, 4}, id[4];
  llmpack::ptx::bmma_m8n8k128_and_popc(id, a[0], b[0], ic);
  llmpack::ptx::bmma_m16n8k256_and_popc(id, a, b, id);
  for (int i = 0; i < 4; ++i) iout[4 * lane + i] = id[i];

  uint32_t r[4];
  const void* row = &tile[(lane % 32) * 8];
  llmpack::ptx::ldmatrix_x1(r, row);
  llmpack::ptx::ldmatrix_x2(r, row);
  llmpack::ptx::ldmatrix_x4(r, row);
  llmpack::ptx::ldmatrix_x1_trans(r, row);
  llmpack::ptx::ldmatrix_x2_trans(r, row);
  llmpack::ptx::ldmatrix_x4_trans(r, row);

  llmpack::ptx::cp_async_16(&staged[lane], &gsrc[lane]);
  llmpack::ptx::cp_async_commit();
  llmpack::ptx::cp_async_wait<1>();
  llmpack::ptx::cp_async_wait<0>();
  llmpack::ptx::cp_async_wait_all();

  float* dyn = llmpack::cuda::dynamic_smem<float>();
  float* dyn2 = llmpack::cuda::dynamic_smem<float>(32);
  dyn[lane] = staged[lane].x;
  uout[lane] = r[0] + r[3] + llmpack::ptx::lane_id() + llmpack::ptx::dynamic_smem_size() + static_cast<uint32_t>(dyn2[lane]);
}

}  // namespace

// Host-side reference so the kernel is emitted.
void llmpack_ptx_compile_check_launch(const uint32_t* in, const float4* g, float* f, int* i, uint32_t* u) {
  every_ptx_wrapper<<<1, 32, 128>>>(in, g, f, i, u);
}
