// Tensor-core building blocks shared by the W4 GEMV variants C (w4_gemv_tc.cu) and D (w4_gemv_bulk.cu):
// the m16n8k16 FP16 mma and the exact dequantization of one qweight word into mma A-fragment registers.
// The fragment layout and the dequantization trick are explained at the top of w4_gemv_tc.cu.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "kernel_util.h"
#include "quant_formats.h"

namespace wkv::kernels::detail {

// D += A·B (fragment table at the top of w4_gemv_tc.cu).
__device__ __forceinline__ void mma_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                          uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
  (void)d, (void)a0, (void)a1, (void)a2, (void)a3, (void)b0, (void)b1;
  __trap();  // the project builds for sm_90; mma.sync needs sm_80+
#endif
}

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

}  // namespace wkv::kernels::detail
