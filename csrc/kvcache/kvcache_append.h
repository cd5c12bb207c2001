// paged_kv_append: one decode step of PagedKVCache's bookkeeping. The step's
// rule is written once here, as host/device functions on raw pointers: the
// CPU op (kvcache_append.cpp) calls them in loops, the CUDA kernel
// (kvcache_append_cuda.cu) in threads. State: the tensors of kvcache.h's pool
// plus, per (sequence b, kv-head h) = row b * heads + h and slot t:
//   token_index   int64 [B, H, capacity]  which token (0, 1, ... in arrival order) slot t holds
//   rotation      int64 [B, H, capacity]  the position its key is rotated to
//   heavy_scores  fp32  [B, H, capacity]  H2O's accumulated attention
//   free_pages    int64 [F]   a stack: free_pages[0 .. num_free) are free, the top at num_free - 1
//   num_free      int64 [1]
//   seen          int64 [B]   tokens of sequence b seen so far (the next one's token index)
// and per sequence the policy: budget, sinks, recent (int64 [B]), heavy (bool [B]).
//
// The step, per row of a real token (real[b]; padding is not stored):
//   below its budget the token takes slot lengths[row] (popping a page from
//   the stack when that slot starts a page); at its budget it takes the slot
//   of the victim: among the used slots whose token is neither a sink
//   (token_index < sinks[b]) nor recent (token_index > seen[b] - recent[b]),
//   the lowest heavy_scores when heavy[b] (H2O), else the lowest token index
//   (the oldest); the first slot on ties, a NaN score lowest of all (a slot
//   whose attention is garbage goes first, instead of NaN making every
//   comparison false). Then its K / V rows, token index, rotation and a zeroed
//   score are written there, and seen[b] counts it.
// python/llmpack/reference/kvcache.py:paged_kv_append is the same rule in
// plain PyTorch; python/llmpack/kv/policy.py says why each policy is this rule.
//
// All-or-nothing, in three phases: (1) every row's slot is chosen, (2) one
// serial pass counts the pages the step needs and checks every table entry
// and popped page a write will go through, (3) the writes. When the stack
// holds fewer pages than the step needs, or a row would outgrow its block
// table, nothing is written and the status says how many pages are missing
// (pool shortfall + rows at the end of their tables): the caller grows the
// pool and tables, then calls again.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hostdevice.h"

namespace llmpack::kvcache {

struct AppendParams {
  void* k_pages;               // [P, S, D]
  void* v_pages;               // [P, S, D]
  int32_t* tables;             // [B, H, max_pages]
  int32_t* lengths;            // [B, H]
  int64_t* token_index;        // [B, H, capacity]
  int64_t* rotation;           // [B, H, capacity]
  float* heavy_scores;         // [B, H, capacity]
  const int64_t* free_pages;   // [stack_size]
  int64_t* num_free;           // [1]
  int64_t* seen;               // [B]
  const void* k;               // [B, H, D], the pool's dtype
  const void* v;               // [B, H, D]
  const int64_t* pos;          // [B]
  const bool* real;            // [B]
  const int64_t* budget;       // [B]
  const int64_t* sinks;        // [B]
  const int64_t* recent;       // [B]
  const bool* heavy;           // [B]
  int64_t* slot;               // out [B, H]: the slot each row's token went to, -1 for padding
  int64_t* page_of;            // scratch [B, H]: the page each row writes to (phase 2)
  int64_t batch, heads, row_bytes, pages, page_size, max_pages, stack_size;
};

// Errors, as one code whose lowest value is the error the serial order meets
// first (the CUDA kernel's threads atomicMin it); the detail is the stack
// index of a bad popped page. fail_append (kvcache_append.cpp) words
// them, once for both paths.
enum AppendError : int64_t { kBadNumFree = 0, kBadLength = 1, kNothingEvictable = 2, kBadTableEntry = 3,
                             kBadFreePage = 4 };
LLMPACK_HD int64_t append_error_code(int64_t kind, int64_t row, int64_t rows) {
  // num_free first, then phase 1 row by row (length, then victim), then phase 2 row by row.
  if (kind == kBadNumFree) return 0;
  if (kind <= kNothingEvictable) return 1 + row * 2 + (kind - kBadLength);
  return 1 + rows * 2 + row * 2 + (kind - kBadTableEntry);
}
LLMPACK_HD void append_error_decode(int64_t code, int64_t rows, int64_t& kind, int64_t& row) {
  if (code == 0) {
    kind = kBadNumFree, row = 0;
  } else if (code <= rows * 2) {
    kind = kBadLength + (code - 1) % 2, row = (code - 1) / 2;
  } else {
    kind = kBadTableEntry + (code - 1 - rows * 2) % 2, row = (code - 1 - rows * 2) / 2;
  }
}

LLMPACK_HD int64_t append_capacity(const AppendParams& p) { return p.max_pages * p.page_size; }

// Phase 0: the stack count itself.
LLMPACK_HD bool append_num_free_ok(const AppendParams& p) { return *p.num_free >= 0 && *p.num_free <= p.stack_size; }

// Phase 1 for one row: sets p.slot[row]; returns an error code or -1.
LLMPACK_HD int64_t append_choose_slot(const AppendParams& p, int64_t row) {
  const int64_t b = row / p.heads, cap = append_capacity(p), len = p.lengths[row];
  p.slot[row] = -1;
  if (len < 0 || len > cap) return append_error_code(kBadLength, row, p.batch * p.heads);
  if (!p.real[b]) return -1;
  if (len < p.budget[b]) {
    p.slot[row] = len;
    return -1;
  }
  const int64_t* tok = p.token_index + row * cap;
  const float* score = p.heavy_scores + row * cap;
  const int64_t newest_evictable = p.seen[b] - p.recent[b];
  int64_t best = -1;
  double best_prio = 0.0;
  for (int64_t s = 0; s < len; ++s) {
    if (tok[s] < p.sinks[b] || tok[s] > newest_evictable) continue;
    double prio = p.heavy[b] ? double(score[s]) : double(tok[s]);
    if (prio != prio) prio = -double(INFINITY);  // NaN: the lowest
    if (best < 0 || prio < best_prio) best = s, best_prio = prio;
  }
  if (best < 0) return append_error_code(kNothingEvictable, row, p.batch * p.heads);
  p.slot[row] = best;
  return -1;
}

// Phase 2, serial: the pages the step needs. Returns the status (> 0: pages
// missing, nothing may be written) and sets *error (-1 = none), *detail and
// *popped (the pages it takes off the stack); with status 0 and no error, p.page_of[row] is the page each row
// writes to.
LLMPACK_HD int64_t append_plan_pages(const AppendParams& p, int64_t* error, int64_t* detail, int64_t* popped) {
  const int64_t rows = p.batch * p.heads;
  int64_t new_pages = 0, missing = 0;
  *error = -1, *detail = 0, *popped = 0;
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t t = p.slot[row];
    if (t >= 0 && t == p.lengths[row] && t % p.page_size == 0) {
      ++new_pages;
      if (t / p.page_size >= p.max_pages) ++missing;  // the block table must grow first
    }
  }
  if (new_pages > *p.num_free || missing > 0) return (new_pages > *p.num_free ? new_pages - *p.num_free : 0) + missing;
  for (int64_t row = 0, top = *p.num_free; row < rows; ++row) {
    const int64_t t = p.slot[row];
    if (t < 0) continue;
    const bool fresh = t == p.lengths[row] && t % p.page_size == 0;
    const int64_t page = fresh ? p.free_pages[--top] : p.tables[row * p.max_pages + t / p.page_size];
    if (page < 0 || page >= p.pages) {
      *error = append_error_code(fresh ? kBadFreePage : kBadTableEntry, row, rows);
      *detail = fresh ? top : t / p.page_size;
      return 0;
    }
    p.page_of[row] = page;
  }
  *popped = new_pages;
  return 0;
}

// Phase 3 for one row: the writes (rows are independent once planned).
LLMPACK_HD void append_write_row(const AppendParams& p, int64_t row) {
  const int64_t t = p.slot[row], b = row / p.heads, cap = append_capacity(p);
  if (t < 0) return;
  if (t == p.lengths[row]) {
    if (t % p.page_size == 0) p.tables[row * p.max_pages + t / p.page_size] = static_cast<int32_t>(p.page_of[row]);
    p.lengths[row] = static_cast<int32_t>(t + 1);
  }
  const int64_t at = (p.page_of[row] * p.page_size + t % p.page_size) * p.row_bytes, from = row * p.row_bytes;
  // Two plain byte loops (a host compiler turns each into memcpy; rows need not be aligned).
  for (int64_t i = 0; i < p.row_bytes; ++i)
    static_cast<unsigned char*>(p.k_pages)[at + i] = static_cast<const unsigned char*>(p.k)[from + i];
  for (int64_t i = 0; i < p.row_bytes; ++i)
    static_cast<unsigned char*>(p.v_pages)[at + i] = static_cast<const unsigned char*>(p.v)[from + i];
  p.token_index[row * cap + t] = p.seen[b];
  p.rotation[row * cap + t] = p.pos[b];
  p.heavy_scores[row * cap + t] = 0.f;
}

// After every row is written: the popped pages leave the stack, seen counts the real tokens.
LLMPACK_HD void append_finish(const AppendParams& p, int64_t popped) {
  *p.num_free -= popped;
  for (int64_t b = 0; b < p.batch; ++b) p.seen[b] += p.real[b] ? 1 : 0;
}

#if defined(LLMPACK_WITH_CUDA) || defined(LLMPACK_SIMT_EMULATION)
// The step on `stream`: *error (device int64, preset to -1) gets the lowest
// error code, error[1] its detail; *status the missing pages. Returns the
// launch error (0 = ok).
int append_cuda(const AppendParams& p, int64_t* error, int64_t* status, void* stream);
#endif

}  // namespace llmpack::kvcache
