// Device helpers shared by the KV4 cache kernels: row addressing in the paged cache and dequantization of
// one 32-bit word of codes (8 channels). Storage format: quant_formats.h (KV4); layout: kv4_cache.h.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernel_util.h"
#include "wkv_kernels/kv4_cache.h"

namespace wkv::kernels::kv4dev {

// Start of token j's row for KV head h (pool is k_pool or v_pool of `c`).
__device__ __forceinline__ const uint8_t* row_ptr(const uint8_t* pool, const Kv4LayerCache& c, size_t head_bytes,
                                                  int j, int h) {
  const int page = __ldg(c.page_table + j / c.page_size);
  return pool + kv4_row_index(page, j % c.page_size, h, c.n_kv_heads, c.page_size) * head_bytes;
}

// FP16 bits → float (exact; the same value as wkv::fp16_to_float).
__device__ __forceinline__ float half_bits_to_float(uint32_t bits16) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits16)));
}

// Code of nibble k (0..7) of a word as a float, without an I2F conversion: 0x4B000000 is 2^23, whose
// mantissa LSB has weight 1, so OR-ing a code in and subtracting 2^23 is exact and uses only LOP + FADD.
__device__ __forceinline__ float code_to_float(uint32_t word, int k) {
  return __uint_as_float(0x4B000000u | ((word >> (4 * k)) & 0xFu)) - 8388608.0f;
}

// Smoothed-domain values x̃_c = q_c·scale + min of channels 8w … 8w+7 of one row (D/2 code bytes, then the
// D/G headers {fp16 scale (low half), fp16 min (high half)}). kOneGroup: G % 8 == 0, so the 8 channels share
// one header; otherwise (G = 2 or 4 … any even G) each channel pair looks its header up.
template <bool kOneGroup>
__device__ __forceinline__ void word_smoothed(const uint8_t* row, int w, int D, int G, float x[8]) {
  const uint32_t codes = *reinterpret_cast<const uint32_t*>(row + 4 * w);
  const uint32_t* hdr = reinterpret_cast<const uint32_t*>(row + D / 2);
  if (kOneGroup) {
    const uint32_t hb = hdr[(8 * w) / G];
    const float scale = half_bits_to_float(hb & 0xFFFFu), mn = half_bits_to_float(hb >> 16);
#pragma unroll
    for (int k = 0; k < 8; ++k) x[k] = code_to_float(codes, k) * scale + mn;
  } else {
#pragma unroll
    for (int k = 0; k < 8; k += 2) {
      const uint32_t hb = hdr[(8 * w + k) / G];
      const float scale = half_bits_to_float(hb & 0xFFFFu), mn = half_bits_to_float(hb >> 16);
      x[k] = code_to_float(codes, k) * scale + mn;
      x[k + 1] = code_to_float(codes, k + 1) * scale + mn;
    }
  }
}

using ::wkv::kernels::warp_sum;  // kernel_util.h

using ::wkv::kernels::warp_max;  // kernel_util.h

}  // namespace wkv::kernels::kv4dev
