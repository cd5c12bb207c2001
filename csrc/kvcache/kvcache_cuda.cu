// Paged decode attention on CUDA (layout and outputs: kvcache.h). Decode is
// one query token per sequence: per (sequence, kv-head) the work is a read of
// its K and V rows, so the kernel is built to read each row once for all the
// `group` query heads that share it, and to spread long contexts over many
// blocks (split-K over slots, flash-decoding style) rather than leave one
// block per (sequence, kv-head) and an idle GPU at small batch.
//
//   split_kernel  grid (batch * kv_heads, cuda_num_splits(capacity)), one block
//                 per kCudaSplitSlots slots of one (sequence, kv-head):
//     0. validates the table entries of its slots (a bad entry sets the error
//        slot and the block reads nothing; a bad length is the merge's to
//        report) and keeps each slot's pool row in shared memory;
//     1. logits: warps over slots, lanes over head_dim; each K element read
//        once per 8 query heads, the 8 dot products reduced together in 9
//        shuffles (a transposed butterfly) instead of 8 x 5;
//     2. per query head (warps over heads): the part's max, exp(logit - max)
//        in place, their sum; with scores the exponentials go to the workspace;
//     3. weighted V: threads over head_dim, the unnormalised sum per head.
//   merge_kernel  grid (batch * kv_heads): log-sum-exp merge of the parts, the
//     normalised output, and scores = sum over heads of exp * part weight / sum
//     (needs the global max and sum, hence the stored exponentials).
// Softmax in fp32 with the max subtracted, as the CPU path and the reference.
// Simple first version: scalar loads (head_dim can be odd, rows unaligned for
// vectors), threads idle in the V pass when head_dim < 128, one error-slot read
// (a sync) per call. Never timed on a GPU: compiled for sm_80/sm_90 and run in
// the SIMT emulator against python/llmpack/reference/kvcache.py.
#include "common/cuda/launch.cuh"
#include "kvcache/kvcache.h"

namespace llmpack::kvcache {
namespace {

constexpr int kThreads = 128;  // 4 warps
constexpr int kWarps = kThreads / 32;
constexpr int kSlots = static_cast<int>(kCudaSplitSlots);
constexpr int kHeadsPerPass = 8;  // query heads whose dot products share one K read
constexpr unsigned kFull = 0xFFFFFFFFu;

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

// Sums a[r] over the warp for r = 0..7 at once: each step exchanges half of
// the remaining values, so lane L ends with the sum of a[L >> 2] (9 shuffles).
__device__ __forceinline__ float warp_sum8(float (&a)[kHeadsPerPass], int lane) {
  bool up = lane & 16;
  for (int r = 0; r < 4; ++r) {
    const float send = up ? a[r] : a[r + 4], keep = up ? a[r + 4] : a[r];
    a[r] = keep + __shfl_xor_sync(kFull, send, 16);
  }
  up = lane & 8;
  for (int r = 0; r < 2; ++r) {
    const float send = up ? a[r] : a[r + 2], keep = up ? a[r + 2] : a[r];
    a[r] = keep + __shfl_xor_sync(kFull, send, 8);
  }
  up = lane & 4;
  const float send = up ? a[0] : a[1], keep = up ? a[1] : a[0];
  float s = keep + __shfl_xor_sync(kFull, send, 4);
  s += __shfl_xor_sync(kFull, s, 2);
  return s + __shfl_xor_sync(kFull, s, 1);
}

// Dynamic shared memory of split_kernel: pool rows [kSlots] (int64), scaled
// q [group, d], logits / exponentials [group, kSlots].
LLMPACK_HD size_t split_smem_bytes(long long group, long long d) {
  return sizeof(long long) * kSlots + sizeof(float) * size_t(group) * size_t(d + kSlots);
}

template <class T>
__global__ void __launch_bounds__(kThreads) split_kernel(DecodeParams p, long long num_pages, float* ws,
                                                         long long* bad) {
  const long long task = blockIdx.x, ps = p.page_size, cap = p.max_pages * ps;
  const int split = blockIdx.y, nsplit = gridDim.y;
  const int group = static_cast<int>(p.num_heads / p.num_kv_heads), d = static_cast<int>(p.head_dim);
  const long long len = p.lengths[task], t0 = (long long)split * kSlots;
  if (len < 0 || len > cap || t0 >= len) return;  // nothing here (a bad length is reported by merge_kernel)
  const int n = len - t0 < kSlots ? static_cast<int>(len - t0) : kSlots;
  unsigned char* smem = cuda::dynamic_smem<unsigned char>(split_smem_bytes(group, d));
  long long* rows = reinterpret_cast<long long*>(smem);
  float* qs = reinterpret_cast<float*>(rows + kSlots);
  float* ex = qs + group * d;  // ex[g * kSlots + j]: slot t0 + j, query head g of the group

  // 0. Pool rows of the slots, validated; q scaled, in fp32.
  const int32_t* table = p.tables + task * p.max_pages;
  bool ok = true;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const long long t = t0 + j, i = t / ps;
    const long long page = table[i];
    const bool good = page >= 0 && page < num_pages;
    if (!good) {
      ok = false;
      atomicMin(reinterpret_cast<unsigned long long*>(bad),
                static_cast<unsigned long long>(cuda_error_code(task, p.max_pages, 1 + i)));
    }
    rows[j] = good ? page * ps + t % ps : 0;
  }
  const T* q = static_cast<const T*>(p.q) + task * group * d;  // heads h*group .. of sequence b, contiguous
  for (int x = threadIdx.x; x < group * d; x += blockDim.x) qs[x] = to_f(q[x]) * p.scale;
  if (__syncthreads_or(!ok)) return;

  // 1. Logits: warp per slot, lanes over head_dim, 8 query heads per K read.
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const T* kp = static_cast<const T*>(p.k_pages);
  for (int j = warp; j < n; j += kWarps) {
    const T* k = kp + rows[j] * d;
    for (int g0 = 0; g0 < group; g0 += kHeadsPerPass) {
      const int gn = group - g0 < kHeadsPerPass ? group - g0 : kHeadsPerPass;
      float a[kHeadsPerPass];
      for (int r = 0; r < kHeadsPerPass; ++r) a[r] = 0.f;
      for (int x = lane; x < d; x += 32) {
        const float kv = to_f(k[x]);
        for (int r = 0; r < kHeadsPerPass; ++r)
          if (r < gn) a[r] += qs[(g0 + r) * d + x] * kv;
      }
      if (gn == 1) {  // MHA: one plain reduction
        const float s = warp_sum(a[0]);
        if (lane == 0) ex[g0 * kSlots + j] = s;
      } else {
        const float s = warp_sum8(a, lane);
        const int r = lane >> 2;
        if ((lane & 3) == 0 && r < gn) ex[(g0 + r) * kSlots + j] = s;
      }
    }
  }
  __syncthreads();

  // 2. Per query head: the part's max and sum of exponentials.
  const long long part = task * nsplit + split;  // this block's (task, split)
  float* part_max = ws;
  float* part_sum = ws + (long long)gridDim.x * nsplit * group;
  float* part_acc = part_sum + (long long)gridDim.x * nsplit * group;
  float* exps = p.scores ? part_acc + (long long)gridDim.x * nsplit * group * d : nullptr;
  for (int g = warp; g < group; g += kWarps) {
    float* e = ex + g * kSlots;
    float mx = -INFINITY;
    for (int j = lane; j < n; j += 32) mx = fmaxf(mx, e[j]);
    mx = warp_max(mx);
    float s = 0.f;
    for (int j = lane; j < n; j += 32) {
      const float v = expf(e[j] - mx);
      e[j] = v;
      s += v;
      if (exps) exps[(task * group + g) * cap + t0 + j] = v;
    }
    s = warp_sum(s);
    if (lane == 0) {
      part_max[part * group + g] = mx;
      part_sum[part * group + g] = s;
    }
  }
  __syncthreads();

  // 3. Unnormalised weighted V: threads over head_dim, 8 query heads per V read.
  const T* vp = static_cast<const T*>(p.v_pages);
  for (int g0 = 0; g0 < group; g0 += kHeadsPerPass) {
    const int gn = group - g0 < kHeadsPerPass ? group - g0 : kHeadsPerPass;
    for (int x = threadIdx.x; x < d; x += blockDim.x) {
      float a[kHeadsPerPass];
      for (int r = 0; r < kHeadsPerPass; ++r) a[r] = 0.f;
      for (int j = 0; j < n; ++j) {
        const float v = to_f(vp[rows[j] * d + x]);
        for (int r = 0; r < kHeadsPerPass; ++r)
          if (r < gn) a[r] += ex[(g0 + r) * kSlots + j] * v;
      }
      for (int r = 0; r < gn; ++r) part_acc[(part * group + g0 + r) * d + x] = a[r];
    }
  }
}

// Max or sum over the block; every thread gets the result.
__device__ __forceinline__ float block_reduce(float v, bool is_max, float* red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = is_max ? warp_max(v) : warp_sum(v);
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < kWarps; ++w) r = is_max ? fmaxf(r, red[w]) : r + red[w];
  __syncthreads();  // red is reused by the next call
  return r;
}

template <class T>
__global__ void __launch_bounds__(kThreads) merge_kernel(DecodeParams p, float* ws, long long* bad) {
  __shared__ float red[kWarps];
  const long long task = blockIdx.x, cap = p.max_pages * p.page_size;
  const int nsplit = static_cast<int>(cuda_num_splits(cap));
  const int group = static_cast<int>(p.num_heads / p.num_kv_heads), d = static_cast<int>(p.head_dim);
  const long long len = p.lengths[task];
  if (len < 0 || len > cap) {
    if (threadIdx.x == 0)
      atomicMin(reinterpret_cast<unsigned long long*>(bad),
                static_cast<unsigned long long>(cuda_error_code(task, p.max_pages, 0)));
    return;
  }
  const int used = static_cast<int>((len + kSlots - 1) / kSlots);  // parts holding slots
  float* w = cuda::dynamic_smem<float>(nsplit > 0 ? nsplit : 1);   // w[s]: part s's weight for head g
  const float* part_max = ws;
  const float* part_sum = ws + (long long)gridDim.x * nsplit * group;
  const float* part_acc = part_sum + (long long)gridDim.x * nsplit * group;
  const float* exps = p.scores ? part_acc + (long long)gridDim.x * nsplit * group * d : nullptr;
  float* scores = p.scores ? p.scores + task * cap : nullptr;
  T* out = static_cast<T*>(p.out) + task * group * d;
  if (scores)
    for (long long t = len + threadIdx.x; t < cap; t += blockDim.x) scores[t] = 0.f;
  for (int g = 0; g < group; ++g) {
    const long long first = task * nsplit * group + g;  // part s of head g: first + s * group
    float mx = -INFINITY;
    for (int s = threadIdx.x; s < used; s += blockDim.x) mx = fmaxf(mx, part_max[first + s * group]);
    mx = block_reduce(mx, true, red);
    float total = 0.f;
    for (int s = threadIdx.x; s < used; s += blockDim.x) {
      w[s] = expf(part_max[first + s * group] - mx);
      total += part_sum[first + s * group] * w[s];
    }
    total = block_reduce(total, false, red);  // (its barrier also publishes w)
    const float inv = used > 0 ? 1.f / total : 0.f;  // length 0: output 0
    for (int x = threadIdx.x; x < d; x += blockDim.x) {
      float o = 0.f;
      for (int s = 0; s < used; ++s) o += w[s] * part_acc[(first + s * group) * d + x];
      store(out + g * d + x, o * inv);
    }
    if (scores) {
      const float* e = exps + (task * group + g) * cap;
      for (long long t = threadIdx.x; t < len; t += blockDim.x) {
        const float v = e[t] * (w[t / kSlots] * inv);
        scores[t] = g == 0 ? v : scores[t] + v;  // slot t is always this thread's: no race, fixed order
      }
    }
    __syncthreads();  // w is rewritten for the next head
  }
}

template <class T>
int run(const DecodeParams& p, int64_t num_pages, float* ws, int64_t* bad, void* stream) {
  const long long tasks = p.batch * p.num_kv_heads, nsplit = cuda_num_splits(p.max_pages * p.page_size);
  const long long group = p.num_heads / p.num_kv_heads;
  long long* slot = reinterpret_cast<long long*>(bad);
  int e = LLMPACK_LAUNCH(split_kernel<T>, dim3(static_cast<unsigned>(tasks), static_cast<unsigned>(nsplit)),
                         dim3(kThreads), split_smem_bytes(group, p.head_dim), stream, p,
                         static_cast<long long>(num_pages), ws, slot);
  if (e != 0) return e;
  return LLMPACK_LAUNCH(merge_kernel<T>, dim3(static_cast<unsigned>(tasks)), dim3(kThreads),
                        sizeof(float) * size_t(nsplit > 0 ? nsplit : 1), stream, p, ws, slot);
}

}  // namespace

int decode_cuda(const DecodeParams& p, int64_t num_pages, float* workspace, int64_t* bad, void* stream) {
  switch (p.dtype) {
    case Dtype::kF32: return run<float>(p, num_pages, workspace, bad, stream);
    case Dtype::kBF16: return run<__nv_bfloat16>(p, num_pages, workspace, bad, stream);
    case Dtype::kF16: return run<__half>(p, num_pages, workspace, bad, stream);
  }
  return 1;  // cudaErrorInvalidValue
}

}  // namespace llmpack::kvcache
