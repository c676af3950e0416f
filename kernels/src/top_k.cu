// The k best penalized logits, best first (wkv_kernels/top_k.h): the top-k step of engine/src/sampler.cpp.
//
// Two stages. (1) One block per slice of 4096 ids: the slice goes to shared memory (padding: −inf with id
// INT32_MAX, which ranks after every real entry), the repetition penalty rewrites the penalized ids that fall
// in it, a bitonic sort puts it best first and the block writes its k best to the workspace
// [slice][k]. NaN and +inf logits (which the host sampler refuses) are reported through out_bad. (2) One block
// sorts the slices' candidates (≤ 64 · 128 = 8192 pairs, padded to a power of two) the same way and writes
// the first k. Every entry's key is (logit descending, id ascending), a strict total order, so the k best are
// unique and the result does not depend on the order in which equal logits arrive.
#include "wkv_kernels/top_k.h"

#include <cfloat>
#include <climits>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "kernel_util.h"

namespace wkv::kernels {

namespace {

constexpr int kSlice = 4096;
constexpr int kThreads = 512;

// a ranks before b: larger logit, then smaller id.
__device__ __forceinline__ bool ranks_before(float va, int32_t ia, float vb, int32_t ib) {
  return va > vb || (va == vb && ia < ib);
}

// Bitonic sort of n (a power of two) pairs in shared memory into ranking order (best at 0); the whole block
// takes part and meets at a barrier after every step (also before the first: the caller's stores).
__device__ void sort_best_first(float* v, int32_t* id, int n) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      __syncthreads();
      for (int i = (int)threadIdx.x; i < n / 2; i += (int)blockDim.x) {
        const int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;  // lo: bit `stride` clear
        // Blocks of `size` alternate direction, so each merge step sees a bitonic sequence; the last (size
        // = n) is all one direction: best first.
        const bool best_first = (lo & size) == 0;
        const bool swap = best_first ? ranks_before(v[hi], id[hi], v[lo], id[lo])
                                     : ranks_before(v[lo], id[lo], v[hi], id[hi]);
        if (swap) {
          const float tv = v[lo];
          v[lo] = v[hi];
          v[hi] = tv;
          const int32_t ti = id[lo];
          id[lo] = id[hi];
          id[hi] = ti;
        }
      }
    }
  }
  __syncthreads();
}

// The best (value, id) of the block by the ranking, left in thread 0 (the others' copies are partial).
__device__ void best_of_block(float& bv, int32_t& bi) {
  __shared__ float wv[kThreads / 32];
  __shared__ int32_t wi[kThreads / 32];
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_xor_sync(0xFFFFFFFFu, bv, off);
    const int32_t oi = __shfl_xor_sync(0xFFFFFFFFu, bi, off);
    if (ranks_before(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
  const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32;
  if (lane == 0) wv[warp] = bv, wi[warp] = bi;
  __syncthreads();
  if (threadIdx.x == 0)
    for (int w = 1; w < kThreads / 32; ++w)
      if (ranks_before(wv[w], wi[w], bv, bi)) bv = wv[w], bi = wi[w];
}

// The Sampler's repetition penalty for one finite logit (double math, clamped, rounded once to float).
__device__ __forceinline__ float penalize(float x, float penalty) {
  const double p = (double)penalty, r = x > 0.0f ? (double)x / p : (double)x * p;
  return (float)fmin(fmax(r, -(double)FLT_MAX), (double)FLT_MAX);
}

__global__ void __launch_bounds__(kThreads) top_k_slices_kernel(TopKArgs a, float* __restrict__ cand_v,
                                                                int32_t* __restrict__ cand_i) {
  __shared__ float v[kSlice];
  __shared__ int32_t id[kSlice];
  const int base = (int)blockIdx.x * kSlice;
  for (int j = (int)threadIdx.x; j < kSlice; j += kThreads) {
    const int g = base + j;
    if (g < a.vocab) {
      const float x = a.logits[g];
      if (x != x || x == INFINITY) atomicMin(a.out_bad, g);
      v[j] = x;
      id[j] = g;
    } else {
      v[j] = -INFINITY;
      id[j] = INT32_MAX;
    }
  }
  __syncthreads();
  for (int p = (int)threadIdx.x; p < a.n_penalized; p += kThreads) {
    const int t = a.penalized[p];
    if (t >= base && t < base + kSlice && t < a.vocab) {
      const float x = v[t - base];
      if (x > -INFINITY && x < INFINITY) v[t - base] = penalize(x, a.penalty);  // −inf stays −inf
    }
  }
  if (a.k == 1) {  // greedy: the best entry by a block reduction instead of the sort
    __syncthreads();  // the penalty's rewrites
    float bv = -INFINITY;
    int32_t bi = INT32_MAX;
    for (int j = (int)threadIdx.x; j < kSlice; j += kThreads)
      if (ranks_before(v[j], id[j], bv, bi)) bv = v[j], bi = id[j];
    best_of_block(bv, bi);
    if (threadIdx.x == 0) {
      cand_v[blockIdx.x] = bv;
      cand_i[blockIdx.x] = bi;
    }
    return;
  }
  sort_best_first(v, id, kSlice);
  for (int j = (int)threadIdx.x; j < a.k; j += kThreads) {
    cand_v[(size_t)blockIdx.x * a.k + j] = v[j];
    cand_i[(size_t)blockIdx.x * a.k + j] = id[j];
  }
}

__global__ void __launch_bounds__(kThreads) top_k_merge_kernel(TopKArgs a, int n, int n_pow2,
                                                               const float* __restrict__ cand_v,
                                                               const int32_t* __restrict__ cand_i) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* v = reinterpret_cast<float*>(smem);
  int32_t* id = reinterpret_cast<int32_t*>(v + n_pow2);
  for (int j = (int)threadIdx.x; j < n_pow2; j += kThreads) {
    v[j] = j < n ? cand_v[j] : -INFINITY;
    id[j] = j < n ? cand_i[j] : INT32_MAX;
  }
  sort_best_first(v, id, n_pow2);
  for (int j = (int)threadIdx.x; j < a.k; j += kThreads) {
    a.out_vals[j] = v[j];
    a.out_ids[j] = id[j];
  }
}

int slices(int vocab) { return (vocab + kSlice - 1) / kSlice; }

int pow2_at_least(int n) {
  int p = 1;
  while (p < n) p <<= 1;
  return p;
}

}  // namespace

size_t top_k_workspace_bytes(int vocab, int k) {
  if (vocab < 1 || k < 1) return 0;
  return (size_t)slices(vocab) * (size_t)k * (sizeof(float) + sizeof(int32_t));
}

void top_k_logits(const TopKArgs& a, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  auto fail = [](const std::string& m) { throw std::invalid_argument("top_k_logits: " + m); };
  if (a.k < 1 || a.k > kTopKMax) fail("k " + std::to_string(a.k) + " must be in [1, " + std::to_string(kTopKMax) + "]");
  if (a.vocab <= a.k || a.vocab > kTopKMaxVocab)
    fail("vocabulary of " + std::to_string(a.vocab) + " must exceed k " + std::to_string(a.k) + " and be at most " +
         std::to_string(kTopKMaxVocab));
  if (!a.logits || !a.out_ids || !a.out_vals || !a.out_bad) fail("logits and the outputs must be device pointers");
  if (a.n_penalized < 0 || (a.n_penalized > 0 && !a.penalized)) fail("penalized ids missing");
  if (!(a.penalty > 0.0f) || a.penalty == INFINITY) fail("penalty must be finite and > 0");
  const size_t need = top_k_workspace_bytes(a.vocab, a.k);
  if (!workspace || workspace_bytes < need)
    fail("workspace of " + std::to_string(workspace_bytes) + " bytes, " + std::to_string(need) + " needed");
  const int nb = slices(a.vocab), n = nb * a.k, n_pow2 = pow2_at_least(n);
  auto* cand_v = static_cast<float*>(workspace);
  auto* cand_i = reinterpret_cast<int32_t*>(cand_v + (size_t)n);
  CUDA_CHECK(cudaMemsetAsync(a.out_bad, 0x7F, sizeof(int32_t), stream));  // 0x7F7F7F7F ≥ any vocabulary
  top_k_slices_kernel<<<nb, kThreads, 0, stream>>>(a, cand_v, cand_i);
  WKV_CHECK_LAUNCH();
  const size_t smem = (size_t)n_pow2 * (sizeof(float) + sizeof(int32_t));
  static const bool attr_set = (allow_max_dynamic_smem(top_k_merge_kernel), true);
  (void)attr_set;
  top_k_merge_kernel<<<1, kThreads, smem, stream>>>(a, n, n_pow2, cand_v, cand_i);
  WKV_CHECK_LAUNCH();
}

}  // namespace wkv::kernels
