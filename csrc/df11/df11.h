// DFloat11: lossless BF16 compression. Layout, limits, kernel parameters and
// the code-table helpers shared by the encoder, the CPU decoders, the CUDA
// kernel, the SIMT emulator and (mirrored) python/llmpack/reference/df11.py.
//
// A bf16 value is sign (1) | exponent (8) | mantissa (7). Trained weights use
// few exponents (entropy ~2.6 bits), so the exponent is Huffman coded and
// sign + mantissa are kept raw: ~11 bits per value, bit-exact.
//
// Container for n bf16 values (a tensor of any shape, flattened row-major):
//   lengths  uint8 [256]      code length of exponent e (0: e does not occur).
//                             1 <= length <= kMaxCodeLen; sum of 2^-length <= 1.
//   stream   uint8 [S + 16]   the exponent codes. The values are cut into
//                             chunks of kChunk (the last may be shorter);
//                             chunk c's codes start at byte offsets[c], in
//                             element order, LSB-first (bit i of the stream is
//                             bit i % 8 of byte i / 8; a code's first bit is its
//                             most significant), and end within its bytes
//                             [offsets[c], offsets[c + 1]) (the last byte is
//                             zero-padded). S = offsets[nchunks]; the 16 zero
//                             bytes after it let decoders read 64 bits up to
//                             44 bits past any chunk's end (they check bounds
//                             once per 4 table lookups, not per lookup).
//   offsets  uint32 [nchunks + 1], nondecreasing, offsets[0] = 0.
//   sm       uint8 [n]        (sign << 7) | mantissa of each value.
// The code is the canonical one for `lengths`: codes are assigned in order of
// (length, exponent), so `lengths` alone defines it. The length limit is
// enforced by package-merge (Larmore & Hirschberg), the optimal code with
// every length <= kMaxCodeLen (df11_codes.cpp), not by flattening frequencies.
// Index cost: 4 bytes per kChunk values (0.1 % of the bf16 bytes) plus <= 7
// padding bits per chunk.
//
// Decoding is table driven: the next kLutBits bits of the stream index a
// table whose entry holds up to 4 whole exponents those bits start with and
// the bits they take (kMaxCodeLen == kLutBits, so every code fits one lookup).
// The limit is 11 bits, not more, so that the CPU table (2048 entries of 8
// bytes) stays in L1 next to the decoders' buffers. Against a 12-bit limit
// it costs all-MiniLM-L6-v2's tensors at most 0.007 bits per value (0.04 %
// of the bf16 bytes); it made the CPU decoder ~1.4x faster (paired runs).
// Chunks decode independently: the CPU decoders run chunks in parallel, the
// CUDA kernel one chunk per thread.
#pragma once

#include <cstdint>

#include "common/hostdevice.h"

namespace llmpack::df11 {

constexpr int kChunk = 2048;      // values per independently decodable chunk
constexpr int kMaxCodeLen = 11;   // longest exponent code
constexpr int kLutBits = 11;      // bits per table lookup
constexpr int kLutSize = 1 << kLutBits;
constexpr int kGuardBytes = 16;   // zero bytes after the stream
constexpr int kSymbols = 256;

LLMPACK_HD int64_t num_chunks(int64_t n) { return (n + kChunk - 1) / kChunk; }

// A CPU table entry: exponents s0..s3 in bytes 0..3 (s0 first in the
// stream), then their count in bits 32..47 and the bits they take in bits
// 48..63. Bits 32..63 are thus, as one number, `bits << 16 | count`: the
// decoders keep a chunk's state as `bit position << 16 | values done` and
// advance it with one add. Bits that start no valid code (a corrupted
// stream) get count kBadCount and 0 bits: the values-done field overshoots
// the chunk, which the decoders check once per round.
constexpr unsigned kLutMaxSymbols = 4;
constexpr unsigned kBadCount = 0x1000;
LLMPACK_HD uint64_t lut_entry(const unsigned* syms, unsigned count, unsigned bits) {
  uint64_t e = 0;
  for (unsigned i = 0; i < count; ++i) e |= uint64_t(syms[i]) << (8 * i);
  return e | uint64_t(count ? count : kBadCount) << 32 | uint64_t(bits) << 48;
}
LLMPACK_HD unsigned lut_count(uint64_t e) { return static_cast<unsigned>(e >> 32) & 0xFFFF; }
LLMPACK_HD bool lut_valid(uint64_t e) { return lut_count(e) != kBadCount; }
LLMPACK_HD unsigned lut_bits(uint64_t e) { return static_cast<unsigned>(e >> 48); }
LLMPACK_HD unsigned lut_symbol(uint64_t e, int i) { return (e >> (8 * i)) & 0xFF; }

// bf16 bits from an exponent and its sign+mantissa byte.
LLMPACK_HD uint16_t combine(unsigned exponent, unsigned sm) {
  return static_cast<uint16_t>(((sm & 0x80u) << 8) | (exponent << 7) | (sm & 0x7Fu));
}

// Reverses the low `len` bits of v (codes are stored first bit first, LSB-first).
LLMPACK_HD uint32_t reverse_bits(uint32_t v, int len) {
  uint32_t r = 0;
  for (int i = 0; i < len; ++i) r |= ((v >> i) & 1u) << (len - 1 - i);
  return r;
}

// The canonical code of `lengths`, as stored: code[s] is symbol s's code with
// its first bit in bit 0. Returns false when the lengths are not a valid
// prefix code (a length above kMaxCodeLen, or Kraft sum > 1). An empty or
// incomplete code is valid here; patterns it does not cover decode as errors.
LLMPACK_HD bool canonical_codes(const uint8_t* lengths, uint32_t* code) {
  int count[kMaxCodeLen + 1] = {0};
  for (int s = 0; s < kSymbols; ++s) {
    if (lengths[s] > kMaxCodeLen) return false;
    count[lengths[s]]++;
  }
  uint32_t next[kMaxCodeLen + 2] = {0};
  uint32_t c = 0;
  int64_t kraft = 0;  // in units of 2^-kMaxCodeLen
  for (int len = 1; len <= kMaxCodeLen; ++len) {
    c = (c + count[len - 1] * (len > 1 ? 1u : 0u)) << 1;
    next[len] = c;
    kraft += int64_t(count[len]) << (kMaxCodeLen - len);
  }
  if (kraft > (int64_t(1) << kMaxCodeLen)) return false;
  for (int s = 0; s < kSymbols; ++s) {
    const int len = lengths[s];
    code[s] = len ? reverse_bits(next[len]++, len) : 0;
  }
  return true;
}

// Single-symbol table: first[idx] = symbol | length << 8 for the code that
// the low bits of idx start with, 0 where none does (lengths must pass
// canonical_codes). Symbols [s_begin, s_end) with stride: the CUDA kernel's
// threads split the work; a symbol owns every index its code prefixes.
LLMPACK_HD void fill_single_table(const uint8_t* lengths, const uint32_t* code, uint16_t* first, int s_begin,
                                  int s_end, int stride) {
  for (int s = s_begin; s < s_end; s += stride) {
    const int len = lengths[s];
    if (!len) continue;
    for (uint32_t j = 0; j < (1u << (kLutBits - len)); ++j)
      first[code[s] | (j << len)] = static_cast<uint16_t>(s | (len << 8));
  }
}

// Multi-symbol entries [begin, end) from the single-symbol table: after the
// first code's bits, the same table tells the next code, as long as it ends
// within the kLutBits bits the entry stands for.
LLMPACK_HD void build_lut_range(const uint16_t* first, uint64_t* lut, int begin, int end, int stride) {
  for (int idx = begin; idx < end; idx += stride) {
    unsigned syms[kLutMaxSymbols] = {0, 0, 0, 0}, count = 0, used = 0;
    while (count < kLutMaxSymbols) {
      const uint16_t f = first[(unsigned(idx) >> used) & (kLutSize - 1)];
      const unsigned len = f >> 8;
      if (!len || used + len > unsigned(kLutBits)) break;
      syms[count++] = f & 0xFF;
      used += len;
    }
    lut[idx] = lut_entry(syms, count, used);
  }
}

// 64 stream bits starting at bit `pos` (LSB-first), from a stream that has
// kGuardBytes readable bytes past every position the decoders reach.
LLMPACK_HD uint64_t peek64(const uint8_t* stream, uint64_t pos) {
  uint64_t w = 0;
  const uint8_t* p = stream + (pos >> 3);
  for (int i = 0; i < 8; ++i) w |= uint64_t(p[i]) << (8 * i);
  return w >> (pos & 7);
}

constexpr int64_t kNoError = INT64_MAX;

// Encoding of n values (bf16 bits): counts -> lengths (package-merge) ->
// stream. Two passes so chunks are written in parallel at known offsets.
struct EncodeParams {
  const uint16_t* w;   // [n] bf16 bits
  int64_t n;
  uint8_t* sm;         // [n]
  uint8_t* exponents;  // [n] scratch: the exponent bytes
};

// Decoding of a container (layout above) into out[n] (bf16 bits).
struct DecodeParams {
  const uint8_t* lengths;  // [256]
  const uint64_t* lut;     // [kLutSize], from build_lut_range (CPU)
  const uint8_t* stream;   // [offsets[nchunks] + kGuardBytes]
  const uint32_t* offsets; // [nchunks + 1], validated nondecreasing and in range
  const uint8_t* sm;       // [n]
  uint16_t* out;           // [n]
  int64_t n;
  // Out: lowest chunk whose bits do not decode to exactly its values inside
  // its bytes (a corrupted stream), or kNoError.
  int64_t* first_bad_chunk;
};

// Fused decode + linear: y[m, N] = x[m, K] @ W^T (+ bias), W [N, K] bf16 held
// as a container; decoded a tile of rows at a time into per-thread buffers.
struct LinearParams {
  DecodeParams w;          // w.out unused (per-thread tiles); w.n == N * K
  const uint16_t* x;       // [m, k] bf16 bits
  const uint16_t* bias;    // [n] bf16 bits or nullptr
  uint16_t* y;             // [m, n] bf16 bits
  int64_t m, n, k;
};

// The official DFloat11 layout (PyPI dfloat11 0.5, LeanModels/DFloat11): see
// df11_official.cpp for the format, python/llmpack/reference/df11.py for a
// model of its GPU kernel.
struct OfficialParams {
  const uint8_t* luts;             // [n_luts, 256]: n_luts - 1 lookup tables + code lengths
  int64_t n_luts;
  const uint8_t* encoded;          // [n_bytes] MSB-first
  int64_t n_bytes;
  const uint8_t* sm;               // [n]
  const uint32_t* output_positions;// [n_blocks + 1]
  int64_t n_blocks;
  const uint8_t* gaps;             // 5 bits per thread, MSB-first
  int64_t n_gap_bytes;
  int64_t bytes_per_thread, threads_per_block;
  uint16_t* out;                   // [n]
  int64_t n;
  int64_t* first_bad_block;        // out: lowest block that does not decode consistently
};

struct CpuKernels {
  void (*histogram)(const uint16_t* w, int64_t n, uint8_t* sm, uint8_t* exponents, int64_t* counts);
  void (*encode)(const uint8_t* exponents, int64_t n, const uint8_t* lengths, const uint32_t* code,
                 const uint32_t* offsets, uint8_t* stream);
  void (*decode)(const DecodeParams&);
  void (*linear)(const LinearParams&);
};
extern const CpuKernels kCpuGeneric, kCpuAvx2, kCpuAvx512;

// Host side helpers (df11_codes.cpp).
// Optimal code lengths with every length <= max_len for the counts of the
// 256 exponents (a symbol with count 0 gets length 0); a single symbol gets 1.
void package_merge_lengths(const int64_t* counts, int max_len, uint8_t* lengths);
// Byte size of each chunk's codes: offsets[c + 1] - offsets[c].
void chunk_offsets(const uint8_t* exponents, int64_t n, const uint8_t* lengths, uint32_t* offsets);
// Decodes the official layout on the CPU (parallel over its blocks).
void decode_official_cpu(const OfficialParams& p);

#if defined(LLMPACK_WITH_CUDA) || defined(LLMPACK_SIMT_EMULATION)
// CUDA decode of our layout: one thread per chunk, the table built in shared
// memory by each block. Returns the launch error (0 = ok); the first bad
// chunk goes to *bad_chunk (device int64, preset to -1 = none).
int decode_cuda(const uint8_t* lengths, const uint8_t* stream, const uint32_t* offsets, const uint8_t* sm,
                uint16_t* out, int64_t n, int64_t* bad_chunk, void* stream_handle);
#endif

}  // namespace llmpack::df11
