// DFloat11 host-side pieces that are not per-ISA: the length-limited code
// construction (package-merge), the chunk index, and the decoder of the
// official DFloat11 layout.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "common/parallel.h"
#include "df11/df11.h"

namespace llmpack::df11 {

// Package-merge (Larmore & Hirschberg 1990): the optimal prefix code with
// every length <= max_len. The coin collector's form: every symbol is a coin
// of weight = its count at each of max_len denominations; packages of two
// coins of the next finer denomination compete with the coins of each
// denomination; the 2n - 2 cheapest items of the last list decide, and a
// symbol's length is how many of them contain it. Ties are broken the same
// way in python/llmpack/reference/df11.py (leaves by (count, symbol); a leaf
// before a package of equal weight), so both give the same lengths.
void package_merge_lengths(const int64_t* counts, int max_len, uint8_t* lengths) {
  std::memset(lengths, 0, kSymbols);
  std::vector<int> leaves;
  for (int s = 0; s < kSymbols; ++s)
    if (counts[s] > 0) leaves.push_back(s);
  const int n = static_cast<int>(leaves.size());
  if (n == 0) return;
  if (n == 1) {
    lengths[leaves[0]] = 1;
    return;
  }
  std::stable_sort(leaves.begin(), leaves.end(), [&](int a, int b) { return counts[a] < counts[b]; });
  struct Item {
    int64_t weight;
    int leaf;   // symbol, or -1 for a package
    int a, b;   // a package's two items in the previous list
  };
  std::vector<std::vector<Item>> lists(max_len);
  for (int s : leaves) lists[0].push_back({counts[s], s, -1, -1});
  for (int level = 1; level < max_len; ++level) {
    const std::vector<Item>& prev = lists[level - 1];
    std::vector<Item> packages;
    for (size_t i = 0; i + 1 < prev.size(); i += 2)
      packages.push_back({prev[i].weight + prev[i + 1].weight, -1, int(i), int(i + 1)});
    std::vector<Item>& cur = lists[level];
    size_t i = 0, j = 0;
    while (i < leaves.size() || j < packages.size()) {
      const bool take_leaf = j == packages.size() ||
                             (i < leaves.size() && counts[leaves[i]] <= packages[j].weight);
      if (take_leaf) {
        cur.push_back({counts[leaves[i]], leaves[i], -1, -1});
        ++i;
      } else {
        cur.push_back(packages[j++]);
      }
    }
  }
  // Count each symbol's appearances in the 2n - 2 cheapest items of the last list.
  std::vector<std::pair<int, int>> todo;  // (level, index)
  for (int i = 0; i < 2 * n - 2; ++i) todo.push_back({max_len - 1, i});
  while (!todo.empty()) {
    const auto [level, idx] = todo.back();
    todo.pop_back();
    const Item& it = lists[level][idx];
    if (it.leaf >= 0) {
      lengths[it.leaf]++;
    } else {
      todo.push_back({level - 1, it.a});
      todo.push_back({level - 1, it.b});
    }
  }
}

void chunk_offsets(const uint8_t* exponents, int64_t n, const uint8_t* lengths, uint32_t* offsets) {
  const int64_t chunks = num_chunks(n);
  std::vector<int64_t> sizes(static_cast<size_t>(chunks));
  int64_t* size_of = sizes.data();
  parallel_for(0, chunks, grain_for(kChunk, 1 << 16), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t bits = 0;
      const int64_t e = std::min(n, (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < e; ++i) bits += lengths[exponents[i]];
      size_of[c] = (bits + 7) / 8;
    }
  });
  uint64_t off = 0;
  offsets[0] = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    off += uint64_t(sizes[size_t(c)]);
    offsets[c + 1] = static_cast<uint32_t>(off);  // the op checks the total fits 32 bits first
  }
}

// ------------------------------------------------------------------ official

namespace {

// 8 stream bits at bit `pos` (MSB-first); bytes past the end read as 0.
inline unsigned byte_at(const uint8_t* enc, int64_t n_bytes, int64_t pos) {
  const int64_t b = pos >> 3;
  const unsigned hi = b < n_bytes ? enc[b] : 0u, lo = b + 1 < n_bytes ? enc[b + 1] : 0u;
  return ((hi << 8 | lo) >> (8 - (pos & 7))) & 0xFFu;
}

inline unsigned gap_of(const uint8_t* gaps, int64_t n_gap_bytes, int64_t thread) {
  const int64_t bit = thread * 5, b = bit >> 3;
  const unsigned hi = b < n_gap_bytes ? gaps[b] : 0u, lo = b + 1 < n_gap_bytes ? gaps[b + 1] : 0u;
  return ((hi << 8 | lo) >> (11 - (bit & 7))) & 0x1Fu;
}

// One block: decode its values sequentially from its first thread's gap, and
// check every later thread's gap against where its first code really starts
// (the GPU kernel trusts them; an inconsistent index is an error here).
bool decode_official_block(const OfficialParams& p, int64_t blk) {
  const int64_t span_bits = p.bytes_per_thread * 8;
  const int64_t t0 = blk * p.threads_per_block;
  const int64_t out0 = p.output_positions[blk], out1 = std::min<int64_t>(p.output_positions[blk + 1], p.n);
  int64_t pos = t0 * span_bits + gap_of(p.gaps, p.n_gap_bytes, t0);
  const uint8_t* lens = p.luts + (p.n_luts - 1) * 256;
  int64_t checked_thread = t0;
  const int64_t end_bits = p.n_bytes * 8;
  for (int64_t i = out0; i < out1; ++i) {
    if (pos >= end_bits) return false;
    const int64_t thread = pos / span_bits;
    if (thread != checked_thread) {  // first code starting in a new thread's span
      if (thread < checked_thread || pos - thread * span_bits != gap_of(p.gaps, p.n_gap_bytes, thread)) return false;
      checked_thread = thread;
    }
    unsigned v = p.luts[byte_at(p.encoded, p.n_bytes, pos)];
    for (int level = 1; v >= 240; ++level) {
      const int64_t table = 256 - int64_t(v);
      if (level > 3 || table >= p.n_luts - 1) return false;  // codes are <= 32 bits: 4 levels
      v = p.luts[table * 256 + byte_at(p.encoded, p.n_bytes, pos + 8 * level)];
    }
    const unsigned len = lens[v];
    if (len == 0 || len > 32) return false;
    p.out[i] = combine(v, p.sm[i]);
    pos += len;
  }
  return true;
}

}  // namespace

void decode_official_cpu(const OfficialParams& p) {
  std::atomic<int64_t> bad{kNoError};
  parallel_for(0, p.n_blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      if (!decode_official_block(p, b)) {
        record_min(bad, b);
        return;
      }
  });
  *p.first_bad_block = bad.load();
}

}  // namespace llmpack::df11
