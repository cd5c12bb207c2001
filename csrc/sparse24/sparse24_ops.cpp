// torch glue for the 2:4 family: argument checks (written once, shared by the
// CPU and CUDA paths), output allocation, and CPU / CUDA registration.
#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "common/isa.h"
#include "common/registration.h"
#include "common/torch_utils.h"
#include "sparse24/sparse24.h"
#include "sparse24/sparse24_cutlass.h"
#include "sparse24/sparse24_reorder.h"


namespace llmpack::sparse24 {
namespace {

const CpuKernels& cpu() {
  return pick_isa(&kCpuGeneric, LLMPACK_IF_AVX2(kCpuAvx2), LLMPACK_IF_AVX512(kCpuAvx512),
                  LLMPACK_IF_AVX512(kCpuAvx512Bf16), LLMPACK_IF_AMX(kCpuAmx));
}

constexpr auto kFloatTypes = {ScalarType::Float, ScalarType::Half, ScalarType::BFloat16};

void check_compress_args(const Tensor& w) {
  constexpr const char* op = "sparse24_compress";
  check_cpu_or_cuda(w, op, "W");
  check_dim(w, 2, op, "W");
  check_dtype(w, kFloatTypes, op, "W");
  LLMPACK_CHECK(w.size(1) % kGroup == 0, op, ": W's last dim K=", w.size(1),
                " must be a multiple of 4; pad W with zero columns first (llmpack.sparse24.pad_k)");
}

// The packed pair (values, meta), checked the same way for every op taking it.
void check_packed_args(const Tensor& values, const Tensor& meta, const char* op) {
  check_cpu_or_cuda(values, op, "values");
  check_same_device(values, meta, op, "values", "meta");
  check_dim(values, 2, op, "values");
  check_dim(meta, 2, op, "meta");
  check_dtype(values, kFloatTypes, op, "values");
  check_dtype(meta, {ScalarType::Byte}, op, "meta");
  const int64_t k = values.size(1) * 2;
  LLMPACK_CHECK(k % kGroup == 0, op, ": values' last dim must be even (K/2 with K % 4 == 0), got ",
                values.size(1));
  LLMPACK_CHECK(meta.size(0) == values.size(0) && meta.size(1) == meta_cols(k), op,
                ": meta must have shape [", values.size(0), ", ", meta_cols(k), "] for values of shape ",
                shape_str(values), ", got ", shape_str(meta));
}

// Error for compress's first offending group, with the numbers a user needs
// to find it.
[[noreturn]] void fail_not_24(const Tensor& w, int64_t bad) {
  const int64_t groups = w.size(1) / kGroup, row = bad / groups, g = bad % groups;
  fail("sparse24_compress: W is not 2:4 sparse: row ", row, ", group ", g, " (columns ",
                4 * g, "..", 4 * g + 3, ") has more than 2 nonzeros; prune it first (llmpack.prune)");
}

[[noreturn]] void fail_bad_meta(const Tensor& meta, int64_t bad) {
  const int64_t mc = meta.size(1);
  fail("sparse24_decompress: corrupted meta at row ", bad / mc, ", byte ", bad % mc,
                ": each nibble must encode two distinct positions i0 < i1 (and a padding nibble must be 0)");
}

// The same message from both CPU paths (streaming and tile-unpacking).
[[noreturn]] void fail_bad_linear_meta(int64_t row) {
  fail("sparse24_linear: corrupted meta in weight row ", row,
       ": each nibble must encode two distinct positions i0 < i1 (and a padding nibble must be 0)");
}

DType dtype_of(const Tensor& t) {
  switch (t.scalar_type()) {
    case ScalarType::Half: return DType::f16;
    case ScalarType::BFloat16: return DType::bf16;
    default: return DType::f32;
  }
}

void check_linear_args(const Tensor& x, const Tensor& values, const Tensor& meta,
                       const std::optional<Tensor>& bias) {
  constexpr const char* op = "sparse24_linear";
  check_packed_args(values, meta, op);
  check_cpu_or_cuda(x, op, "x");
  check_same_device(x, values, op, "x", "values");
  check_dtype(x, kFloatTypes, op, "x");
  LLMPACK_CHECK(x.scalar_type() == values.scalar_type(), op, ": x is ", dtype_name(x.scalar_type()),
                " but the weight values are ", dtype_name(values.scalar_type()), "; they must match");
  LLMPACK_CHECK(x.dim() >= 1, op, ": x must have at least 1 dim");
  const int64_t k = values.size(1) * 2;
  LLMPACK_CHECK(x.size(x.dim() - 1) == k, op, ": x's last dim is ", x.size(x.dim() - 1),
                " but the packed weight has K=", k, " (pad x with llmpack.pad_k if the weight was padded)");
  if (bias) {
    check_same_device(*bias, values, op, "bias", "values");
    check_dim(*bias, 1, op, "bias");
    LLMPACK_CHECK(bias->size(0) == values.size(0), op, ": bias must have N=", values.size(0),
                  " elements, got ", bias->size(0));
    LLMPACK_CHECK(bias->scalar_type() == x.scalar_type(), op, ": bias must be ", dtype_name(x.scalar_type()),
                  ", got ", dtype_name(bias->scalar_type()));
  }
}


// From this many rows of x on, unpacking W tile by tile and running torch's
// dense GEMM on each tile beats streaming the packed weight once per block of
// rows of x: the stream kernel's cost grows with M (one gather per 16-32
// useful MACs), the GEMM's barely does. Measured with
// bench/sparse24_crossover.py (docs/results/sparse24_crossover.txt; lower
// levels measured on the development machine with torch's GEMM capped to the
// same level: ONEDNN_MAX_CPU_ISA / MKL_ENABLE_INSTRUCTIONS).
// LLMPACK_SPARSE24_DENSE_M overrides for all dtypes.
int64_t dense_crossover_m(DType dt) {
  static const int64_t forced = [] {
    const char* v = std::getenv("LLMPACK_SPARSE24_DENSE_M");
    return v && *v ? std::atoll(v) : int64_t(-1);
  }();
  if (forced >= 0) return forced;
  switch (active_isa()) {
    case Isa::amx:  // AMX kernels for bf16 and fp16 (exact hi/lo splits): long ahead
      return dt == DType::bf16 ? 192 : dt == DType::f16 ? 1024 : 64;
    case Isa::avx512_bf16:
      return dt == DType::bf16 ? 32 : dt == DType::f16 ? 96 : 64;
    case Isa::avx512:
    case Isa::avx2:  // no native bf16/fp16 GEMM for torch on such CPUs: the packed path stays ahead
      return dt == DType::f32 ? 64 : 1024;
    default:  // the portable scalar kernel: the vectorised unpack + GEMM wins early
      return dt == DType::f32 ? 8 : 1;
  }
}

// The tile buffer persists per thread: a fresh multi-MiB allocation per call
// costs more in first-touch page faults than the unpack itself.
uint8_t* tile_buffer(size_t bytes) {
  thread_local std::vector<uint8_t> buf;
  if (buf.size() < bytes) buf.resize(bytes);
  return buf.data();
}

// y = x @ W^T + bias for large M: unpack ~4 MiB row tiles of W into a reused
// buffer (cache-resident, never the whole dense W) and hand each tile to
// torch's GEMM, writing y's matching column block.
Tensor linear_tiled_dense_cpu(const Tensor& x2d, const Tensor& values, const Tensor& meta,
                              const std::optional<Tensor>& bias_in) {
  const int64_t m = x2d.size(0), n = values.size(0), k = values.size(1) * 2;
  const int64_t es = static_cast<int64_t>(values.element_size());
  int64_t tile = std::max<int64_t>(16, (int64_t(1) << 22) / (k * es));
  tile = std::min(n, (tile + 15) / 16 * 16);
  uint8_t* buf = tile_buffer(size_t(tile * k * es));
  Tensor y = new_empty(x2d, {m, n}, x2d.scalar_type());
  std::optional<Tensor> bias;
  if (bias_in) bias = dense(*bias_in);
  const auto* vals = static_cast<const uint8_t*>(values.const_data_ptr());
  const auto* mt = static_cast<const uint8_t*>(meta.const_data_ptr());
  for (int64_t r0 = 0; r0 < n; r0 += tile) {
    const int64_t t = std::min(tile, n - r0);
    int64_t bad = kNoError;
    cpu().decompress({vals + r0 * values_cols(k) * es, mt + r0 * meta_cols(k), buf, t, k, int(es), &bad});
    if (bad != kNoError) fail_bad_linear_meta(r0 + bad / meta_cols(k));
    Tensor w = torch::stable::from_blob(buf, {t, k}, {k, 1}, x2d.device(), values.scalar_type());
    std::optional<Tensor> b;
    if (bias) b = torch::stable::narrow(*bias, 0, r0, t);
    Tensor y_cols = torch::stable::narrow(y, 1, r0, t);
    torch::stable::copy_(y_cols, aten_linear(x2d, w, b));
  }
  return y;
}

struct Outputs {
  Tensor values, meta;
};

Outputs alloc_compress(const Tensor& w) {
  const int64_t n = w.size(0), k = w.size(1);
  return {new_empty(w, {n, values_cols(k)}, w.scalar_type()), new_empty(w, {n, meta_cols(k)}, ScalarType::Byte)};
}

CompressParams compress_params(const Tensor& w, Outputs& out, int64_t* bad) {
  return {w.const_data_ptr(), out.values.mutable_data_ptr(), static_cast<uint8_t*>(out.meta.mutable_data_ptr()),
          w.size(0), w.size(1), static_cast<int>(w.element_size()), bad};
}

DecompressParams decompress_params(const Tensor& values, const Tensor& meta, Tensor& w, int64_t* bad) {
  return {values.const_data_ptr(), static_cast<const uint8_t*>(meta.const_data_ptr()), w.mutable_data_ptr(),
          values.size(0), values.size(1) * 2, static_cast<int>(values.element_size()), bad};
}

std::tuple<Tensor, Tensor> compress_cpu(Tensor w_in) {
  check_compress_args(w_in);
  Tensor w = dense(w_in);
  Outputs out = alloc_compress(w);
  int64_t bad = kNoError;
  cpu().compress(compress_params(w, out, &bad));
  if (bad != kNoError) fail_not_24(w, bad);
  return {out.values, out.meta};
}

Tensor decompress_cpu(Tensor values_in, Tensor meta_in) {
  check_packed_args(values_in, meta_in, "sparse24_decompress");
  Tensor values = dense(values_in), meta = dense(meta_in);
  Tensor w = new_empty(values, {values.size(0), values.size(1) * 2}, values.scalar_type());
  int64_t bad = kNoError;
  cpu().decompress(decompress_params(values, meta, w, &bad));
  if (bad != kNoError) fail_bad_meta(meta, bad);
  return w;
}

Tensor linear_cpu(Tensor x, Tensor values_in, Tensor meta_in, std::optional<Tensor> bias_in) {
  check_linear_args(x, values_in, meta_in, bias_in);
  Tensor values = dense(values_in), meta = dense(meta_in);
  const int64_t n = values.size(0), k = values.size(1) * 2;
  Flat f = flatten_x(x, n);
  if (f.m >= dense_crossover_m(dtype_of(x)) && n > 0 && k > 0) {
    return f.unflatten(linear_tiled_dense_cpu(f.x2d, values, meta, bias_in));
  }
  std::optional<Tensor> bias;
  if (bias_in) bias = dense(*bias_in);
  Tensor y = new_empty(f.x2d, {f.m, n}, x.scalar_type());
  int64_t bad = kNoError;
  LinearParams p{f.x2d.const_data_ptr(), values.const_data_ptr(), static_cast<const uint8_t*>(meta.const_data_ptr()),
                 bias ? bias->const_data_ptr() : nullptr, y.mutable_data_ptr(), f.m, n, k, dtype_of(x), &bad};
  if (f.m > 0 && n > 0) cpu().linear(p);
  if (bad != kNoError) fail_bad_linear_meta(bad);
  return f.unflatten(y);
}

// Canonical meta [N, ceil(K/8)] -> CUTLASS sm80 sparse-GEMM metadata, a flat
// uint8 buffer (layout and padding rules: sparse24_reorder.h).
void check_meta_to_cutlass_args(const Tensor& meta) {
  constexpr const char* op = "sparse24_meta_to_cutlass";
  check_cpu_or_cuda(meta, op, "meta");
  check_dim(meta, 2, op, "meta");
  check_dtype(meta, {ScalarType::Byte}, op, "meta");
}

// K is not known here (groups = -1): the last nibble of a row may be padding.
MetaReorderParams meta_reorder_params(const Tensor& meta, Tensor& out, int64_t* bad) {
  return {static_cast<const uint8_t*>(meta.const_data_ptr()), static_cast<uint8_t*>(out.mutable_data_ptr()),
          meta.size(0), meta.size(1), /*groups=*/-1, bad};
}

[[noreturn]] void fail_bad_meta_row(int64_t row) {
  fail("sparse24_meta_to_cutlass: corrupted meta in weight row ", row,
       ": each nibble must encode two distinct positions i0 < i1 (and a padding nibble must be 0)");
}

Tensor meta_to_cutlass_op_cpu(Tensor meta_in) {
  check_meta_to_cutlass_args(meta_in);
  Tensor meta = dense(meta_in);
  Tensor out = new_empty(meta, {cutlass_meta_bytes_from_cols(meta.size(0), meta.size(1))}, ScalarType::Byte);
  int64_t bad = kNoError;
  meta_to_cutlass_cpu(meta_reorder_params(meta, out, &bad));
  if (bad != kNoError) fail_bad_meta_row(bad);
  return out;
}

#if defined(LLMPACK_WITH_CUDA)
std::tuple<Tensor, Tensor> compress_cuda(Tensor w_in) {
  check_compress_args(w_in);
  Tensor w = dense(w_in);
  CudaContext ctx(w);
  Outputs out = alloc_compress(w);
  Tensor slot = error_slot(w);
  check_launch(launch_compress_cuda(compress_params(w, out, static_cast<int64_t*>(slot.mutable_data_ptr())), ctx.stream),
               "sparse24_compress");
  const int64_t bad = read_slot(slot);
  if (bad != kNoError) fail_not_24(w, bad);
  return {out.values, out.meta};
}

Tensor decompress_cuda(Tensor values_in, Tensor meta_in) {
  check_packed_args(values_in, meta_in, "sparse24_decompress");
  Tensor values = dense(values_in), meta = dense(meta_in);
  CudaContext ctx(values);
  Tensor w = new_empty(values, {values.size(0), values.size(1) * 2}, values.scalar_type());
  Tensor slot = error_slot(values);
  check_launch(launch_decompress_cuda(decompress_params(values, meta, w, static_cast<int64_t*>(slot.mutable_data_ptr())),
                                      ctx.stream),
               "sparse24_decompress");
  const int64_t bad = read_slot(slot);
  if (bad != kNoError) fail_bad_meta(meta, bad);
  return w;
}

// CUDA linear: decode shapes (fp16/bf16, M <= 16) run the mma.sp kernel;
// everything else decompresses on the device and uses torch's GEMM (cuBLAS).
Tensor linear_cuda(Tensor x, Tensor values_in, Tensor meta_in, std::optional<Tensor> bias_in) {
  check_linear_args(x, values_in, meta_in, bias_in);
  Tensor values = dense(values_in), meta = dense(meta_in);
  const int64_t n = values.size(0), k = values.size(1) * 2;
  Flat f = flatten_x(x, n);
  const DType dt = dtype_of(x);
  if (smallm_linear_supported(f.m, dt) && n > 0) {
    CudaContext ctx(values);
    std::optional<Tensor> bias;
    if (bias_in) bias = dense(*bias_in);
    Tensor y = new_empty(f.x2d, {f.m, n}, x.scalar_type());
    // No error slot: corrupted metadata traps in the kernel (no per-call sync).
    LinearParams p{f.x2d.const_data_ptr(), values.const_data_ptr(), static_cast<const uint8_t*>(meta.const_data_ptr()),
                   bias ? bias->const_data_ptr() : nullptr, y.mutable_data_ptr(), f.m, n, k, dt, nullptr};
    check_launch(launch_linear_smallm_cuda(p, ctx.stream), "sparse24_linear");
    return f.unflatten(y);
  }
  if (cutlass_linear_supported(f.m, n, k, dt)) {
    // Larger M: CUTLASS's sparse GEMM. Its metadata layout is rebuilt per call
    // on the device (~K/8 bytes per weight row, small next to the GEMM); the
    // reorder validates it and traps on corruption, so no sync is needed.
    CudaContext ctx(values);
    std::optional<Tensor> bias;
    if (bias_in) bias = dense(*bias_in);
    Tensor meta_c = new_empty(meta, {int64_t(cutlass_meta_bytes(n, k))}, ScalarType::Byte);
    MetaReorderParams rp{static_cast<const uint8_t*>(meta.const_data_ptr()), static_cast<uint8_t*>(meta_c.mutable_data_ptr()),
                         n, meta.size(1), k / kGroup, nullptr};
    check_launch(launch_meta_to_cutlass_cuda(rp, ctx.stream), "sparse24_linear");
    const size_t ws_bytes = cutlass_workspace_bytes(f.m, n, k, dt);
    Tensor ws = new_empty(values, {int64_t(ws_bytes)}, ScalarType::Byte);
    Tensor y = new_empty(f.x2d, {f.m, n}, x.scalar_type());
    LinearParams p{f.x2d.const_data_ptr(), values.const_data_ptr(), nullptr, bias ? bias->const_data_ptr() : nullptr,
                   y.mutable_data_ptr(), f.m, n, k, dt, nullptr};
    const int err = launch_linear_cutlass(p, static_cast<const uint8_t*>(meta_c.const_data_ptr()), ws.mutable_data_ptr(),
                                          ws_bytes, ctx.stream);
    if (err != kCutlassUnsupported) {  // e.g. a misaligned view falls through to the generic path
      check_launch(err, "sparse24_linear");
      return f.unflatten(y);
    }
  }
  Tensor w = decompress_cuda(values, meta);
  return f.unflatten(aten_linear(f.x2d, w, bias_in));
}

Tensor meta_to_cutlass_op_cuda(Tensor meta_in) {
  check_meta_to_cutlass_args(meta_in);
  Tensor meta = dense(meta_in);
  CudaContext ctx(meta);
  Tensor out = new_empty(meta, {cutlass_meta_bytes_from_cols(meta.size(0), meta.size(1))}, ScalarType::Byte);
  Tensor slot = error_slot(meta);
  check_launch(launch_meta_to_cutlass_cuda(
                   meta_reorder_params(meta, out, static_cast<int64_t*>(slot.mutable_data_ptr())), ctx.stream),
               "sparse24_meta_to_cutlass");
  const int64_t bad = read_slot(slot);
  if (bad != kNoError) fail_bad_meta_row(bad);
  return out;
}

#if defined(LLMPACK_SIMT_EMULATION)
// Emulator-only entry to the CUTLASS path's transpose+bias kernel.
Tensor transpose_bias_test(Tensor d_in, std::optional<Tensor> bias_in, int64_t m) {
  constexpr const char* op = "_transpose_bias";
  check_dim(d_in, 2, op, "d");
  check_dtype(d_in, {ScalarType::Half, ScalarType::BFloat16}, op, "d");
  LLMPACK_CHECK(m >= 0 && m <= d_in.size(1), op, ": m must be in [0, ", d_in.size(1), "]");
  Tensor d = dense(d_in);
  std::optional<Tensor> bias;
  if (bias_in) bias = dense(*bias_in);
  const int64_t n = d.size(0);
  Tensor y = new_empty(d, {m, n}, d.scalar_type());
  LinearParams p{nullptr, nullptr, nullptr, bias ? bias->const_data_ptr() : nullptr, y.mutable_data_ptr(),
                 m, n, 0, dtype_of(d), nullptr};
  check_launch(launch_transpose_bias_cuda(p, d.const_data_ptr(), d.size(1), nullptr), op);
  return y;
}
#endif
#endif

}  // namespace
}  // namespace llmpack::sparse24

#if !defined(LLMPACK_SIMT_EMULATION)
LLMPACK_CPU_IMPL(m) {
  m.impl("sparse24_compress", TORCH_BOX(&llmpack::sparse24::compress_cpu));
  m.impl("sparse24_decompress", TORCH_BOX(&llmpack::sparse24::decompress_cpu));
  m.impl("sparse24_linear", TORCH_BOX(&llmpack::sparse24::linear_cpu));
  m.impl("sparse24_meta_to_cutlass", TORCH_BOX(&llmpack::sparse24::meta_to_cutlass_op_cpu));
}
#endif

#if defined(LLMPACK_WITH_CUDA)
LLMPACK_CUDA_IMPL(m) {
  m.impl("sparse24_compress", TORCH_BOX(&llmpack::sparse24::compress_cuda));
  m.impl("sparse24_decompress", TORCH_BOX(&llmpack::sparse24::decompress_cuda));
  m.impl("sparse24_linear", TORCH_BOX(&llmpack::sparse24::linear_cuda));
#if defined(LLMPACK_SIMT_EMULATION)
  m.impl("_transpose_bias", TORCH_BOX(&llmpack::sparse24::transpose_bias_test));
#endif
  m.impl("sparse24_meta_to_cutlass", TORCH_BOX(&llmpack::sparse24::meta_to_cutlass_op_cuda));
}
#endif
