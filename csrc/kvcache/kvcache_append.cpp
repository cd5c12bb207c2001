// paged_kv_append: one decode step of the paged cache's bookkeeping in one
// call (CPU). Per (sequence b, kv-head h) of a real token: below its budget
// the token takes slot lengths[b, h] (popping a page from the free stack when
// that slot starts a page); at its budget it takes the slot of the victim the
// policy picks (below); then its K / V rows, token index, rotation position
// and a zeroed heavy-hitter score are written there. Padding tokens (real[b]
// false) are not stored.
//
// Victim of (b, h): among the used slots s whose token is neither a sink
// (token_index < sinks[b]) nor in the recent window (token_index >
// seen[b] - recent[b]), the lowest heavy_scores[b, h, s] when heavy[b] (H2O)
// or the lowest token index otherwise (the oldest); the first slot on ties,
// a NaN score lowest of all.
// python/llmpack/reference/kvcache.py:paged_kv_append is the same rule in
// plain PyTorch, and python/llmpack/kv/policy.py says why each policy is
// this rule with its own budget / sinks / recent.
//
// All-or-nothing: every slot is chosen and every table entry and free page is
// checked before anything is written. When the free stack holds fewer pages
// than the step needs, or a row would outgrow its block table, nothing is
// written and status[0] says how many pages are missing (the caller grows the
// pool and tables, then calls again); otherwise status[0] = 0.
//
// Why an op: the same step as ~60 small tensor ops cost ~0.6 ms per layer
// per token in eager PyTorch (SmolLM2, 30 layers: ~18 % of a decode step);
// the work itself is a few hundred bytes per kv-head.
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#include "common/registration.h"
#include "common/torch_utils.h"

namespace llmpack::kvcache {
namespace {

constexpr const char* kOp = "paged_kv_append";

struct Step {
  int64_t batch, heads, head_dim, pages, page_size, max_pages, capacity;
};

Step check_append_args(const Tensor& k_pages, const Tensor& v_pages, const Tensor& tables, const Tensor& lengths,
                       const Tensor& token_index, const Tensor& rotation, const Tensor& heavy_scores,
                       const Tensor& free_pages, const Tensor& num_free, const Tensor& seen, const Tensor& k,
                       const Tensor& v, const Tensor& pos, const Tensor& real, const Tensor& budget,
                       const Tensor& sinks, const Tensor& recent, const Tensor& heavy) {
  const std::pair<const Tensor*, const char*> all[] = {
      {&k_pages, "k_pages"}, {&v_pages, "v_pages"}, {&tables, "block_tables"}, {&lengths, "lengths"},
      {&token_index, "token_index"}, {&rotation, "rotation"}, {&heavy_scores, "heavy_scores"},
      {&free_pages, "free_pages"}, {&num_free, "num_free"}, {&seen, "seen"}, {&k, "k"}, {&v, "v"},
      {&pos, "pos"}, {&real, "real"}, {&budget, "budget"}, {&sinks, "sinks"}, {&recent, "recent"},
      {&heavy, "heavy"}};
  for (const auto& [t, name] : all) {
    LLMPACK_CHECK(t->is_cpu(), kOp, ": ", name, " must be a CPU tensor (the op is the CPU path of "
                  "PagedKVCache's bookkeeping)");
    // Mutated in place, so no contiguous copy may stand in for them; the read-only ones must be dense too
    // (they are the cache's own tensors).
    LLMPACK_CHECK(t->is_contiguous(), kOp, ": ", name, " must be contiguous");
  }
  check_dim(k_pages, 3, kOp, "k_pages");
  check_dim(tables, 3, kOp, "block_tables");
  check_dim(k, 3, kOp, "k");
  check_dtype(k_pages, {ScalarType::Float, ScalarType::BFloat16, ScalarType::Half}, kOp, "k_pages");
  LLMPACK_CHECK(v_pages.scalar_type() == k_pages.scalar_type() && k.scalar_type() == k_pages.scalar_type() &&
                    v.scalar_type() == k_pages.scalar_type(),
                kOp, ": k_pages, v_pages, k and v must have one dtype, got ", dtype_name(k_pages.scalar_type()), ", ",
                dtype_name(v_pages.scalar_type()), ", ", dtype_name(k.scalar_type()), ", ",
                dtype_name(v.scalar_type()));
  check_dtype(tables, {ScalarType::Int}, kOp, "block_tables");
  check_dtype(lengths, {ScalarType::Int}, kOp, "lengths");
  check_dtype(heavy_scores, {ScalarType::Float}, kOp, "heavy_scores");
  check_dtype(real, {ScalarType::Bool}, kOp, "real");
  check_dtype(heavy, {ScalarType::Bool}, kOp, "heavy");
  for (const auto& [t, name] : {std::pair{&token_index, "token_index"}, {&rotation, "rotation"},
                                {&free_pages, "free_pages"}, {&num_free, "num_free"}, {&seen, "seen"},
                                {&pos, "pos"}, {&budget, "budget"}, {&sinks, "sinks"}, {&recent, "recent"}})
    check_dtype(*t, {ScalarType::Long}, kOp, name);
  const Step s{k.size(0), k.size(1), k.size(2), k_pages.size(0), k_pages.size(1), tables.size(2),
               tables.size(2) * k_pages.size(1)};
  auto shape_is = [](const Tensor& t, std::initializer_list<int64_t> want) {
    if (t.dim() != static_cast<int64_t>(want.size())) return false;
    int64_t i = 0;
    for (int64_t w : want)
      if (t.size(i++) != w) return false;
    return true;
  };
  LLMPACK_CHECK(shape_is(v_pages, {s.pages, s.page_size, s.head_dim}) && k_pages.size(2) == s.head_dim, kOp,
                ": k_pages and v_pages must both be [num_pages, page_size, ", s.head_dim, "] (head_dim from k ",
                shape_str(k), "), got ", shape_str(k_pages), " and ", shape_str(v_pages));
  LLMPACK_CHECK(shape_is(v, {s.batch, s.heads, s.head_dim}), kOp, ": v must be ", shape_str(k), " like k, got ",
                shape_str(v));
  LLMPACK_CHECK(shape_is(tables, {s.batch, s.heads, s.max_pages}) && shape_is(lengths, {s.batch, s.heads}), kOp,
                ": block_tables must be [", s.batch, ", ", s.heads, ", max_pages] and lengths [", s.batch, ", ",
                s.heads, "] (batch and kv-heads from k), got ", shape_str(tables), " and ", shape_str(lengths));
  for (const auto& [t, name] : {std::pair{&token_index, "token_index"}, {&rotation, "rotation"},
                                {&heavy_scores, "heavy_scores"}})
    LLMPACK_CHECK(shape_is(*t, {s.batch, s.heads, s.capacity}), kOp, ": ", name, " must be [", s.batch, ", ",
                  s.heads, ", ", s.capacity, "] (one entry per slot of the block tables), got ", shape_str(*t));
  for (const auto& [t, name] : {std::pair{&seen, "seen"}, {&pos, "pos"}, {&real, "real"}, {&budget, "budget"},
                                {&sinks, "sinks"}, {&recent, "recent"}, {&heavy, "heavy"}})
    LLMPACK_CHECK(shape_is(*t, {s.batch}), kOp, ": ", name, " must be [", s.batch, "] (one per sequence), got ",
                  shape_str(*t));
  check_dim(free_pages, 1, kOp, "free_pages");
  LLMPACK_CHECK(shape_is(num_free, {1}), kOp, ": num_free must be [1], got ", shape_str(num_free));
  LLMPACK_CHECK(s.page_size >= 1 && s.head_dim >= 1, kOp, ": page_size and head_dim must be positive, got k_pages ",
                shape_str(k_pages));
  return s;
}

// The policy's victim among the used slots of one (b, h), or -1 when every
// slot is a sink or recent. Priorities compare as double, as the reference's;
// a NaN score counts as the lowest (a slot whose attention is garbage goes
// first) rather than making every comparison false.
int64_t victim(const int64_t* tok, const float* score, int64_t length, int64_t sinks, int64_t newest_evictable,
               bool heavy) {
  int64_t best = -1;
  double best_prio = 0.0;
  for (int64_t s = 0; s < length; ++s) {
    if (tok[s] < sinks || tok[s] > newest_evictable) continue;
    double prio = heavy ? double(score[s]) : double(tok[s]);
    if (prio != prio) prio = -std::numeric_limits<double>::infinity();
    if (best < 0 || prio < best_prio) best = s, best_prio = prio;
  }
  return best;
}

std::tuple<Tensor, Tensor> paged_kv_append_cpu(Tensor k_pages, Tensor v_pages, Tensor tables, Tensor lengths,
                                              Tensor token_index, Tensor rotation, Tensor heavy_scores,
                                              Tensor free_pages, Tensor num_free, Tensor seen, Tensor k, Tensor v,
                                              Tensor pos, Tensor real, Tensor budget, Tensor sinks, Tensor recent,
                                              Tensor heavy) {
  const Step s = check_append_args(k_pages, v_pages, tables, lengths, token_index, rotation, heavy_scores,
                                   free_pages, num_free, seen, k, v, pos, real, budget, sinks, recent, heavy);
  Tensor slot_out = new_empty(k, {s.batch, s.heads}, ScalarType::Long);
  Tensor status = new_empty(k, {1}, ScalarType::Long);
  auto* slot = static_cast<int64_t*>(slot_out.mutable_data_ptr());
  auto* tb = static_cast<int32_t*>(tables.mutable_data_ptr());
  auto* ln = static_cast<int32_t*>(lengths.mutable_data_ptr());
  auto* tok = static_cast<int64_t*>(token_index.mutable_data_ptr());
  auto* rot = static_cast<int64_t*>(rotation.mutable_data_ptr());
  auto* acc = static_cast<float*>(heavy_scores.mutable_data_ptr());
  auto* nfree = static_cast<int64_t*>(num_free.mutable_data_ptr());
  auto* sn = static_cast<int64_t*>(seen.mutable_data_ptr());
  const auto* fp = static_cast<const int64_t*>(free_pages.const_data_ptr());
  const auto* ps = static_cast<const int64_t*>(pos.const_data_ptr());
  const auto* rl = static_cast<const bool*>(real.const_data_ptr());
  const auto* bud = static_cast<const int64_t*>(budget.const_data_ptr());
  const auto* snk = static_cast<const int64_t*>(sinks.const_data_ptr());
  const auto* rec = static_cast<const int64_t*>(recent.const_data_ptr());
  const auto* hv = static_cast<const bool*>(heavy.const_data_ptr());
  LLMPACK_CHECK(*nfree >= 0 && *nfree <= free_pages.size(0), kOp, ": num_free = ", *nfree, " is outside 0..",
                free_pages.size(0), " (the free_pages stack)");

  // 1. Choose every slot; count the pages the growing rows start.
  int64_t new_pages = 0, missing = 0;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      const int64_t row = b * s.heads + h, len = ln[row];
      slot[row] = -1;
      LLMPACK_CHECK(len >= 0 && len <= s.capacity, kOp, ": lengths[", b, ", ", h, "] = ", len, " is outside 0..",
                    s.capacity, " (", s.max_pages, " pages of ", s.page_size, " slots)");
      if (!rl[b]) continue;
      if (len < bud[b]) {
        slot[row] = len;
        if (len % s.page_size == 0) {
          if (len / s.page_size >= s.max_pages) ++missing;  // the block table must grow first
          ++new_pages;
        }
        continue;
      }
      const int64_t vi = victim(tok + row * s.capacity, acc + row * s.capacity, len, snk[b], sn[b] - rec[b], hv[b]);
      LLMPACK_CHECK(vi >= 0, kOp, ": sequence ", b, ", kv-head ", h, " is at its budget of ", bud[b],
                    " and has no evictable token (every slot is a sink or recent)");
      slot[row] = vi;
    }
  if (new_pages > *nfree || missing > 0) {
    static_cast<int64_t*>(status.mutable_data_ptr())[0] = std::max<int64_t>(new_pages - *nfree, 0) + missing;
    return {slot_out, status};
  }
  // 2. Check the pages every write lands in (table entries, popped pages) before writing anything.
  for (int64_t row = 0, popped = 0; row < s.batch * s.heads; ++row) {
    if (slot[row] < 0) continue;
    const int64_t i = slot[row] / s.page_size;
    const bool fresh = slot[row] == ln[row] && slot[row] % s.page_size == 0;
    const int64_t page = fresh ? fp[*nfree - 1 - popped++] : tb[row * s.max_pages + i];
    if (page < 0 || page >= s.pages) {
      if (fresh) fail(kOp, ": free_pages[", *nfree - popped, "] = ", page, " is outside the pool of ", s.pages, " pages");
      fail(kOp, ": block_tables[", row / s.heads, ", ", row % s.heads, ", ", i, "] = ", page,
           " points outside the pool of ", s.pages, " pages");
    }
  }
  // 3. Write.
  const size_t row_bytes = size_t(s.head_dim) * k.element_size();
  auto* kp = static_cast<char*>(k_pages.mutable_data_ptr());
  auto* vp = static_cast<char*>(v_pages.mutable_data_ptr());
  const auto* kn = static_cast<const char*>(k.const_data_ptr());
  const auto* vn = static_cast<const char*>(v.const_data_ptr());
  for (int64_t row = 0; row < s.batch * s.heads; ++row) {
    const int64_t t = slot[row], b = row / s.heads;
    if (t < 0) continue;
    int32_t* entry = tb + row * s.max_pages + t / s.page_size;
    if (t == ln[row]) {
      if (t % s.page_size == 0) *entry = static_cast<int32_t>(fp[--*nfree]);
      ++ln[row];
    }
    const int64_t pool_row = int64_t(*entry) * s.page_size + t % s.page_size;
    std::memcpy(kp + pool_row * row_bytes, kn + row * row_bytes, row_bytes);
    std::memcpy(vp + pool_row * row_bytes, vn + row * row_bytes, row_bytes);
    tok[row * s.capacity + t] = sn[b];
    rot[row * s.capacity + t] = ps[b];
    acc[row * s.capacity + t] = 0.f;
  }
  for (int64_t b = 0; b < s.batch; ++b) sn[b] += rl[b];
  static_cast<int64_t*>(status.mutable_data_ptr())[0] = 0;
  return {slot_out, status};
}

}  // namespace
}  // namespace llmpack::kvcache

#if !defined(LLMPACK_SIMT_EMULATION)
LLMPACK_CPU_IMPL(m) {
  m.impl("paged_kv_append", TORCH_BOX(&llmpack::kvcache::paged_kv_append_cpu));
}
#endif
