// torch glue for DFloat11: argument checks (written once, shared by the CPU
// and CUDA paths), the encoder's passes, output allocation, registration.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "common/isa.h"
#include "common/registration.h"
#include "common/torch_utils.h"
#include "df11/df11.h"

namespace llmpack::df11 {
namespace {

const CpuKernels& cpu() {
  return pick_isa(&kCpuGeneric, LLMPACK_IF_AVX2(kCpuAvx2), LLMPACK_IF_AVX512(kCpuAvx512));
}

// ---------------------------------------------------------------- checks

void check_1d(const Tensor& t, ScalarType dt, const char* op, const char* arg) {
  check_cpu_or_cuda(t, op, arg);
  check_dim(t, 1, op, arg);
  check_dtype(t, {dt}, op, arg);
}

// The container (layout in df11.h), checked the same way for every op that
// reads one. The offsets are read on the host: on CUDA that is one small
// device-to-host copy (4 bytes per 2048 values).
struct Container {
  Tensor lengths, stream, offsets, sm;
  int64_t n;
  std::vector<uint8_t> host_lengths;
  std::vector<uint32_t> code;
};

Container check_container(const Tensor& lengths_in, const Tensor& stream_in, const Tensor& offsets_in,
                          const Tensor& sm_in, const char* op) {
  check_1d(lengths_in, ScalarType::Byte, op, "lengths");
  check_1d(stream_in, ScalarType::Byte, op, "stream");
  check_1d(offsets_in, ScalarType::UInt32, op, "offsets");
  check_1d(sm_in, ScalarType::Byte, op, "sign_mantissa");
  check_same_device(lengths_in, stream_in, op, "lengths", "stream");
  check_same_device(lengths_in, offsets_in, op, "lengths", "offsets");
  check_same_device(lengths_in, sm_in, op, "lengths", "sign_mantissa");
  Container c{dense(lengths_in), dense(stream_in), dense(offsets_in), dense(sm_in), sm_in.size(0), {}, {}};
  LLMPACK_CHECK(c.lengths.size(0) == kSymbols, op, ": lengths must have 256 entries (one per exponent), got ",
                c.lengths.size(0));
  const Tensor hl = to_cpu(c.lengths);
  const uint8_t* l = static_cast<const uint8_t*>(hl.const_data_ptr());
  c.host_lengths.assign(l, l + kSymbols);
  for (int s = 0; s < kSymbols; ++s)
    LLMPACK_CHECK(c.host_lengths[s] <= kMaxCodeLen, op, ": lengths[", s, "] = ", int(c.host_lengths[s]),
                  " is longer than the ", kMaxCodeLen, "-bit limit (corrupted code table)");
  c.code.resize(kSymbols);
  LLMPACK_CHECK(canonical_codes(c.host_lengths.data(), c.code.data()), op,
                ": lengths are not a prefix code (Kraft sum above 1: corrupted code table)");
  const int64_t chunks = num_chunks(c.n);
  LLMPACK_CHECK(c.offsets.size(0) == chunks + 1, op, ": offsets must have ", chunks + 1, " entries for ", c.n,
                " values (one per ", kChunk, "-value chunk, plus the end), got ", c.offsets.size(0));
  const Tensor ho = to_cpu(c.offsets);
  const uint32_t* o = static_cast<const uint32_t*>(ho.const_data_ptr());
  LLMPACK_CHECK(o[0] == 0, op, ": offsets[0] must be 0, got ", o[0]);
  for (int64_t i = 0; i < chunks; ++i)
    LLMPACK_CHECK(o[i + 1] >= o[i], op, ": offsets decrease at chunk ", i, " (", o[i], " then ", o[i + 1],
                  "): corrupted index");
  LLMPACK_CHECK(c.stream.size(0) == int64_t(o[chunks]) + kGuardBytes, op, ": stream must hold offsets[-1] + ",
                kGuardBytes, " = ", int64_t(o[chunks]) + kGuardBytes, " bytes, got ", c.stream.size(0),
                " (truncated or padded stream)");
  return c;
}

[[noreturn]] void fail_bad_chunk(const char* op, int64_t chunk) {
  fail(op, ": corrupted stream in chunk ", chunk, " (values ", chunk * kChunk, "..", (chunk + 1) * kChunk - 1,
       "): its bits are not exactly its values' codes within its bytes");
}

// The decode table of a code, built once per distinct `lengths` and kept:
// building it (~12 us) is a visible share of decoding a small tensor, and a
// model decodes the same few hundred codes on every forward pass. Capped at
// 2048 codes (32 MiB); past that the cache starts over.
std::shared_ptr<const std::vector<uint64_t>> lut_for(const Container& c) {
  static std::mutex mu;
  static std::unordered_map<std::string, std::shared_ptr<const std::vector<uint64_t>>> cache;
  const std::string key(reinterpret_cast<const char*>(c.host_lengths.data()), kSymbols);
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  std::vector<uint16_t> first(kLutSize, 0);
  fill_single_table(c.host_lengths.data(), c.code.data(), first.data(), 0, kSymbols, 1);
  auto lut = std::make_shared<std::vector<uint64_t>>(kLutSize);
  build_lut_range(first.data(), lut->data(), 0, kLutSize, 1);
  std::lock_guard<std::mutex> lock(mu);
  if (cache.size() >= 2048) cache.clear();
  cache.emplace(key, lut);
  return lut;
}

using Lut = std::shared_ptr<const std::vector<uint64_t>>;

void decode_into_cpu(const Container& c, const Lut& lut, uint16_t* out, const char* op) {
  int64_t bad = kNoError;
  DecodeParams p{c.host_lengths.data(), lut->data(), static_cast<const uint8_t*>(c.stream.const_data_ptr()),
                 static_cast<const uint32_t*>(c.offsets.const_data_ptr()),
                 static_cast<const uint8_t*>(c.sm.const_data_ptr()), out, c.n, &bad};
  if (c.n > 0) cpu().decode(p);
  if (bad != kNoError) fail_bad_chunk(op, bad);
}

// ---------------------------------------------------------------- encode

std::tuple<Tensor, Tensor, Tensor, Tensor> encode_cpu(Tensor w_in) {
  constexpr const char* op = "df11_encode";
  check_cpu_or_cuda(w_in, op, "W");
  LLMPACK_CHECK(w_in.is_cpu(), op, ": W must be a CPU tensor (encoding is offline: move W to the CPU)");
  check_dtype(w_in, {ScalarType::BFloat16}, op, "W");
  Tensor w = dense(w_in);
  const int64_t n = w.numel();
  Tensor sm = new_empty(w, {n}, ScalarType::Byte);
  Tensor exponents = new_empty(w, {n}, ScalarType::Byte);
  int64_t counts[kSymbols];
  cpu().histogram(static_cast<const uint16_t*>(w.const_data_ptr()), n, static_cast<uint8_t*>(sm.mutable_data_ptr()),
                  static_cast<uint8_t*>(exponents.mutable_data_ptr()), counts);
  Tensor lengths = new_empty(w, {kSymbols}, ScalarType::Byte);
  uint8_t* len = static_cast<uint8_t*>(lengths.mutable_data_ptr());
  package_merge_lengths(counts, kMaxCodeLen, len);
  uint32_t code[kSymbols];
  canonical_codes(len, code);
  int64_t total_bits = 0;
  for (int s = 0; s < kSymbols; ++s) total_bits += counts[s] * len[s];
  LLMPACK_CHECK(total_bits / 8 + num_chunks(n) < (int64_t(1) << 32) - kGuardBytes, op, ": W has ", n,
                " values, whose codes exceed the format's 4 GiB stream limit; compress it in parts");
  Tensor offsets = new_empty(w, {num_chunks(n) + 1}, ScalarType::UInt32);
  uint32_t* off = static_cast<uint32_t*>(offsets.mutable_data_ptr());
  chunk_offsets(static_cast<const uint8_t*>(exponents.const_data_ptr()), n, len, off);
  const int64_t bytes = off[num_chunks(n)];
  Tensor stream = new_empty(w, {bytes + kGuardBytes}, ScalarType::Byte);
  uint8_t* st = static_cast<uint8_t*>(stream.mutable_data_ptr());
  std::fill(st + bytes, st + bytes + kGuardBytes, uint8_t(0));
  cpu().encode(static_cast<const uint8_t*>(exponents.const_data_ptr()), n, len, code, off, st);
  return {lengths, stream, offsets, sm};
}

// ---------------------------------------------------------------- decode

Tensor decode_cpu(Tensor lengths, Tensor stream, Tensor offsets, Tensor sm) {
  const Container c = check_container(lengths, stream, offsets, sm, "df11_decode");
  Tensor out = new_empty(c.sm, {c.n}, ScalarType::BFloat16);
  decode_into_cpu(c, lut_for(c), static_cast<uint16_t*>(out.mutable_data_ptr()), "df11_decode");
  return out;
}

void check_out(const Tensor& out, const Container& c, const char* op) {
  check_cpu_or_cuda(out, op, "out");
  check_same_device(out, c.sm, op, "out", "sign_mantissa");
  check_dtype(out, {ScalarType::BFloat16}, op, "out");
  LLMPACK_CHECK(out.numel() == c.n, op, ": out must have ", c.n, " elements (the compressed tensor's), got ",
                out.numel(), " (shape ", shape_str(out), ")");
  LLMPACK_CHECK(out.is_contiguous(), op, ": out must be contiguous");
}

void decode_into_op_cpu(Tensor lengths, Tensor stream, Tensor offsets, Tensor sm, Tensor out) {
  constexpr const char* op = "df11_decode_into";
  const Container c = check_container(lengths, stream, offsets, sm, op);
  check_out(out, c, op);
  decode_into_cpu(c, lut_for(c), static_cast<uint16_t*>(out.mutable_data_ptr()), op);
}

// ---------------------------------------------------------------- linear

// Rows of x at and above which df11_linear decodes W whole and runs torch's
// GEMM instead of the fused kernel. On Zen 3 (avx2, 2 threads, 4096 x 4096,
// 2026-12-02) the fused kernel's register blocks beat decode + dense bf16 at
// every M tried, 16 .. 128 (torch's bf16 GEMM there has no bf16 dot
// instructions); 256 leaves torch the large batches, where its GEMM with AMX
// or AVX512-BF16 (not measured here) should win. The generic unit's scalar
// dots keep the first kernel's crossover, 16. LLMPACK_DF11_DENSE_M overrides.
int64_t dense_crossover_m() {
  static const int64_t forced = [] {
    const char* v = std::getenv("LLMPACK_DF11_DENSE_M");
    return v && *v ? std::max<int64_t>(1, std::atoll(v)) : int64_t(0);
  }();
  if (forced) return forced;
  return &cpu() == &kCpuGeneric ? 16 : 256;
}

// df11_linear's checks of x and bias against the container (CPU and CUDA);
// returns K (x's last dim).
int64_t check_linear(const Tensor& x_in, const Container& c, int64_t n, const std::optional<Tensor>& bias_in,
                     const char* op) {
  check_cpu_or_cuda(x_in, op, "x");
  check_same_device(x_in, c.sm, op, "x", "sign_mantissa");
  check_dtype(x_in, {ScalarType::BFloat16}, op, "x");
  LLMPACK_CHECK(x_in.dim() >= 1, op, ": x must have at least 1 dim");
  const int64_t k = x_in.size(x_in.dim() - 1);
  LLMPACK_CHECK(n >= 0 && n * k == c.n, op, ": the compressed weight has ", c.n, " values, not out_features x K = ",
                n, " x ", k, " (x's last dim)");
  if (bias_in) {
    check_same_device(*bias_in, x_in, op, "bias", "x");
    check_dim(*bias_in, 1, op, "bias");
    check_dtype(*bias_in, {ScalarType::BFloat16}, op, "bias");
    LLMPACK_CHECK(bias_in->size(0) == n, op, ": bias must have ", n, " elements, got ", bias_in->size(0));
  }
  return k;
}

Tensor linear_cpu(Tensor x_in, Tensor lengths, Tensor stream, Tensor offsets, Tensor sm, int64_t out_features,
                  std::optional<Tensor> bias_in) {
  constexpr const char* op = "df11_linear";
  const Container c = check_container(lengths, stream, offsets, sm, op);
  const int64_t n = out_features, k = check_linear(x_in, c, n, bias_in, op);
  const Flat f = flatten_x(x_in, n);
  const Tensor& x = f.x2d;
  const int64_t m = f.m;
  const Lut lut = lut_for(c);
  if (m >= dense_crossover_m() && n > 0 && k > 0) {
    Tensor w = new_empty(c.sm, {n, k}, ScalarType::BFloat16);
    decode_into_cpu(c, lut, static_cast<uint16_t*>(w.mutable_data_ptr()), op);
    return f.unflatten(aten_linear(x, w, bias_in));
  }
  std::optional<Tensor> bias;
  if (bias_in) bias = dense(*bias_in);
  Tensor y = new_empty(x, {m, n}, ScalarType::BFloat16);
  int64_t bad = kNoError;
  LinearParams p{{c.host_lengths.data(), lut->data(), static_cast<const uint8_t*>(c.stream.const_data_ptr()),
                  static_cast<const uint32_t*>(c.offsets.const_data_ptr()),
                  static_cast<const uint8_t*>(c.sm.const_data_ptr()), nullptr, c.n, &bad},
                 static_cast<const uint16_t*>(x.const_data_ptr()),
                 bias ? static_cast<const uint16_t*>(bias->const_data_ptr()) : nullptr,
                 static_cast<uint16_t*>(y.mutable_data_ptr()), m, n, k};
  if (m > 0 && n > 0 && k > 0) cpu().linear(p);
  if (bad != kNoError) fail_bad_chunk(op, bad);
  return f.unflatten(y);
}

// ---------------------------------------------------------------- official layout

Tensor decode_official_op_cpu(Tensor luts_in, Tensor encoded_in, Tensor sm_in, Tensor positions_in, Tensor gaps_in,
                              int64_t bytes_per_thread, int64_t threads_per_block) {
  constexpr const char* op = "df11_decode_official";
  check_cpu_or_cuda(luts_in, op, "luts");
  LLMPACK_CHECK(luts_in.is_cpu(), op, ": the official layout is decoded on the CPU here (move the tensors to the CPU)");
  check_dim(luts_in, 2, op, "luts");
  check_dtype(luts_in, {ScalarType::Byte}, op, "luts");
  check_1d(encoded_in, ScalarType::Byte, op, "encoded_exponent");
  check_1d(sm_in, ScalarType::Byte, op, "sign_mantissa");
  check_1d(gaps_in, ScalarType::Byte, op, "gaps");
  check_cpu_or_cuda(positions_in, op, "output_positions");
  check_dim(positions_in, 1, op, "output_positions");
  check_dtype(positions_in, {ScalarType::Byte, ScalarType::UInt32, ScalarType::Int}, op, "output_positions");
  for (const Tensor* t : {&encoded_in, &sm_in, &gaps_in, &positions_in})
    LLMPACK_CHECK(t->is_cpu(), op, ": every tensor must be on the CPU");
  Tensor luts = dense(luts_in), encoded = dense(encoded_in), sm = dense(sm_in), gaps = dense(gaps_in);
  Tensor positions = dense(positions_in);
  LLMPACK_CHECK(luts.size(1) == 256 && luts.size(0) >= 2, op, ": luts must be [n_tables + 1, 256] with n_tables >= 1, got ",
                shape_str(luts));
  LLMPACK_CHECK(luts.size(0) <= 5, op, ": luts has ", luts.size(0) - 1, " tables; 32-bit codes need at most 4");
  LLMPACK_CHECK(bytes_per_thread >= 1 && bytes_per_thread <= 4096 && threads_per_block >= 1 &&
                    threads_per_block <= 1 << 20, op, ": bytes_per_thread / threads_per_block out of range (",
                bytes_per_thread, ", ", threads_per_block, ")");
  const uint8_t* lt = static_cast<const uint8_t*>(luts.const_data_ptr());
  const int64_t n_luts = luts.size(0);
  const uint8_t* lens = lt + (n_luts - 1) * 256;
  for (int s = 240; s < 256; ++s)
    LLMPACK_CHECK(lens[s] == 0, op, ": the code table lists exponent ", s,
                  ", which the official layout cannot represent (its tables read any value >= 240 as a pointer "
                  "to another table): this file's values with |x| >= 2^113, Inf or NaN would decode wrongly");
  const int64_t pos_count = positions.scalar_type() == ScalarType::Byte ? positions.numel() / 4 : positions.numel();
  LLMPACK_CHECK(positions.scalar_type() != ScalarType::Byte || positions.numel() % 4 == 0, op,
                ": output_positions (uint32 stored as uint8) must have a multiple of 4 bytes, got ", positions.numel());
  const int64_t n_bytes = encoded.numel(), n = sm.numel();
  const int64_t block_bytes = bytes_per_thread * threads_per_block;
  const int64_t n_blocks = (n_bytes + block_bytes - 1) / block_bytes;
  LLMPACK_CHECK(pos_count == n_blocks + 1, op, ": output_positions must have ", n_blocks + 1, " entries for ", n_bytes,
                " encoded bytes (one per block of ", block_bytes, " bytes, plus the end), got ", pos_count);
  // Copied out rather than cast: a uint8 view of the index may sit at any byte offset.
  std::vector<uint32_t> pos_copy(static_cast<size_t>(pos_count));
  std::memcpy(pos_copy.data(), positions.const_data_ptr(), size_t(pos_count) * sizeof(uint32_t));
  const uint32_t* pos = pos_copy.data();
  for (int64_t b = 0; b < n_blocks; ++b)
    LLMPACK_CHECK(pos[b + 1] >= pos[b], op, ": output_positions decrease at block ", b, ": corrupted index");
  LLMPACK_CHECK(pos[0] == 0 && int64_t(pos[n_blocks]) == n, op, ": output_positions must run from 0 to the ", n,
                " values of sign_mantissa, got ", pos[0], "..", pos[n_blocks]);
  LLMPACK_CHECK(gaps.numel() * 8 >= n_blocks * threads_per_block * 5, op, ": gaps must hold 5 bits for each of the ",
                n_blocks * threads_per_block, " threads, got ", gaps.numel(), " bytes");
  Tensor out = new_empty(sm, {n}, ScalarType::BFloat16);
  int64_t bad = kNoError;
  OfficialParams p{lt, n_luts, static_cast<const uint8_t*>(encoded.const_data_ptr()), n_bytes,
                   static_cast<const uint8_t*>(sm.const_data_ptr()), pos, n_blocks,
                   static_cast<const uint8_t*>(gaps.const_data_ptr()), gaps.numel(), bytes_per_thread,
                   threads_per_block, static_cast<uint16_t*>(out.mutable_data_ptr()), n, &bad};
  decode_official_cpu(p);
  LLMPACK_CHECK(bad == kNoError, op, ": corrupted stream or index in block ", bad, " (encoded bytes ", bad * block_bytes,
                "..", (bad + 1) * block_bytes - 1, "): a code, table pointer or thread gap does not match");
  return out;
}

// ---------------------------------------------------------------- CUDA

#if defined(LLMPACK_WITH_CUDA)
void decode_into_cuda(const Container& c, uint16_t* out, const char* op) {
  CudaContext ctx(c.sm);
  Tensor slot = error_slot(c.sm);
  check_launch(decode_cuda(static_cast<const uint8_t*>(c.lengths.const_data_ptr()),
                           static_cast<const uint8_t*>(c.stream.const_data_ptr()),
                           static_cast<const uint32_t*>(c.offsets.const_data_ptr()),
                           static_cast<const uint8_t*>(c.sm.const_data_ptr()), out, c.n,
                           static_cast<int64_t*>(slot.mutable_data_ptr()), ctx.stream),
               op);
  const int64_t bad = read_slot(slot);
  if (bad != kNoError) fail_bad_chunk(op, bad);
}

Tensor decode_op_cuda(Tensor lengths, Tensor stream, Tensor offsets, Tensor sm) {
  const Container c = check_container(lengths, stream, offsets, sm, "df11_decode");
  Tensor out = new_empty(c.sm, {c.n}, ScalarType::BFloat16);
  if (c.n > 0) decode_into_cuda(c, static_cast<uint16_t*>(out.mutable_data_ptr()), "df11_decode");
  return out;
}

void decode_into_op_cuda(Tensor lengths, Tensor stream, Tensor offsets, Tensor sm, Tensor out) {
  constexpr const char* op = "df11_decode_into";
  const Container c = check_container(lengths, stream, offsets, sm, op);
  check_out(out, c, op);
  if (c.n > 0) decode_into_cuda(c, static_cast<uint16_t*>(out.mutable_data_ptr()), op);
}

// Decode into a buffer just before use, then cuBLAS (the decode is cheap next
// to reading the weight: the paper's scheme on GPU).
Tensor linear_op_cuda(Tensor x_in, Tensor lengths, Tensor stream, Tensor offsets, Tensor sm, int64_t out_features,
                      std::optional<Tensor> bias) {
  constexpr const char* op = "df11_linear";
  const Container c = check_container(lengths, stream, offsets, sm, op);
  const int64_t n = out_features, k = check_linear(x_in, c, n, bias, op);
  Tensor w = new_empty(c.sm, {n, k}, ScalarType::BFloat16);
  if (c.n > 0) decode_into_cuda(c, static_cast<uint16_t*>(w.mutable_data_ptr()), op);
  return aten_linear(x_in, w, bias);
}
#endif

}  // namespace
}  // namespace llmpack::df11

#if defined(LLMPACK_WITH_CUDA)
LLMPACK_CUDA_IMPL(m) {
  m.impl("df11_decode", TORCH_BOX(&llmpack::df11::decode_op_cuda));
  m.impl("df11_decode_into", TORCH_BOX(&llmpack::df11::decode_into_op_cuda));
  m.impl("df11_linear", TORCH_BOX(&llmpack::df11::linear_op_cuda));
}
#endif

#if !defined(LLMPACK_SIMT_EMULATION)
LLMPACK_CPU_IMPL(m) {
  m.impl("df11_encode", TORCH_BOX(&llmpack::df11::encode_cpu));
  m.impl("df11_decode", TORCH_BOX(&llmpack::df11::decode_cpu));
  m.impl("df11_decode_into", TORCH_BOX(&llmpack::df11::decode_into_op_cpu));
  m.impl("df11_linear", TORCH_BOX(&llmpack::df11::linear_cpu));
  m.impl("df11_decode_official", TORCH_BOX(&llmpack::df11::decode_official_op_cpu));
}
#endif
