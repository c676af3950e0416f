// The packed decode layout of W4 weights (GPU decode GEMV "F", kernels/src/w4_gemv_packed.cu).
//
// The storage format of quant_formats.h is the spec of the *values*; this header is the spec of one
// rearrangement of the same bits that a GPU reads with the fewest instructions per byte. The plain C++
// w4_pack_ref below defines it; the device packer (w4_pack in wkv_kernels/w4_gemv_packed.h) must produce the
// same bytes, and tests/unit/w4_packed_format_test.cpp reads every code back through w4_packed_code.
//
// Scope: group == 128 and cols % 128 == 0 (w4_packable). Rows are cut into tiles of 16 (the last tile padded
// with rows of code 0, scale +0, zero +0, which contribute exactly 0).
//
// A record = 16 rows × 128 channels (one quantization group of each row), 1088 bytes; records are stored
// tile-major: record (tile T, group G) at index T·(cols/128) + G, so the records of any contiguous work range
// are contiguous bytes (one bulk copy).
//
//   q[256] uint32   the codes, arranged for `mma.m16n8k32` with 8-bit A operands: lane L = 4·g + t of a warp
//                   (g = L / 4, t = L % 4) owns rows g and g + 8 and, in each of the record's 4 k-steps
//                   s (channels 32s … 32s + 31), channels 32s + 4t + b and 32s + 16 + 4t + b, b = 0 … 3.
//                   Its 8 words are j = 2s + r (r = 0: row g, r = 1: row g + 8), stored at
//                   q[(j / 4)·128 + L·4 + j % 4]: two 512-byte halves, so that each half is one conflict-free
//                   16-byte shared-memory load per lane.
//                   Word (s, r, L), byte b: low nibble = code of channel 32s + 4t + b,
//                                           high nibble = code of channel 32s + 16 + 4t + b.
//                   So  word & 0x0F0F0F0F        = the A-fragment register for channels 32s + 4t …,
//                       (word >> 4) & 0x0F0F0F0F = the one for channels 32s + 16 + 4t …: one or two
//                   instructions per 8 weights, no conversions (the mma multiplies the 8-bit codes exactly).
//   hz[16] uint32   per g = 0 … 7: hz[2g] = h(row g) | h(row g + 8) << 16 (the FP16 bits of quant_formats.h),
//                   hz[2g + 1] = z(row g) | z(row g + 8) << 16 as int16 (z is an integer in [−1024, 1024]: the
//                   kernel starts its integer accumulators at −z·Σ x-digits without a conversion).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "quant_formats.h"

namespace wkv {

constexpr int kW4PackedRows = 16;       // rows per tile
constexpr int kW4PackedGroup = 128;     // channels per record (= the only group size packed)
constexpr int kW4PackedLanes = 32;

struct W4PackedRecord {
  uint32_t q[256];
  uint32_t hz[16];
};
static_assert(sizeof(W4PackedRecord) == 1088, "a packed record is 1024 bytes of codes + 64 of FP16 parameters");

// True when a W4 matrix of this shape has a packed layout.
inline bool w4_packable(int rows, int cols, int group) {
  return rows >= 1 && cols >= kW4PackedGroup && group == kW4PackedGroup && cols % kW4PackedGroup == 0;
}

inline size_t w4_packed_tiles(int rows) { return (size_t)(rows + kW4PackedRows - 1) / kW4PackedRows; }
inline size_t w4_packed_records(int rows, int cols) { return w4_packed_tiles(rows) * (size_t)(cols / kW4PackedGroup); }
inline size_t w4_packed_bytes(int rows, int cols) { return w4_packed_records(rows, cols) * sizeof(W4PackedRecord); }

// Index into W4PackedRecord::q of the word that holds (row in tile rt = 0 … 15, channel in record c = 0 … 127),
// and the bit of its nibble.
WKV_HD int w4_packed_word_index(int rt, int c) {
  const int s = c / 32, t = (c % 16) / 4;
  const int g = rt % 8, r = rt / 8, lane = 4 * g + t, j = 2 * s + r;
  return (j / 4) * 128 + lane * 4 + j % 4;
}
WKV_HD int w4_packed_nibble_shift(int c) { return 8 * (c % 4) + 4 * ((c % 32) / 16); }

// The int16 bits stored for a zero point given as FP16 bits (an integer-valued FP16, quant_formats.h).
WKV_HD uint32_t w4_packed_zero_bits(uint16_t fp16_zero) {
  return (uint32_t)(uint16_t)(int16_t)fp16_to_float(fp16_zero);
}

// Packs m (validated; w4_packable must hold). Throws wkv::Error(invalid_argument) otherwise.
std::vector<W4PackedRecord> w4_pack_ref(const W4Matrix& m);

// Code of (row, channel) read back from packed records of a rows × cols matrix.
int w4_packed_code(const std::vector<W4PackedRecord>& p, int cols, int row, int c);
// Scale / zero of (row, group) read back from packed records, both as FP16 bits (as in W4Matrix).
W4GroupParams w4_packed_params(const std::vector<W4PackedRecord>& p, int cols, int row, int group_index);

}  // namespace wkv
