// Per-token A4 fake quantization (spec: wkv::fake_quant_a4_per_token in engine/src/quant_formats.h).
#include <cfloat>

#include "cuda_check.h"
#include "kernel_util.h"
#include "quant_formats.h"
#include "wkv_kernels/a4_fake_quant.h"

namespace wkv::kernels {
namespace {

constexpr int kThreads = 256;

// Merges another partial (omn, omx) into (mn, mx); an empty partial is (+Inf, −Inf). Which of ±0 wins
// may differ from the host's serial order, which cannot change the result (−0 and +0 give the same z).
__device__ __forceinline__ void merge_minmax(float omn, float omx, float& mn, float& mx) {
  if (omn < mn) mn = omn;
  if (omx > mx) mx = omx;
}

// One block per row: a NaN-ignoring min/max reduction (q4_minmax_update, as the host), then the same
// scalar operations as the host per element.
__global__ void a4_fake_quant_kernel(float* x, int n) {
  float* row = x + size_t(blockIdx.x) * n;
  float mn = INFINITY, mx = -INFINITY;
  for (int i = threadIdx.x; i < n; i += kThreads) q4_minmax_update(row[i], mn, mx);
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off >>= 1) merge_minmax(__shfl_xor_sync(0xFFFFFFFFu, mn, off),
                                                                   __shfl_xor_sync(0xFFFFFFFFu, mx, off), mn, mx);
  __shared__ float s_mn[kThreads / kWarpSize], s_mx[kThreads / kWarpSize];
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  if (lane == 0) {
    s_mn[warp] = mn;
    s_mx[warp] = mx;
  }
  __syncthreads();
  mn = INFINITY;
  mx = -INFINITY;
  for (int w = 0; w < kThreads / kWarpSize; ++w) merge_minmax(s_mn[w], s_mx[w], mn, mx);
  const float scale = __fdiv_rn(mx - mn, 15.0f);
  if (!(scale > 0.0f) || !isfinite(scale)) return;
  const float z = q4_round(__fdiv_rn(-mn, scale));
  for (int i = threadIdx.x; i < n; i += kThreads)
    row[i] = __fmul_rn(__fsub_rn((float)q4_clamp(__fadd_rn(q4_round(__fdiv_rn(row[i], scale)), z)), z), scale);
}

}  // namespace

void a4_fake_quant(float* x, int T, int n, cudaStream_t stream) {
  require_arg(x != nullptr && T >= 0 && n >= 1,
              "a4_fake_quant: need a non-null x, T >= 0 and n >= 1 (got T " + std::to_string(T) + ", n " +
                  std::to_string(n) + ")");
  if (T == 0) return;
  a4_fake_quant_kernel<<<T, kThreads, 0, stream>>>(x, n);
  WKV_CHECK_LAUNCH();
}

}  // namespace wkv::kernels
