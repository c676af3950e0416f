// The tile loop of the flash-decoding combine, shared by the KV4 and FP16 decode attentions (internal).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace wkv::kernels {

// One block of D threads merges the n splits of one head, thread d owning output channel d. Per split s,
// ml[2s] = m_s (the split's score maximum) and ml[2s + 1] = l_s (its softmax denominator at m_s); acc
// [n][D] (stride D) holds its unnormalized outputs. With the overall maximum M, each tile of kTile splits
// gets its weights w_s = e^{m_s − M} computed once into wt_s (shared, kTile floats), and every thread sums
// its channel over the tile with four independent loads in flight. Returns Σ_s w_s·acc_s[d]; adds the
// Σ w_s·l_s of the weights this thread computed to l_part (the caller reduces it over the block).
template <int D, int kTile>
__device__ __forceinline__ float combine_splits(const float* ml, const float* acc, int n, float M, float* wt_s,
                                                float& l_part) {
  const int d = threadIdx.x;
  float sum = 0.0f;
  for (int s0 = 0; s0 < n; s0 += kTile) {
    const int ns = min(kTile, n - s0);
    __syncthreads();  // previous tile's weights are consumed
    for (int i = d; i < ns; i += D) {
      const float w = expf(ml[2 * (s0 + i)] - M);
      wt_s[i] = w;
      l_part += w * ml[2 * (s0 + i) + 1];
    }
    __syncthreads();
    const float* src = acc + size_t(s0) * D + d;
    int i = 0;
    for (; i + 4 <= ns; i += 4) {
      const float a0 = src[size_t(i) * D], a1 = src[size_t(i + 1) * D];
      const float a2 = src[size_t(i + 2) * D], a3 = src[size_t(i + 3) * D];
      sum = fmaf(wt_s[i], a0, sum);
      sum = fmaf(wt_s[i + 1], a1, sum);
      sum = fmaf(wt_s[i + 2], a2, sum);
      sum = fmaf(wt_s[i + 3], a3, sum);
    }
    for (; i < ns; ++i) sum = fmaf(wt_s[i], src[size_t(i) * D], sum);
  }
  return sum;
}

}  // namespace wkv::kernels
