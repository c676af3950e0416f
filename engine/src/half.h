// IEEE binary16 and bfloat16 conversions (host and device).
//
// Round-to-nearest-even on the way down, exact on the way up; NaN and Inf are preserved. Written
// without intrinsics so the CPU reference and the CUDA code agree bit-for-bit.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define WKV_HD __host__ __device__ inline
#else
#define WKV_HD inline
#endif

namespace wkv {

WKV_HD float bits_to_float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
WKV_HD uint32_t float_to_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

WKV_HD float fp16_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return bits_to_float(sign | 0x7F800000u | (mant << 13));  // Inf / NaN
  if (exp == 0) {
    if (mant == 0) return bits_to_float(sign);
    // subnormal: value = mant * 2^-24
    float v = (float)mant * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return bits_to_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

WKV_HD uint16_t float_to_fp16(float f) {
  const uint32_t x = float_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t absx = x & 0x7FFFFFFFu;
  if (absx >= 0x7F800000u) return (uint16_t)(sign | 0x7C00u | (absx > 0x7F800000u ? 0x200u : 0u));
  if (absx >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u);  // rounds to >= 65520 -> Inf
  if (absx < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    // value in units of 2^-24, rounded to nearest even
    float v = bits_to_float(absx) * 16777216.0f;  // exact: scaling by a power of two
    uint32_t i = (uint32_t)v;
    float frac = v - (float)i;
    if (frac > 0.5f || (frac == 0.5f && (i & 1u))) ++i;
    return (uint16_t)(sign | i);
  }
  // normal: rebias exponent, round mantissa 23 -> 10 bits to nearest even
  uint32_t r = absx - 0x38000000u;  // exp -= 112
  const uint32_t lsb = (r >> 13) & 1u;
  r += 0xFFFu + lsb;
  return (uint16_t)(sign | (r >> 13));
}

WKV_HD float bf16_to_float(uint16_t h) { return bits_to_float((uint32_t)h << 16); }

WKV_HD uint16_t float_to_bf16(float f) {
  uint32_t x = float_to_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7FFFu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

// Rounds through FP16 and back: the value an FP16 store would hold.
WKV_HD float round_fp16(float f) { return fp16_to_float(float_to_fp16(f)); }

}  // namespace wkv
