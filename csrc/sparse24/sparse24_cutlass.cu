// 2:4 sparse linear through CUTLASS's sm80 structured-sparse GEMM; design,
// layouts and limits in sparse24_cutlass.h. The GEMM is compiled only with
// the CUTLASS headers (LLMPACK_WITH_CUTLASS) and never in the SIMT-emulator
// build (it is tensor-core code); otherwise the entry points report "not
// built" and callers fall back.
//
// We take the kernel type from kernel::DefaultSparseGemm and launch
// cutlass::Kernel<> ourselves through LLMPACK_LAUNCH (device::SparseGemm
// would launch with <<<>>>), building the same Params it would.
#include "sparse24/sparse24_cutlass.h"

#include <type_traits>

#include "common/cuda/launch.cuh"

// The transpose (+ bias) kernel that follows the GEMM is plain CUDA: it is
// compiled in every CUDA build, the emulator's included, so it can be tested
// on the CPU.
namespace llmpack::sparse24 {
namespace {

// y[m, n] = D[n, m] (+ bias[n]); D row-major with leading dimension ldd.
// 32 x 32 tiles through shared memory: coalesced reads along m, writes along n.
namespace Transpose {
enum : int { kTile = 32, kRows = 8 };  // 32 x 32 tile, 32 x 8 threads
}

template <class T>
__device__ __forceinline__ float to_float(T v) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else return __bfloat162float(v);
}
template <class T>
__device__ __forceinline__ T from_float(float v) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(v);
  else return __float2bfloat16_rn(v);
}

template <class T>
__global__ void transpose_bias_kernel(const T* d, long long ldd, const T* bias, T* y, long long m, long long n) {
  __shared__ T tile[Transpose::kTile][Transpose::kTile + 1];
  const long long m0 = (long long)blockIdx.x * Transpose::kTile, n0 = (long long)blockIdx.y * Transpose::kTile;
  for (int i = threadIdx.y; i < Transpose::kTile; i += Transpose::kRows) {
    const long long r = n0 + i, c = m0 + threadIdx.x;
    if (r < n && c < m) tile[i][threadIdx.x] = d[r * ldd + c];
  }
  __syncthreads();
  const long long col = n0 + threadIdx.x;
  if (col >= n) return;
  const float b = bias ? to_float(bias[col]) : 0.f;
  for (int i = threadIdx.y; i < Transpose::kTile; i += Transpose::kRows) {
    const long long row = m0 + i;
    if (row < m) {
      const T v = tile[threadIdx.x][i];
      y[row * n + col] = bias ? from_float<T>(to_float(v) + b) : v;
    }
  }
}

template <class T>
int launch_transpose(const LinearParams& p, const void* d, int64_t ldd, void* stream) {
  const dim3 grid(cuda::ceil_div(p.m, Transpose::kTile), cuda::ceil_div(p.n, Transpose::kTile));
  return LLMPACK_LAUNCH(transpose_bias_kernel<T>, grid, dim3(Transpose::kTile, Transpose::kRows), 0, stream,
                        static_cast<const T*>(d), static_cast<long long>(ldd), static_cast<const T*>(p.bias),
                        static_cast<T*>(p.y), static_cast<long long>(p.m), static_cast<long long>(p.n));
}

}  // namespace

int launch_transpose_bias_cuda(const LinearParams& p, const void* d, int64_t ldd, void* stream) {
  return p.dtype == DType::bf16 ? launch_transpose<__nv_bfloat16>(p, d, ldd, stream)
                                : launch_transpose<__half>(p, d, ldd, stream);
}

}  // namespace llmpack::sparse24

#if defined(LLMPACK_WITH_CUTLASS) && !defined(LLMPACK_SIMT_EMULATION)

#include <climits>

#include "cutlass/cutlass.h"
#include "cutlass/device_kernel.h"
#include "cutlass/epilogue/thread/linear_combination.h"
#include "cutlass/gemm/kernel/default_gemm_sparse.h"
#include "cutlass/gemm/threadblock/threadblock_swizzle.h"

namespace llmpack::sparse24 {
namespace {

// One GEMM: D[N, M] (row-major, output dtype) = W[N, K] (2:4, row-major) .
// x^T[K, M] (column-major), fp32 accumulation, D = accumulator rounded once.
template <class Element, int kTileN>
struct SparseGemmConfig {
  using Epilogue = cutlass::epilogue::thread::LinearCombination<
      Element, 128 / cutlass::sizeof_bits<Element>::value, float, float,
      cutlass::epilogue::thread::ScaleType::Nothing>;
  using Kernel = typename cutlass::gemm::kernel::DefaultSparseGemm<
      Element, cutlass::layout::RowMajor, 8,     // A = values, 128-bit accesses
      Element, cutlass::layout::ColumnMajor, 8,  // B = x^T
      Element, cutlass::layout::RowMajor,        // D
      float, cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
      cutlass::gemm::GemmShape<128, kTileN, 64>, cutlass::gemm::GemmShape<64, kTileN / 2, 64>,
      cutlass::gemm::GemmShape<16, 8, 32>, Epilogue,
      cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<8>, 3,
      /*SplitKSerial=*/false, cutlass::arch::OpMultiplyAdd>::GemmKernel;
  static_assert(Kernel::Mma::Shape::kK == kCutlassKTile, "K tile");
  static_assert(sizeof(typename Kernel::ElementE) == 2, "16-bit metadata elements (sparse24_reorder.h)");
  static_assert(Kernel::kElementsPerElementE == 8, "one metadata word = 8 kept values = 16 columns of K");
  static_assert(std::is_same_v<typename Kernel::LayoutE, cutlass::layout::ColumnMajorInterleaved<2>>,
                "metadata layout assumed by sparse24_reorder.h");
  static_assert(std::is_same_v<typename Kernel::Mma::IteratorA::Layout, cutlass::layout::RowMajor> &&
                    std::is_same_v<typename Kernel::Mma::IteratorB::Layout, cutlass::layout::ColumnMajor> &&
                    std::is_same_v<typename Kernel::Mma::IteratorE::Layout, typename Kernel::LayoutE>,
                "operand layouts as described in sparse24_cutlass.h");
};

constexpr int64_t kLddAlign = 8;  // D's leading dimension: one 128-bit epilogue store

int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <class Element, int kTileN>
int run_gemm(const LinearParams& p, const uint8_t* meta_cutlass, void* d, int64_t ldd, void* stream) {
  using Kernel = typename SparseGemmConfig<Element, kTileN>::Kernel;
  using Swizzle = typename Kernel::ThreadblockSwizzle;
  using Mma = typename Kernel::Mma;
  using ElementE = typename Kernel::ElementE;

  const cutlass::gemm::GemmCoord problem(static_cast<int>(p.n), static_cast<int>(p.m), static_cast<int>(p.k));
  const cutlass::gemm::GemmCoord tiled =
      Swizzle().get_tiled_shape(problem, {Mma::Shape::kM, Mma::Shape::kN, Mma::Shape::kK}, /*split_k=*/1);

  typename Mma::IteratorA::TensorRef ref_a(static_cast<Element*>(const_cast<void*>(p.values)),
                                           typename Mma::IteratorA::Layout(p.k / 2));
  typename Mma::IteratorB::TensorRef ref_b(static_cast<Element*>(const_cast<void*>(p.x)),
                                           typename Mma::IteratorB::Layout(p.k));
  typename Mma::IteratorE::TensorRef ref_e(
      reinterpret_cast<ElementE*>(const_cast<uint8_t*>(meta_cutlass)),
      Kernel::LayoutE::packed({static_cast<int>(p.n), static_cast<int>(p.k / 2 / Kernel::kElementsPerElementE)}));
  typename Kernel::Epilogue::OutputTileIterator::TensorRef ref_d(static_cast<Element*>(d),
                                                                  cutlass::layout::RowMajor(ldd));

  // C is never read (ScaleType::Nothing); pass D for it as device::SparseGemm would any C.
  const typename Kernel::Params params(problem, tiled, ref_a, ref_b, ref_d, ref_d, ref_e,
                                       typename Kernel::OutputOp::Params(), /*workspace=*/nullptr);
  const dim3 grid = Swizzle().get_grid_shape(tiled);
  const size_t smem = sizeof(typename Kernel::SharedStorage);
  return LLMPACK_LAUNCH(cutlass::Kernel<Kernel>, grid, dim3(Kernel::kThreadCount), smem, stream, params);
}

template <class Element, class T>
int run_linear(const LinearParams& p, const uint8_t* meta_cutlass, void* ws, void* stream) {
  const int64_t ldd = round_up(p.m, kLddAlign);
  const int err = p.m <= 64 ? run_gemm<Element, 64>(p, meta_cutlass, ws, ldd, stream)
                            : run_gemm<Element, 128>(p, meta_cutlass, ws, ldd, stream);
  if (err != 0) return err;
  return launch_transpose<T>(p, ws, ldd, stream);
}

}  // namespace

bool cutlass_linear_supported(int64_t m, int64_t n, int64_t k, DType dtype) {
  if (dtype != DType::f16 && dtype != DType::bf16) return false;
  if (m < 1 || n < kCutlassNAlign || k < kCutlassKTile) return false;
  if (n % kCutlassNAlign != 0 || k % kCutlassKTile != 0) return false;
  // CUTLASS's problem sizes are int; ldd * n indexes D in 64 bits. The
  // transpose grid puts n / 32 in gridDim.y (<= 65535).
  if (round_up(m, kLddAlign) > INT_MAX || n > INT_MAX || k > INT_MAX) return false;
  if ((n + Transpose::kTile - 1) / Transpose::kTile > 65535) return false;
  return true;
}

size_t cutlass_workspace_bytes(int64_t m, int64_t n, int64_t k, DType dtype) {
  if (!cutlass_linear_supported(m, n, k, dtype)) return 0;
  return static_cast<size_t>(round_up(n * round_up(m, kLddAlign) * 2, 256));
}

int launch_linear_cutlass(const LinearParams& p, const uint8_t* meta_cutlass, void* workspace,
                          size_t workspace_bytes, void* stream) {
  if (!cutlass_linear_supported(p.m, p.n, p.k, p.dtype)) return kCutlassUnsupported;
  if (!aligned16(p.x) || !aligned16(p.values) || !aligned16(meta_cutlass) || !aligned16(workspace))
    return kCutlassUnsupported;
  if (workspace_bytes < cutlass_workspace_bytes(p.m, p.n, p.k, p.dtype)) return kCutlassWorkspaceTooSmall;
  return p.dtype == DType::f16 ? run_linear<cutlass::half_t, __half>(p, meta_cutlass, workspace, stream)
                               : run_linear<cutlass::bfloat16_t, __nv_bfloat16>(p, meta_cutlass, workspace, stream);
}

}  // namespace llmpack::sparse24

#else  // no CUTLASS (or the SIMT emulator): report "not built", callers fall back.

namespace llmpack::sparse24 {

bool cutlass_linear_supported(int64_t, int64_t, int64_t, DType) { return false; }
size_t cutlass_workspace_bytes(int64_t, int64_t, int64_t, DType) { return 0; }
int launch_linear_cutlass(const LinearParams&, const uint8_t*, void*, size_t, void*) { return kCutlassNotBuilt; }

}  // namespace llmpack::sparse24

#endif
