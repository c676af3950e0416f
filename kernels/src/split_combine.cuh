// The flash-decoding combine, shared by the KV4 and FP16 decode attentions (internal), fused into the split
// kernels ("last block finishes"): the split blocks of one group of query heads (the NH heads whose K/V reads
// the blocks share) count their arrivals on a counter in the workspace, and the block that arrives last
// merges the group's partials and writes the output. One launch instead of a split kernel + a combine kernel.
//
// Workspace layout (both decode attentions):
//   [split_counter_bytes(H)]  uint32 arrival counters, counter g for the group whose first head is g·NH;
//                             zero before the first launch (the caller zeroes them once after allocation),
//                             and zero again after every launch (the last arrival wraps its counter to 0).
//   ml  [H][splits][2] FP32   per (head, split): m_s (score maximum), l_s (Σ e^{score − m_s})
//   acc [H][splits][D] FP32   per (head, split): unnormalized outputs
// splits is the launch's grid split count (the stride), of which only the first n (the active splits of the
// actual n_cache) hold partials. The counters' offset does not depend on the split count, so launches of
// any n_cache (and n_cache_max) share one workspace; partials are written and read within one launch.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "kernel_util.h"

namespace wkv::kernels {

// Bytes of the arrival counters at the start of the workspace: one uint32 per query head (every group has
// ≥ 1 head, so ≤ H groups), rounded up to 256 so the partials after them keep the workspace's alignment.
constexpr size_t split_counter_bytes(int n_heads) {
  return (size_t(n_heads > 0 ? n_heads : 0) * sizeof(unsigned int) + 255) / 256 * 256;
}

// Called by every thread of every block of the group once per launch, after the block's partial stores (an
// empty split stores none but still arrives), with block-uniform control flow. `target` is the group's block
// count in the grid: a launch constant all blocks agree on, whatever n_cache the device holds. Returns true,
// in all threads, in exactly one block of the group: the target-th to arrive. atomicInc(c, target − 1) stores
// (old ≥ target − 1 ? 0 : old + 1), so that arrival also puts the counter back to 0: it is 0 after every
// launch (and before every graph replay) provided it was 0 before the first; kernels cannot stop part-way.
//
// Memory ordering. Release: every thread's partials are plain stores, then __threadfence() (they are visible
// GPU-wide before anything the thread does next), then a block barrier, then thread 0's atomic; the barrier
// and the fence's cumulativity order all the block's stores before its arrival. Acquire: thread 0 of the
// last block fences again after the atomic that observed target − 1 arrivals, and __syncthreads_or passes
// that on to the block. The partials are then read with __ldcg (L2, bypassing L1): L1 is not coherent
// between SMs, and this SM's L1 may hold a line of the workspace loaded earlier in the launch (another
// group's last block reading a neighbouring head's partials) from before the other blocks wrote it.
__device__ __forceinline__ bool arrive_last(unsigned int* counter, unsigned int target) {
  __threadfence();
  __syncthreads();
  int last = 0;
  if (threadIdx.x == 0) {
    last = atomicInc(counter, target - 1) == target - 1;
    if (last) __threadfence();
  }
  return __syncthreads_or(last) != 0;
}

// Merges the n active splits of the NH query heads h0 … h0 + NH − 1 in one block of kBlock threads, with the
// arithmetic of the former combine kernel (one block of D threads per head), so the output bits are those of
// the two-launch version: the block is cut into kBlock / D teams of D threads, thread d of a team owns
// channel d, and team k handles heads k, k + kTeams, …, up to kMaxPass of them at a time (independent load
// streams; more cost the split kernel registers, which are shared with its main loop). Per head:
//   M   = max(max_s m_s, mt), mt = the current token's score when has_cur (KV4 POQ): (Σ over the team's warps,
//         in order, of warp sums of cur_product(hh, d)) · cur_scale;
//   w_s = e^{m_s − M}, computed once per tile of kTile splits into shared memory, thread d computing splits
//         d, d + D, … of the tile;
//   acc = Σ_s w_s·acc_s[d], one FMA chain over s ascending;
//   l   = Σ over the team's warps, in order, of warp sums of Σ w_s·l_s over the splits each thread weighted;
// then epilogue(hh, d, acc, l, M, mt). scratch: ≥ NH·(kTile + D/32) floats of shared memory that every
// thread is done with (arrive_last's barriers precede the first use).
template <int D, int NH, int kBlock, int kTile, int kMaxPass, class CurProduct, class Epilogue>
__device__ __forceinline__ void combine_group(const float* ws_ml, const float* ws_acc, int h0, int stride, int n,
                                              bool has_cur, CurProduct cur_product, float cur_scale, float* scratch,
                                              Epilogue epilogue) {
  static_assert(D % 32 == 0 && kBlock % D == 0, "teams of whole warps");
  constexpr int kTeams = kBlock / D;
  constexpr int NHT = (NH + kTeams - 1) / kTeams;  // heads per team
  constexpr int kPass = NHT < kMaxPass ? NHT : kMaxPass;  // heads per team and pass
  constexpr int VW = D / 32;                       // warps per team
  float* wt_s = scratch;               // [NH][kTile] weights of the current tile
  float* part = scratch + NH * kTile;  // [NH][VW] per-warp results
  const int team = threadIdx.x / D, d = threadIdx.x % D, lane = d & 31, vw = d >> 5;
#pragma unroll 1
  for (int j0 = 0; j0 < NHT; j0 += kPass) {  // block-uniform
    // Slot j of this pass is head hh = team + kTeams·(j0 + j) if hh < NH (warp-uniform: a warp lies in one
    // team); an unused slot points at head h0 and is skipped.
    int hs[kPass];
    const float* ml[kPass];
    const float* acc[kPass];
    float M[kPass], mt[kPass], sum[kPass], l_part[kPass];
#pragma unroll
    for (int j = 0; j < kPass; ++j) {
      const int hh = team + kTeams * (j0 + j);
      hs[j] = hh < NH ? hh : -1;
      ml[j] = ws_ml + size_t(h0 + max(hs[j], 0)) * stride * 2;
      acc[j] = ws_acc + size_t(h0 + max(hs[j], 0)) * stride * D + d;
      M[j] = -INFINITY;
      mt[j] = -INFINITY;
      sum[j] = 0.0f;
      l_part[j] = 0.0f;
      if (hs[j] >= 0) {
        for (int s = d; s < n; s += D) M[j] = fmaxf(M[j], __ldcg(ml[j] + 2 * s));
        M[j] = warp_max(M[j]);
        if (lane == 0) part[hh * VW + vw] = M[j];
      }
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kPass; ++j) {
      if (hs[j] >= 0) {
        M[j] = part[hs[j] * VW];
#pragma unroll
        for (int i = 1; i < VW; ++i) M[j] = fmaxf(M[j], part[hs[j] * VW + i]);
      }
    }
    __syncthreads();  // part is reused below

    if (has_cur) {  // block-uniform
#pragma unroll
      for (int j = 0; j < kPass; ++j) {
        if (hs[j] >= 0) {
          const float v = warp_sum(cur_product(hs[j], d));
          if (lane == 0) part[hs[j] * VW + vw] = v;
        }
      }
      __syncthreads();
#pragma unroll
      for (int j = 0; j < kPass; ++j) {
        if (hs[j] >= 0) {
          float dot = 0.0f;
#pragma unroll
          for (int i = 0; i < VW; ++i) dot += part[hs[j] * VW + i];
          mt[j] = dot * cur_scale;
          M[j] = fmaxf(M[j], mt[j]);
        }
      }
    }

    for (int s0 = 0; s0 < n; s0 += kTile) {
      const int ns = min(kTile, n - s0);
      __syncthreads();  // previous tile's weights are consumed
#pragma unroll
      for (int j = 0; j < kPass; ++j) {
        if (hs[j] >= 0)
          for (int i = d; i < ns; i += D) {
            const float w = expf(__ldcg(ml[j] + 2 * (s0 + i)) - M[j]);
            wt_s[hs[j] * kTile + i] = w;
            l_part[j] += w * __ldcg(ml[j] + 2 * (s0 + i) + 1);
          }
      }
      __syncthreads();
      int i = 0;
      for (; i + 4 <= ns; i += 4) {  // 4 loads per head in flight, the heads' streams independent
#pragma unroll
        for (int j = 0; j < kPass; ++j) {
          if (hs[j] >= 0) {
            const float* src = acc[j] + size_t(s0 + i) * D;
            const float* wt = wt_s + hs[j] * kTile + i;
            const float a0 = __ldcg(src), a1 = __ldcg(src + D), a2 = __ldcg(src + 2 * D), a3 = __ldcg(src + 3 * D);
            sum[j] = fmaf(wt[0], a0, sum[j]);
            sum[j] = fmaf(wt[1], a1, sum[j]);
            sum[j] = fmaf(wt[2], a2, sum[j]);
            sum[j] = fmaf(wt[3], a3, sum[j]);
          }
        }
      }
      for (; i < ns; ++i)
#pragma unroll
        for (int j = 0; j < kPass; ++j)
          if (hs[j] >= 0) sum[j] = fmaf(wt_s[hs[j] * kTile + i], __ldcg(acc[j] + size_t(s0 + i) * D), sum[j]);
    }

    float lw[kPass];
#pragma unroll
    for (int j = 0; j < kPass; ++j) lw[j] = hs[j] >= 0 ? warp_sum(l_part[j]) : 0.0f;
    __syncthreads();  // every read of part (and of wt_s) above is done
#pragma unroll
    for (int j = 0; j < kPass; ++j)
      if (hs[j] >= 0 && lane == 0) part[hs[j] * VW + vw] = lw[j];
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kPass; ++j) {
      if (hs[j] >= 0) {
        float l = 0.0f;
#pragma unroll
        for (int i = 0; i < VW; ++i) l += part[hs[j] * VW + i];
        epilogue(hs[j], d, sum[j], l, M[j], mt[j]);
      }
    }
    __syncthreads();  // the next pass reuses part
  }
}

}  // namespace wkv::kernels
