// Tensor-core building blocks shared by the W4 GEMV variants C (w4_gemv_tc.cu) and D (w4_gemv_bulk.cu):
// the exact dequantization of one qweight word into mma A-fragment registers (the mma itself is
// mma_m16n8k16 in kernel_util.h).
// The fragment layout and the dequantization trick are explained at the top of w4_gemv_tc.cu.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "kernel_util.h"
#include "quant_formats.h"

namespace wkv::kernels::detail {

__device__ __forceinline__ uint32_t bits_of(__half2 h) {
  uint32_t u;
  memcpy(&u, &h, 4);
  return u;
}

__device__ __forceinline__ uint32_t tc_word_of(const uint4& v, int w) {
  return w == 0 ? v.x : w == 1 ? v.y : w == 2 ? v.z : v.w;  // w is a compile-time constant after unrolling
}

// Per row of a chunk: zlo = 1024 + z, zhi = −(64 + z) (both exact), h as half2 and FP32.
struct RowParams {
  __half2 zlo, zhi, h2;
  float h;
};

__device__ __forceinline__ RowParams unpack_params(uint32_t hz) {
  RowParams p;
  const __half h = __ushort_as_half((unsigned short)(hz & 0xFFFFu));
  const __half2 z2 = __half2half2(__ushort_as_half((unsigned short)(hz >> 16)));
  p.zlo = __hadd2(z2, half2_from_bits(kFp16x2Bias1024));
  p.zhi = __hneg2(__hadd2(z2, __float2half2_rn(64.0f)));
  p.h2 = __half2half2(h);
  p.h = __half2float(h);
  return p;
}

// (q − z) of the 4 channel pairs of `word` as exact half2: d[0] = channels (0, 1), d[1] = (2, 3),
// d[2] = (4, 5), d[3] = (6, 7); then × h when !kScaleAfter.
template <bool kScaleAfter>
__device__ __forceinline__ void dequant_word(uint32_t word, const RowParams& p, uint32_t (&d)[4]) {
  const __half2 sixteenth = __float2half2_rn(0.0625f);
  const uint32_t w8 = word >> 8;
  __half2 v[4];
  v[0] = __hsub2(half2_from_bits((word & kW4PairMask) | kFp16x2Bias1024), p.zlo);
  v[1] = __hfma2(half2_from_bits((word & (kW4PairMask << 4)) | kFp16x2Bias1024), sixteenth, p.zhi);
  v[2] = __hsub2(half2_from_bits((w8 & kW4PairMask) | kFp16x2Bias1024), p.zlo);
  v[3] = __hfma2(half2_from_bits((w8 & (kW4PairMask << 4)) | kFp16x2Bias1024), sixteenth, p.zhi);
#pragma unroll
  for (int k = 0; k < 4; ++k) d[k] = bits_of(kScaleAfter ? v[k] : __hmul2(v[k], p.h2));
}

// x̂ = x·2^e_b per batch row b < B: one power-of-two scale with max |x[b]|·2^e_b in [2^14, 2^15) ⊂ FP16
// range, so x̂ rounds to FP16 without overflow and the FP32 result is scaled back exactly by 2^-e_b.
// xsc[b] = 2^e_b, xinv[b] = 2^-e_b; wmax holds kThreads / 32 × kMaxBatch floats of scratch. fmaxf ignores
// NaN: a NaN x keeps a finite scale and stays NaN. Two block barriers: every thread of the block (kThreads)
// must call it.
template <int kThreads, int kMaxBatch>
__device__ __forceinline__ void x_row_scales(const float* __restrict__ x, int cols, int B, float* wmax, float* xsc,
                                             float* xinv) {
  constexpr int kWarps = kThreads / kWarpSize;
  const int tid = (int)threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int cols4 = cols / 4;
  for (int b = 0; b < B; ++b) {
    const float4* xb = reinterpret_cast<const float4*>(x + (size_t)b * cols);
    float mx = 0.0f;
    for (int i = tid; i < cols4; i += kThreads) {
      const float4 v = __ldg(xb + i);
      mx = fmaxf(mx, fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
    }
    mx = warp_max(mx);
    if (lane == 0) wmax[warp * kMaxBatch + b] = mx;
  }
  __syncthreads();
  if (tid < B) {
    float mx = 0.0f;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, wmax[w * kMaxBatch + tid]);
    // mx = f·2^k, f ∈ [0.5, 1) → mx·2^(15−k) ∈ [2^14, 2^15). e clamped so that 2^±e are normal FP32.
    // Zero / Inf rows keep e = 0.
    int e = 0;
    if (mx > 0.0f && mx <= 3.402823466e38f) {
      int k = 0;
      (void)frexpf(mx, &k);
      e = max(-126, min(15 - k, 126));
    }
    xsc[tid] = __int_as_float((127 + e) << 23);
    xinv[tid] = __int_as_float((127 - e) << 23);
  }
  __syncthreads();
}

// x as two FP16 columns per batch row (variants D and E): hi = fp16(x̂), lo = fp16(x̂ − hi), x̂ = x·2^e_b
// (x_row_scales), 22 significant bits together. Shared-memory layout per batch row b, at b·hilo_bytes_per_batch:
// hi [cols] FP16, then 32 bytes further lo [cols]; 16-byte slot w (channels 8w … 8w + 7) of chunk c (32
// channels) at c·4 + (w ^ ((c >> 1) & 1)), so that the 8 lanes of an LDS.128 phase reading chunks of 4
// consecutive lanes t, hi and lo, hit 8 distinct 16-byte bank groups.
__host__ __device__ __forceinline__ size_t hilo_bytes_per_batch(int cols) { return (size_t)cols * 4 + 64; }

// x [B][cols] FP32 → the hi / lo layout above in xs; xsc / xinv / wmax as x_row_scales. Two block barriers
// (inside x_row_scales); the caller needs one more before reading xs.
template <int kThreads, int kMaxBatch>
__device__ __forceinline__ void stage_x_hilo(const float* __restrict__ x, int cols, int B, uint8_t* xs, float* wmax,
                                             float* xsc, float* xinv) {
  const int tid = (int)threadIdx.x, cols8 = cols / 8;
  x_row_scales<kThreads, kMaxBatch>(x, cols, B, wmax, xsc, xinv);
  for (int i = tid; i < B * cols8; i += kThreads) {
    const int b = i / cols8, f = i - b * cols8, c = f >> 2, w = f & 3;
    const float4 v0 = __ldg(reinterpret_cast<const float4*>(x) + 2 * i);
    const float4 v1 = __ldg(reinterpret_cast<const float4*>(x) + 2 * i + 1);
    const float sc = xsc[b];
    const float v[8] = {v0.x * sc, v0.y * sc, v0.z * sc, v0.w * sc, v1.x * sc, v1.y * sc, v1.z * sc, v1.w * sc};
    uint32_t hi[4], lo[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const __half2 h = __floats2half2_rn(v[2 * k], v[2 * k + 1]);
      const float2 hf = __half22float2(h);
      hi[k] = bits_of(h);
      lo[k] = bits_of(__floats2half2_rn(v[2 * k] - hf.x, v[2 * k + 1] - hf.y));  // exact differences
    }
    uint8_t* xb = xs + (size_t)b * hilo_bytes_per_batch(cols);
    const int slot = c * 4 + (w ^ ((c >> 1) & 1));
    reinterpret_cast<uint4*>(xb)[slot] = make_uint4(hi[0], hi[1], hi[2], hi[3]);
    reinterpret_cast<uint4*>(xb + (size_t)cols * 2 + 32)[slot] = make_uint4(lo[0], lo[1], lo[2], lo[3]);
  }
}

}  // namespace wkv::kernels::detail
