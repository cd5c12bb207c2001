// The one schema registry: every llmpack op is defined here, once. Kernel
// families register their CPU / CUDA implementations in csrc/<family>/*_ops.cpp;
// fake (meta) implementations live in python/llmpack/_ops.py. (LLMPACK_LIBRARY
// is torch.ops.llmpack, or llmpack_simt in the emulator build: registration.h.)
#include "common/registration.h"

LLMPACK_LIBRARY(m) {
  // 2:4 pack: W [N, K] (K % 4 == 0) -> (values [N, K/2], meta uint8 [N, ceil(K/8)]); layout in csrc/sparse24/sparse24.h.
  m.def("sparse24_compress(Tensor W) -> (Tensor values, Tensor meta)");
  // 2:4 unpack: exact inverse of sparse24_compress (dropped entries come back as +0).
  m.def("sparse24_decompress(Tensor values, Tensor meta) -> Tensor");
  // y [..., N] = x [..., K] @ W^T + bias with W given packed as (values, meta); fp32 accumulation.
  m.def("sparse24_linear(Tensor x, Tensor values, Tensor meta, Tensor? bias=None) -> Tensor");
  // 2:4 meta [N, ceil(K/8)] -> flat uint8 [round_up(N, 32) * round_up(ceil(K/8), 4)] in CUTLASS's sm80
  // sparse-GEMM metadata layout (zero-padded, validated); layout in csrc/sparse24/sparse24_reorder.h.
  m.def("sparse24_meta_to_cutlass(Tensor meta) -> Tensor");
  // DFloat11 encode: W (bf16, any shape) -> (lengths uint8 [256], stream uint8, offsets uint32 [chunks + 1],
  // sign_mantissa uint8 [numel]); lossless; layout in csrc/df11/df11.h.
  m.def("df11_encode(Tensor W) -> (Tensor lengths, Tensor stream, Tensor offsets, Tensor sign_mantissa)");
  // DFloat11 decode of a container into a new flat bf16 tensor [numel] (bit-exact inverse of df11_encode).
  m.def("df11_decode(Tensor lengths, Tensor stream, Tensor offsets, Tensor sign_mantissa) -> Tensor");
  // The same, into a caller-provided contiguous bf16 buffer of numel elements (any shape).
  m.def("df11_decode_into(Tensor lengths, Tensor stream, Tensor offsets, Tensor sign_mantissa, Tensor(a!) out) -> ()");
  // y [..., N] = x [..., K] @ W^T + bias, W [N, K] bf16 held as a DFloat11 container, decoded tile by tile.
  m.def("df11_linear(Tensor x, Tensor lengths, Tensor stream, Tensor offsets, Tensor sign_mantissa, int out_features, "
        "Tensor? bias=None) -> Tensor");
  // Decode the official DFloat11 layout (PyPI dfloat11 0.5: luts, encoded_exponent, sign_mantissa,
  // output_positions, gaps) into a flat bf16 tensor; validated, bit-exact.
  m.def("df11_decode_official(Tensor luts, Tensor encoded_exponent, Tensor sign_mantissa, Tensor output_positions, "
        "Tensor gaps, int bytes_per_thread, int threads_per_block) -> Tensor");
  // Decode attention over a paged KV cache (one query token per sequence, GQA): out [B, Hq, D] =
  // softmax(q k^T * scale) v over each (sequence, kv-head)'s used slots; with return_scores, scores fp32
  // [B, Hkv, max_pages * page_size] = each slot's probability summed over its query heads (H2O's input).
  // Layout in csrc/kvcache/kvcache.h.
  m.def("paged_decode_attention(Tensor q, Tensor k_pages, Tensor v_pages, Tensor block_tables, Tensor lengths, "
        "float scale, bool return_scores=False) -> (Tensor out, Tensor scores)");
  // One decode step of PagedKVCache's bookkeeping (CPU and CUDA): per (sequence, kv-head) of a real token, the slot
  // it takes (the next one below the budget, popping a free page when it starts a page; else the policy's
  // victim: lowest heavy_scores (H2O) or oldest token, sinks and the recent window excluded), its K / V rows,
  // token index, rotation and a zeroed score written there; lengths, tables, num_free and seen updated.
  // Returns (slot int64 [B, Hkv], -1 = padding; status int64 [1]: 0, or how many free pages / table
  // pages are missing, with nothing written). Rule and layout in csrc/kvcache/kvcache_append.h.
  m.def("paged_kv_append(Tensor(a!) k_pages, Tensor(b!) v_pages, Tensor(c!) block_tables, Tensor(d!) lengths, "
        "Tensor(e!) token_index, Tensor(f!) rotation, Tensor(g!) heavy_scores, Tensor free_pages, "
        "Tensor(h!) num_free, Tensor(i!) seen, Tensor k, Tensor v, Tensor pos, Tensor real, Tensor budget, "
        "Tensor sinks, Tensor recent, Tensor heavy) -> (Tensor slot, Tensor status)");
  // StreamingLLM's re-positioning after a decode step (CPU and CUDA): per (sequence, kv-head) of a sequence with
  // reposition[b], records the new key k fp32 [B, Hkv, D] at its slot (paged_kv_append's result, -1 = none) in
  // k_orig / orig_rotation, then re-rotates (RoPE, rotate-half, inv_freq fp32 [R / 2]) every used slot whose
  // position inside the cache, pos[b] - (later kept tokens), differs from its rotation. Rule and layout in
  // csrc/kvcache/kvcache_reposition.h.
  m.def("paged_kv_reposition(Tensor(a!) k_pages, Tensor block_tables, Tensor lengths, Tensor token_index, "
        "Tensor(b!) rotation, Tensor(c!) k_orig, Tensor(d!) orig_rotation, Tensor slot, Tensor k, Tensor pos, "
        "Tensor reposition, Tensor inv_freq) -> ()");
  // BTC weight packer: codes uint8 [N, K] (each < 2^wbits) -> (planes int32 [N, k_words(K), wbits],
  // code_sums int32 [N, groups]); bit-plane layout in csrc/btc/btc.h.
  m.def("btc_pack(Tensor codes, int wbits, int group_size) -> (Tensor planes, Tensor code_sums)");
  // Inverse of btc_pack's planes -> codes uint8 [N, in_features]; set padding bits are an error (corruption).
  m.def("btc_unpack(Tensor planes, int wbits, int in_features) -> Tensor");
  // Planes int32 [N, k_words, wbits] <-> the CPU kernels' fields layout uint8 [N, k_words, 4 wbits]
  // (csrc/btc/btc.h): the same bytes, each chunk's codes in 4/2/1-bit fields; btc_linear reads either on CPU.
  m.def("btc_to_fields(Tensor planes, int wbits) -> Tensor");
  m.def("btc_to_planes(Tensor fields, int wbits) -> Tensor");
  // Per-token activation quantizer: x [..., K] float -> (planes int32 [M, k_words(K), abits], scales fp32 [M],
  // zeros int32 [M], code_sums int32 [M, groups]); the rule is in csrc/btc/btc.h.
  m.def("btc_quantize_activations(Tensor x, int abits, int group_size, bool symmetric=False) -> "
        "(Tensor planes, Tensor scales, Tensor zeros, Tensor code_sums)");
  // The exact integer core (test-facing): I int32 [M, N, groups] = per-group sum of q * p over K = in_features.
  m.def("btc_matmul_int(Tensor x_planes, Tensor w_planes, int abits, int wbits, int group_size, int in_features) "
        "-> Tensor");
  // y [..., N] = x [..., K] @ W^T + bias with W packed as (planes, scales, zeros | offsets, code_sums)
  // (planes may be btc_to_fields' uint8 layout on CPU); x quantized per token to abits (1..8), or kept float (abits = 16: weight-only); fp32 accumulation.
  // scaled_sums fp32 [N] (optional, from btc_scaled_sums): sum_g scales * code_sums per row, which the CPU
  // kernels otherwise form per call; trusted like code_sums (QuantLinear derives and caches it).
  m.def("btc_linear(Tensor x, Tensor planes, Tensor scales, Tensor? zeros, Tensor? offsets, Tensor code_sums, "
        "int wbits, int abits, int group_size, Tensor? bias=None, bool act_symmetric=False, "
        "Tensor? scaled_sums=None) -> Tensor");
#if defined(LLMPACK_SIMT_EMULATION)
  // Test-only (emulator build): the CUTLASS path's transpose+bias kernel, y [m, N] = d[:, :m]^T (+ bias).
  m.def("_transpose_bias(Tensor d, Tensor? bias, int m) -> Tensor");
#endif
}
