// 4-bit storage formats: W4 (weights), KV4 (KV cache) and the A4 emulation of the W4A4 baseline.
//
// This header and quant_formats.cpp ARE the specification of DESIGN.md "Quantization semantics": the
// plain C++ *_ref functions define which bits are stored; every backend (CPU, CUDA, the calibrator's
// fake quantization) must store the same bits and dequantize to the same values up to float rounding.
// The WKV_HD helpers below are the shared scalar building blocks and compile for host and device.
//
// Common rules
// - Rounding to integers is round-half-to-even (std::nearbyint on the host, rintf on the device), like
//   torch.round. FP16 conversion is round-to-nearest-even (half.h).
// - Scales are rounded to FP16 FIRST and the stored FP16 value is what the quantizer divides by, so
//   dequantizing from storage reproduces exactly what the quantizer meant.
// - The decisions that pick stored bits use only comparisons, subtraction, IEEE division and rounding
//   (no product feeding a sum), so a device compiler's FMA contraction cannot change them. Device code
//   must not be built with fast-math division for these helpers. The one exception is the LWC product
//   γ·max − β·min, which only the host reference evaluates (the host build uses -ffp-contract=off).
// - min/max reductions ignore NaN and normalize −0 to +0, so any reduction order (a warp shuffle tree,
//   a serial loop) yields the same bits.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "half.h"

namespace wkv {

static_assert(sizeof(uint32_t) == 4 && sizeof(uint16_t) == 2, "packed 4-bit formats need exact widths");

// ---- shared scalar helpers ------------------------------------------------------------------------

// Round half to even, independent of compiler options (the default FP environment is assumed).
WKV_HD float q4_round(float v) {
#if defined(__CUDA_ARCH__)
  return rintf(v);
#else
  return std::nearbyint(v);
#endif
}

// Clamps an already rounded value to a 4-bit code. NaN maps to 0; never converts an out-of-range float.
WKV_HD int q4_clamp(float v) {
  if (!(v >= 0.0f)) return 0;
  if (v >= 15.0f) return 15;
  return (int)v;
}

// FP16 bits of f, saturated to ±65504 instead of ±Inf (used where storage must stay finite).
WKV_HD uint16_t fp16_bits_saturated(float f) {
  uint16_t b = float_to_fp16(f);
  if ((b & 0x7FFFu) == 0x7C00u) b = (uint16_t)((b & 0x8000u) | 0x7BFFu);
  return b;
}

// Running min/max that ignore NaN (mn starts at +Inf, mx at −Inf).
WKV_HD void q4_minmax_update(float v, float& mn, float& mx) {
  if (v < mn) mn = v;
  if (v > mx) mx = v;
}

// ---- W4: weights ----------------------------------------------------------------------------------
//
// A linear's weight W [rows = out][cols = in] is quantized asymmetric uint4 in groups of g consecutive
// input channels of one row (g divides cols, g % 8 == 0; g = cols means per-channel).
//
//   qweight [rows][cols/8] uint32   word k of row r holds input channels c = 8k .. 8k+7 as
//             word = c0 | c2<<4 | c4<<8 | c6<<12 | c1<<16 | c3<<20 | c5<<24 | c7<<28
//   scales  [rows][cols/g] fp16 bits   h, a positive normal FP16 (≥ 2^-14)
//   zeros   [rows][cols/g] fp16 bits   z, an integer in [−1024, 1024], stored exactly (0 as +0)
//   dequantized w' = (q − z)·h
//
// Why interleaved: (word >> 4j) & 0x000F000F puts q_{2j} in bits 0..3 and q_{2j+1} in bits 16..19, i.e.
// one channel pair in the two 16-bit halves of a register. OR-ing 0x64006400 (FP16 1024.0 in both halves)
// sets each half to the FP16 number 1024 + q exactly, because FP16 in [1024, 2048) has a unit step and
// the low mantissa bits are the integer. A GPU therefore turns 8 nibbles into 4 half2 pairs with one
// LOP3 (AND+OR) per pair and then one HSUB2 by (1024 + z) (exact for |z| ≤ 1024: every integer up to 2048
// is an FP16) and one HMUL2/HFMA2 by h, with no integer→float conversions. That is why |z| ≤ 1024.
//
// Group parameters (w4_choose_group_params, the spec):
//   γ = sigmoid(a), β = sigmoid(b) with LWC logits a, b; γ = β = 1 exactly without LWC ("RTN").
//   lo = β·min(w), hi = γ·max(w), h = fp16((hi − lo)/15), z = round(−lo/h).
//   Fallback, when h is not a positive normal FP16 (zero / negative / subnormal range, e.g. a constant or
//   all-zero group, or γ·max < β·min) or |z| > 1024 (range tiny relative to its offset, e.g. [10, 10.01]):
//   widen the range to include zero, lo = min(lo, 0), hi = max(hi, 0), h = max(fp16((hi − lo)/15), 2^-14),
//   z = round(−lo/h) ∈ [0, 15]. A constant group c then dequantizes to ≈ c at FP16 precision, an all-zero
//   group to exactly 0 (h = 2^-14, z = 0, q = 0). Typical LLM groups (both signs, range ≫ 2^-10) never
//   take the fallback. Non-finite weights or a range beyond FP16 (h = Inf) are rejected (wkv::Error).
//   q = clamp(round(w/h) + z, 0, 15) for every w of the group (values beyond [lo, hi] are clipped).
// Error bound for lo ≤ w ≤ hi: |w − w'| ≤ h/2 + 15·|h_exact − h| (the second term: FP16 rounding of h
// can leave the top code a hair short of hi).

constexpr int kW4ChannelsPerWord = 8;
constexpr uint32_t kW4PairMask = 0x000F000Fu;
constexpr uint32_t kFp16x2Bias1024 = 0x64006400u;  // FP16 1024.0 in both halves
constexpr float kW4MinScale = 6.103515625e-05f;    // 2^-14, the smallest positive normal FP16
constexpr float kW4MaxAbsZero = 1024.0f;

// Bit position of channel c (0..7) inside a W4 word.
WKV_HD int w4_nibble_shift(int c) { return (c & 1) * 16 + (c >> 1) * 4; }

// Packs 8 codes (each 0..15, channel order) into one interleaved word.
WKV_HD uint32_t w4_pack_word(const uint8_t* q8) {
  uint32_t w = 0;
  for (int c = 0; c < kW4ChannelsPerWord; ++c) w |= (uint32_t)(q8[c] & 0xFu) << w4_nibble_shift(c);
  return w;
}

// Code of channel c (0..7) of a word.
WKV_HD int w4_unpack(uint32_t word, int c) { return (int)((word >> w4_nibble_shift(c)) & 0xFu); }

// Channel pair (2j, 2j+1), j = 0..3, as two 16-bit halves: low = q_{2j}, high = q_{2j+1}.
WKV_HD uint32_t w4_pair_bits(uint32_t word, int j) { return (word >> (4 * j)) & kW4PairMask; }

// The same pair as two FP16 numbers 1024 + q (low half = channel 2j): the fast GPU dequant trick.
WKV_HD uint32_t w4_pair_fp16x2(uint32_t word, int j) { return w4_pair_bits(word, j) | kFp16x2Bias1024; }

// q = clamp(round(w/h) + z, 0, 15) with h, z the stored (FP16-exact) values.
WKV_HD int w4_quantize_value(float w, float h, float z) { return q4_clamp(q4_round(w / h) + z); }

WKV_HD float w4_dequantize_value(int q, float h, float z) { return ((float)q - z) * h; }

// Dequantizes the 8 channels of one word with the group's stored FP16 scale and zero bits.
WKV_HD void w4_dequantize_word(uint32_t word, uint16_t scale_bits, uint16_t zero_bits, float* out8) {
  const float h = fp16_to_float(scale_bits);
  const float z = fp16_to_float(zero_bits);
  for (int c = 0; c < kW4ChannelsPerWord; ++c) out8[c] = w4_dequantize_value(w4_unpack(word, c), h, z);
}

struct W4GroupParams {
  uint16_t scale;  // FP16 bits of h
  uint16_t zero;   // FP16 bits of z (integer-valued)
};
static_assert(sizeof(W4GroupParams) == 4, "W4GroupParams is two FP16 values");

struct W4Matrix {
  int rows = 0;
  int cols = 0;
  int group = 0;
  std::vector<uint32_t> qweight;  // [rows][cols/8]
  std::vector<uint16_t> scales;   // [rows][cols/group] FP16 bits
  std::vector<uint16_t> zeros;    // [rows][cols/group] FP16 bits

  int words_per_row() const { return cols / kW4ChannelsPerWord; }
  int groups_per_row() const { return group > 0 ? cols / group : 0; }
  // Storage bytes of the three arrays.
  size_t bytes() const {
    return qweight.size() * sizeof(uint32_t) + (scales.size() + zeros.size()) * sizeof(uint16_t);
  }
};

// LWC clipping factor: sigmoid in float, 1 / (1 + exp(−a)).
float lwc_sigmoid(float a);

// Throws wkv::Error(invalid_argument) unless rows ≥ 1, cols ≥ 1, group ≥ 8, group % 8 == 0 and
// cols % group == 0. `what` names the tensor in the message.
void validate_w4_shape(int rows, int cols, int group, const char* what);
// Also checks that the three arrays of m have the sizes its shape implies.
void validate_w4_matrix(const W4Matrix& m, const char* what);

// Chooses h and z for one group of n weights (the spec above). Throws on non-finite input.
W4GroupParams w4_choose_group_params(const float* w, int n, float gamma, float beta);

// Quantizes W [rows][cols] (row-major). lwc_a / lwc_b: LWC logits [rows][cols/group], both or neither
// (nullptr = no LWC, γ = β = 1).
W4Matrix quantize_w4_ref(const float* W, int rows, int cols, int group, const float* lwc_a = nullptr,
                         const float* lwc_b = nullptr);
// Dequantized [rows][cols] / one row into out[cols].
std::vector<float> dequantize_w4_ref(const W4Matrix& m);
void dequantize_w4_row(const W4Matrix& m, int row, float* out);
// Σ_c w'[row][c]·x[c] without materializing the row (float accumulation per group).
float w4_row_dot(const W4Matrix& m, int row, const float* x);
// W ← dequantize(quantize(W)) in place, same arguments as quantize_w4_ref.
void fake_quant_w4(float* W, int rows, int cols, int group, const float* lwc_a = nullptr,
                   const float* lwc_b = nullptr);

// ---- KV4: KV cache ---------------------------------------------------------------------------------
//
// Per (token, KV head) one head vector x[D] of keys (after RoPE) or values.
// 1. Static smoothing per channel: x̃_c = (x_c − δ_c) / s_c (IEEE division; δ = 0, s = 1 is "RTN").
// 2. Groups of G consecutive channels (G even, G divides D; default G = D): mn, mx = min, max of x̃ over
//    the group; scale = fp16((mx − mn)/15), min = fp16(mn); q = clamp(round((x̃ − min)/scale), 0, 15).
// 3. Dequantized x̂_c = (q·scale + min)·s_c + δ_c.
// Degenerate rules: scale == 0 (constant group, or a range below FP16 resolution): every q = 0 and the
// group dequantizes to min. An FP16 overflow of scale or min saturates to ±65504 (storage stays finite).
// NaN inputs are ignored by min/max and get q = 0; a group with no non-NaN value uses mn = mx = 0.
//
// Storage per (token, KV head), kv4_bytes_per_head(D, G) = D/2 + 4·(D/G) bytes:
//   qs  [D/2] bytes: byte i = q_{2i} | q_{2i+1} << 4 (channel 2i in the low nibble)
//   hdr [D/G] KV4GroupHeader {fp16 scale, fp16 min}
// Why not the W4 interleave: attention reads one token's channels in order, each lane taking a byte
// (or a run of bytes) of consecutive channel pairs and dotting it with the matching query pair; plain
// sequential nibbles keep that a byte load + two shifts, and the quantizer writes a byte per pair
// without any cross-lane shuffle. No half2 trick is needed here because the math is a float dot product.
// Error bound per channel: |x − x̂| ≤ (scale/2 + 15·|scale_exact − scale| + |min − mn|)·s_c.

struct KV4GroupHeader {
  uint16_t scale;  // FP16 bits
  uint16_t min;    // FP16 bits
};
static_assert(sizeof(KV4GroupHeader) == 4, "KV4GroupHeader is two FP16 values");

WKV_HD uint8_t kv4_pack_byte(int q_lo, int q_hi) { return (uint8_t)((q_lo & 0xF) | ((q_hi & 0xF) << 4)); }

// Code of channel c from the packed bytes of one head vector.
WKV_HD int kv4_unpack(const uint8_t* qs, int c) { return (qs[c >> 1] >> ((c & 1) * 4)) & 0xF; }

WKV_HD float kv4_smooth(float x, float delta, float s) { return (x - delta) / s; }

// Header of a group from the min and max of its smoothed values (as reduced with q4_minmax_update).
WKV_HD KV4GroupHeader kv4_group_header(float mn, float mx) {
  if (!(mn <= mx)) mn = mx = 0.0f;  // nothing but NaN in the group
  float range = mx - mn;
  if (!(range > 0.0f)) range = 0.0f;  // also turns −0 into +0
  KV4GroupHeader h;
  h.scale = fp16_bits_saturated(range / 15.0f);
  h.min = fp16_bits_saturated(mn + 0.0f);  // + 0 maps −0 to +0
  return h;
}

// Code of one smoothed value given the group's stored FP16 min and scale (as floats).
WKV_HD int kv4_quantize_value(float x_smoothed, float min_f, float scale_f) {
  if (scale_f == 0.0f) return 0;
  return q4_clamp(q4_round((x_smoothed - min_f) / scale_f));
}

WKV_HD float kv4_dequantize_value(int q, float min_f, float scale_f, float delta, float s) {
  return ((float)q * scale_f + min_f) * s + delta;
}

// Bytes of one (token, KV head): D/2 code bytes + D/G headers. Throws on an invalid D / G.
size_t kv4_bytes_per_head(int D, int G);
// Throws wkv::Error(invalid_argument) unless D ≥ 2 is even, G ≥ 2 is even and G divides D.
void validate_kv4_shape(int D, int G, const char* what);
// Throws unless every δ is finite and every s is finite and > 0.
void validate_kv_smoothing(const float* delta, const float* s, int n, const char* what);

// Quantizes one head vector x[D]: writes qs[D/2] and hdr[D/G]. delta / s may be nullptr (0 / 1).
void quantize_kv4_ref(const float* x, int D, int G, const float* delta, const float* s, uint8_t* qs,
                      KV4GroupHeader* hdr);
// x̂[D] from storage.
void dequantize_kv4_ref(const uint8_t* qs, const KV4GroupHeader* hdr, int D, int G, const float* delta,
                        const float* s, float* out);
// x ← dequantize(quantize(x)) in place (POQ-off attention, calibration).
void fake_quant_kv4(float* x, int D, int G, const float* delta, const float* s);

// Per-channel min/max of K or V over calibration tokens (NaN ignored).
struct KvChannelStats {
  int channels = 0;
  int64_t tokens = 0;
  std::vector<float> min;  // [channels], +Inf before the first token
  std::vector<float> max;  // [channels], −Inf before the first token

  explicit KvChannelStats(int n);
  void add(const float* x);                        // one vector x[channels]
  void add_tokens(const float* x, int64_t count);  // x[count][channels]
  void merge(const KvChannelStats& other);
};

// Smoothing initialization from channel statistics (DESIGN: δ = mid-range, s ∝ half-range^0.5, mean 1):
//   δ_c = (max_c + min_c)/2, t_c = sqrt((max_c − min_c)/2), t_c ← max(t_c, 1e-3·max_k t_k) (a constant
//   channel gets a small positive s, which is harmless since its x̃ is 0), s_c = t_c / mean(t).
//   If every channel is constant, s = 1. Throws if a channel was never observed (min > max) or is not finite.
void kv_smoothing_from_stats(const float* ch_min, const float* ch_max, int n, float* delta, float* s);

// ---- A4: activations of the W4A4 baseline (emulation) -----------------------------------------------
//
// Dynamic per-token asymmetric 4-bit fake quantization of a linear's input vector x[n], in fp32 (the
// baseline is only emulated to compare accuracy; nothing is stored): scale = (max − min)/15,
// z = round(−min/scale), x ← (clamp(round(x/scale) + z, 0, 15) − z)·scale. A constant vector (scale 0) or
// one with a non-finite range is left unchanged.
void fake_quant_a4_per_token(float* x, int n);

}  // namespace wkv
