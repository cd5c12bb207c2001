// paged_kv_reposition: StreamingLLM's re-positioning after a decode step
// (the rule once, as host/device functions: the CPU op in
// kvcache_reposition.cpp runs them in loops, the CUDA kernels in
// kvcache_reposition_cuda.cu in threads).
//
// Why: transformers rotates every key to its absolute position before the
// cache sees it, and keeps counting positions after evictions. StreamingLLM
// wants the query to see each kept token at its distance *inside the cache*
// (rank by token order). RoPE by a position delta composes, so a kept key is
// re-rotated from an fp32 copy of its first rotation (k_orig, orig_rotation:
// no error builds up over thousands of steps, whatever the pool's dtype).
// In steady state only the sinks move: the recent window is already at
// distance 1, 2, ... behind the query.
//
// State, besides the pool of kvcache.h and the tensors of kvcache_append.h
// (token_index, rotation), per (sequence b, kv-head h) = row and slot t:
//   k_orig         fp32  [B, H, capacity, D]  the key as first stored (rotated to orig_rotation)
//   orig_rotation  int64 [B, H, capacity]
// Inputs of the step: slot int64 [B, H] (paged_kv_append's result, -1 = none),
// k fp32 [B, H, D] (the keys it stored), pos int64 [B] (the query's = the new
// key's position), reposition bool [B] (the rows to work on; others are not
// read), inv_freq fp32 [R / 2] (RoPE's frequencies; the first R <= D
// elements of a key rotate in the rotate-half pairing, the rest don't).
//
// Per row of a re-positioning sequence, after the checks of every such row:
//   1. record: k_orig[slot] = k, orig_rotation[slot] = pos (slot >= 0);
//   2. each used slot s < n = lengths[row] gets rank r = the number of used
//      slots that precede it by (token_index, slot), and target position
//      pos - (n - 1 - r); when that differs from rotation[s], the key is
//      rotate_by(k_orig[s], target - orig_rotation[s]) stored in the pool's
//      dtype, and rotation[s] = target.
// Position arithmetic wraps (two's complement) instead of overflowing: a
// garbage position gives a garbage key, never undefined behaviour.
// python/llmpack/reference/kvcache.py:paged_kv_reposition is the oracle.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hostdevice.h"
#include "kvcache/kvcache.h"

namespace llmpack::kvcache {

struct RepositionParams {
  void* k_pages;                 // [P, S, D], dtype
  const int32_t* tables;         // [B, H, max_pages]
  const int32_t* lengths;        // [B, H]
  const int64_t* token_index;    // [B, H, capacity]
  int64_t* rotation;             // [B, H, capacity]
  float* k_orig;                 // [B, H, capacity, D]
  int64_t* orig_rotation;        // [B, H, capacity]
  const int64_t* slot;           // [B, H]
  const float* k;                // [B, H, D]
  const int64_t* pos;            // [B]
  const bool* reposition;        // [B]
  const float* inv_freq;         // [half_rot]
  int64_t batch, heads, head_dim, pages, page_size, max_pages, half_rot;
  Dtype dtype;
};

// Errors as one code ordered like the serial walk (row by row: its length,
// its slot, then its pages in order), so the CUDA check kernel's atomicMin
// reports the error the CPU path meets first; the page index rides in the code.
enum RepositionError : int64_t { kReposBadLength = 0, kReposBadSlot = 1, kReposBadTableEntry = 2 };
LLMPACK_HD int64_t reposition_error_code(const RepositionParams& p, int64_t row, int64_t kind, int64_t page) {
  return (row * 3 + kind) * (p.max_pages + 1) + page;
}
LLMPACK_HD void reposition_error_decode(const RepositionParams& p, int64_t code, int64_t& row, int64_t& kind,
                                        int64_t& page) {
  page = code % (p.max_pages + 1);
  kind = code / (p.max_pages + 1) % 3;
  row = code / (p.max_pages + 1) / 3;
}

LLMPACK_HD int64_t reposition_capacity(const RepositionParams& p) { return p.max_pages * p.page_size; }
LLMPACK_HD int64_t wrapping_sub(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) - static_cast<uint64_t>(b));
}

// The checks of one row (nothing is written until every row passed): an
// error code, or -1. Rows that don't re-position are not read.
LLMPACK_HD int64_t reposition_check_row(const RepositionParams& p, int64_t row) {
  if (!p.reposition[row / p.heads]) return -1;
  const int64_t n = p.lengths[row], t = p.slot[row];
  if (n < 0 || n > reposition_capacity(p)) return reposition_error_code(p, row, kReposBadLength, 0);
  if (t < -1 || t >= n) return reposition_error_code(p, row, kReposBadSlot, 0);
  for (int64_t page = 0; page * p.page_size < n; ++page) {
    const int32_t e = p.tables[row * p.max_pages + page];
    if (e < 0 || e >= p.pages) return reposition_error_code(p, row, kReposBadTableEntry, page);
  }
  return -1;
}

// Step 1 for one row: element i of the new key's fp32 copy (i < head_dim).
LLMPACK_HD void reposition_record(const RepositionParams& p, int64_t row, int64_t i) {
  const int64_t t = p.slot[row];
  if (!p.reposition[row / p.heads] || t < 0) return;
  p.k_orig[(row * reposition_capacity(p) + t) * p.head_dim + i] = p.k[row * p.head_dim + i];
  if (i == 0) p.orig_rotation[row * reposition_capacity(p) + t] = p.pos[row / p.heads];
}

// The order that ranks a row's used slots: by token index, then by slot (a
// total order even on a state with repeated token indices).
LLMPACK_HD bool reposition_precedes(const int64_t* tok, int64_t a, int64_t b) {
  return tok[a] < tok[b] || (tok[a] == tok[b] && a < b);
}

// Step 2 for slot s of a row, whose rank is r: re-rotates it when its target
// position moved. store(pool element index, value) writes in the pool's dtype.
template <class Store>
LLMPACK_HD void reposition_slot(const RepositionParams& p, int64_t row, int64_t s, int64_t r, Store store) {
  const int64_t cap = reposition_capacity(p), n = p.lengths[row];
  const int64_t target = wrapping_sub(p.pos[row / p.heads], n - 1 - r);
  int64_t& rot = p.rotation[row * cap + s];
  if (target == rot) return;
  rot = target;
  const float delta = static_cast<float>(wrapping_sub(target, p.orig_rotation[row * cap + s]));
  const float* x = p.k_orig + (row * cap + s) * p.head_dim;
  const int64_t base = (static_cast<int64_t>(p.tables[row * p.max_pages + s / p.page_size]) * p.page_size +
                        s % p.page_size) * p.head_dim;
  const int64_t h = p.half_rot;
  for (int64_t i = 0; i < h; ++i) {
    const float angle = delta * p.inv_freq[i], c = cosf(angle), sn = sinf(angle);
    store(base + i, x[i] * c - x[i + h] * sn);
    store(base + i + h, x[i + h] * c + x[i] * sn);
  }
  for (int64_t i = 2 * h; i < p.head_dim; ++i) store(base + i, x[i]);
}

#if defined(LLMPACK_WITH_CUDA) || defined(LLMPACK_SIMT_EMULATION)
// The step on `stream`: *error (device int64, preset to -1) gets the lowest
// error code and nothing is written then. Returns the launch error (0 = ok).
int reposition_cuda(const RepositionParams& p, int64_t* error, void* stream);
#endif

}  // namespace llmpack::kvcache
