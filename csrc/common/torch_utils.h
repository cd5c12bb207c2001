// Tensor-side helpers shared by every *_ops.cpp (the torch glue): argument
// checks with messages that name the op, the argument and what was expected,
// plus allocation and CUDA-stream plumbing. Kernel files never include this:
// they take raw pointers and a params struct.
#pragma once

#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace llmpack {

using torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;

// Throws std::runtime_error (a RuntimeError in Python) with the parts joined.
// Unlike STD_TORCH_CHECK it adds no C++ file/function prefix: the message is
// for the user, and already names the op and argument.
template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw std::runtime_error(os.str());
}
#define LLMPACK_CHECK(cond, ...) \
  do {                           \
    if (!(cond)) ::llmpack::fail(__VA_ARGS__); \
  } while (0)

inline const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return "float32";
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    case ScalarType::Double: return "float64";
    case ScalarType::Byte: return "uint8";
    case ScalarType::Char: return "int8";
    case ScalarType::Short: return "int16";
    case ScalarType::Int: return "int32";
    case ScalarType::Long: return "int64";
    case ScalarType::Bool: return "bool";
    case ScalarType::UInt32: return "uint32";
    default: return "an unsupported dtype";
  }
}

inline std::string shape_str(const Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

// True when t's shape is exactly `want` (its rank included).
inline bool has_shape(const Tensor& t, std::initializer_list<int64_t> want) {
  if (t.dim() != static_cast<int64_t>(want.size())) return false;
  int64_t i = 0;
  for (int64_t w : want)
    if (t.size(i++) != w) return false;
  return true;
}

inline void check_dtype(const Tensor& t, std::initializer_list<ScalarType> ok, const char* op,
                        const char* arg) {
  for (auto d : ok)
    if (t.scalar_type() == d) return;
  std::string want;
  for (auto d : ok) want += (want.empty() ? "" : " or ") + std::string(dtype_name(d));
  fail(op, ": ", arg, " must be ", want, ", got ", dtype_name(t.scalar_type()));
}

inline void check_dim(const Tensor& t, int64_t dim, const char* op, const char* arg) {
  LLMPACK_CHECK(t.dim() == dim, op, ": ", arg, " must be ", dim, "-D, got shape ", shape_str(t));
}

inline void check_same_device(const Tensor& a, const Tensor& b, const char* op, const char* an,
                              const char* bn) {
  LLMPACK_CHECK(a.is_cpu() == b.is_cpu() && a.get_device_index() == b.get_device_index(), op,
                ": ", an, " and ", bn, " must be on the same device");
}

inline void check_cpu_or_cuda(const Tensor& t, const char* op, const char* arg) {
  LLMPACK_CHECK(t.is_cpu() || t.is_cuda(), op, ": ", arg, " must be a CPU or CUDA tensor");
}

// Ops on a cache's own state tensors (the KV bookkeeping ops): each tensor on
// the CPU or CUDA, on the first one's device, and contiguous, since several
// are mutated in place and no contiguous copy may stand in for them.
inline void check_state_tensors(std::initializer_list<std::pair<const Tensor*, const char*>> all, const char* op) {
  const auto& [first, first_name] = *all.begin();
  for (const auto& [t, name] : all) {
    check_cpu_or_cuda(*t, op, name);
    check_same_device(*first, *t, op, first_name, name);
    LLMPACK_CHECK(t->is_contiguous(), op, ": ", name, " must be contiguous");
  }
}

// Kernels read dense row-major memory. A strided view is made contiguous here
// (a copy), which is what a caller passing a transposed weight expects.
// Contiguous and aligned to its element size: kernels read elements through
// typed pointers, and a tensor viewed from a file buffer (safetensors at an
// odd offset) can start anywhere. Such a tensor is copied, as a strided one is.
inline Tensor dense(const Tensor& t) {
  const auto addr = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  const bool aligned = t.numel() == 0 || addr % static_cast<uintptr_t>(t.element_size()) == 0;
  if (t.is_contiguous() && aligned) return t;
  return aligned ? torch::stable::contiguous(t) : torch::stable::clone(t);
}

// Row-major strides of a contiguous tensor of these sizes.
inline std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& sizes) {
  std::vector<int64_t> strides(sizes.size());
  int64_t stride = 1;
  for (size_t i = sizes.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= sizes[i] > 1 ? sizes[i] : 1;
  }
  return strides;
}

// A contiguous uninitialised tensor on like's device. Straight through the C
// shim's empty_strided: torch::stable::new_empty goes through the boxed
// dispatcher by name (a schema lookup and boxing per call, a visible share of
// a few-microsecond decode-shape op).
inline Tensor new_empty(const Tensor& like, const std::vector<int64_t>& sizes, ScalarType dtype) {
  const std::vector<int64_t> strides = contiguous_strides(sizes);
  int32_t device_type = 0, device_index = 0;
  STD_TORCH_CHECK(aoti_torch_get_device_type(like.get(), &device_type) == AOTI_TORCH_SUCCESS &&
                      aoti_torch_get_device_index(like.get(), &device_index) == AOTI_TORCH_SUCCESS,
                  "llmpack: cannot read the device of a tensor");
  const int32_t shim_dtype = torch::stable::detail::to<int32_t>(torch::stable::detail::from(dtype));
  AtenTensorHandle out = nullptr;
  STD_TORCH_CHECK(aoti_torch_empty_strided(int64_t(sizes.size()), sizes.data(), strides.data(), shim_dtype, device_type,
                                           device_index, &out) == AOTI_TORCH_SUCCESS,
                  "llmpack: allocating an output tensor failed");
  return Tensor(out);
}

// A contiguous tensor seen with another shape (same numel): a view made by the
// C shim, not aten::reshape through the by-name dispatcher.
inline Tensor reshape_dense(const Tensor& t, const std::vector<int64_t>& sizes) {
  const std::vector<int64_t> strides = contiguous_strides(sizes);
  AtenTensorHandle out = nullptr;
  // The last argument is an increment over t's own storage offset (kept as is).
  STD_TORCH_CHECK(aoti_torch__reinterpret_tensor(t.get(), int64_t(sizes.size()), sizes.data(), strides.data(),
                                                 /*offset_increment=*/0, &out) == AOTI_TORCH_SUCCESS,
                  "llmpack: reshaping a tensor failed");
  return Tensor(out);
}

// x [..., K] -> [M, K] (contiguous) and the output shape [..., N].
struct Flat {
  Tensor x2d;
  std::vector<int64_t> out_shape;
  int64_t m;
  // y [M, N] (fresh, contiguous) -> [..., N], a view.
  Tensor unflatten(const Tensor& y) const { return out_shape.size() == 2 ? y : reshape_dense(y, out_shape); }
};

inline Flat flatten_x(const Tensor& x, int64_t n) {
  const int64_t k = x.size(x.dim() - 1);
  std::vector<int64_t> out;
  int64_t m = 1;
  for (int64_t i = 0; i + 1 < x.dim(); ++i) {
    out.push_back(x.size(i));
    m *= x.size(i);
  }
  out.push_back(n);
  return {x.dim() == 2 ? dense(x) : reshape_dense(dense(x), {m, k}), out, m};
}

// Any aten op through torch's stable dispatcher entry point: how our ops reuse
// torch's own kernels (e.g. its BLAS GEMM) without linking torch's C++ ABI.
template <size_t N>
Tensor call_aten(const char* name, const char* overload, std::array<StableIValue, N> stack) {
  STD_TORCH_CHECK(torch_call_dispatcher(name, overload, stack.data(), TORCH_ABI_VERSION) == 0,
                  "call to ", name, " failed");
  return torch::stable::detail::to<Tensor>(stack[0]);
}

// torch.nn.functional.linear: y = x @ w^T + bias, on x's device with torch's GEMM.
inline Tensor aten_linear(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias) {
  using torch::stable::detail::from;
  return call_aten<3>("aten::linear", "", {from(x), from(w), from(bias)});
}

// The stream torch is using on `t`'s device (cudaStream_t as void*), with that
// device made current for the launch. Works through torch's device-generic
// stable ABI, so it compiles against a CPU-only torch too. In the emulator
// build the "CUDA" tensors are CPU tensors: no guard, null stream.
#if defined(LLMPACK_SIMT_EMULATION)
struct CudaContext {
  void* stream = nullptr;
  explicit CudaContext(const Tensor&) {}
};
#else
struct CudaContext {
  torch::stable::accelerator::DeviceGuard guard;
  void* stream;
  explicit CudaContext(const Tensor& t)
      : guard(t.get_device_index()),
        stream(torch::stable::accelerator::getCurrentStream(t.get_device_index()).nativeHandle()) {}
};
#endif

// t itself when on the CPU, else a host copy (a sync on CUDA).
inline Tensor to_cpu(const Tensor& t) {
  return t.is_cpu() ? t : torch::stable::to(t, torch::stable::Device(torch::headeronly::DeviceType::CPU));
}

// CUDA kernels report the first bad index through one device int64 that
// starts at "none" (-1, i.e. all ones for their unsigned atomicMin); reading
// it back costs one sync. -1 is the largest value for an unsigned atomicMin
// and, unlike INT64_MAX, exactly representable in fill_'s double.
inline Tensor error_slot(const Tensor& like) {
  Tensor slot = new_empty(like, {1}, ScalarType::Long);
  torch::stable::fill_(slot, -1.0);
  return slot;
}

// The slot's value, or INT64_MAX (the kernels' "no error") when untouched.
inline int64_t read_slot(const Tensor& slot) {
  Tensor host = torch::stable::to(slot, torch::stable::Device(torch::headeronly::DeviceType::CPU));
  const int64_t v = *static_cast<const int64_t*>(host.const_data_ptr());
  return v == -1 ? INT64_MAX : v;
}

inline void check_launch(int err, const char* op) {
  LLMPACK_CHECK(err == 0, op, ": CUDA kernel launch failed (cudaError ", err, ")");
}

}  // namespace llmpack
