// The packed decode layout: the executable form of the spec in w4_packed_format.h.
#include "w4_packed_format.h"

#include <string>

#include "wkv/error.h"

namespace wkv {

std::vector<W4PackedRecord> w4_pack_ref(const W4Matrix& m) {
  validate_w4_matrix(m, "w4_pack_ref");
  if (!w4_packable(m.rows, m.cols, m.group))
    throw Error(ErrorCode::invalid_argument, "w4_pack_ref: W4 " + std::to_string(m.rows) + "x" +
                                                 std::to_string(m.cols) + " group " + std::to_string(m.group) +
                                                 " has no packed layout (needs group 128 and cols % 128 == 0)");
  const int groups = m.cols / kW4PackedGroup;
  std::vector<W4PackedRecord> out(w4_packed_records(m.rows, m.cols), W4PackedRecord{});
  for (size_t tile = 0; tile < w4_packed_tiles(m.rows); ++tile) {
    for (int gi = 0; gi < groups; ++gi) {
      W4PackedRecord& rec = out[tile * groups + gi];
      for (int rt = 0; rt < kW4PackedRows; ++rt) {
        const int row = (int)tile * kW4PackedRows + rt;
        if (row >= m.rows) continue;  // padding rows: code 0, h = z = +0
        for (int c = 0; c < kW4PackedGroup; ++c) {
          const int col = gi * kW4PackedGroup + c;
          const uint32_t code = (uint32_t)w4_unpack(m.qweight[(size_t)row * m.words_per_row() + col / 8], col % 8);
          rec.q[w4_packed_word_index(rt, c)] |= code << w4_packed_nibble_shift(c);
        }
        const size_t p = (size_t)row * m.groups_per_row() + gi;
        const int g = rt % 8, shift = rt < 8 ? 0 : 16;
        rec.hz[2 * g] |= (uint32_t)m.scales[p] << shift;
        rec.hz[2 * g + 1] |= w4_packed_zero_bits(m.zeros[p]) << shift;
      }
    }
  }
  return out;
}

int w4_packed_code(const std::vector<W4PackedRecord>& p, int cols, int row, int c) {
  const int groups = cols / kW4PackedGroup;
  const W4PackedRecord& rec = p[(size_t)(row / kW4PackedRows) * groups + c / kW4PackedGroup];
  const int cc = c % kW4PackedGroup;
  return (int)((rec.q[w4_packed_word_index(row % kW4PackedRows, cc)] >> w4_packed_nibble_shift(cc)) & 0xFu);
}

W4GroupParams w4_packed_params(const std::vector<W4PackedRecord>& p, int cols, int row, int group_index) {
  const int groups = cols / kW4PackedGroup;
  const W4PackedRecord& rec = p[(size_t)(row / kW4PackedRows) * groups + group_index];
  const int rt = row % kW4PackedRows, g = rt % 8, shift = rt < 8 ? 0 : 16;
  W4GroupParams gp;
  gp.scale = (uint16_t)(rec.hz[2 * g] >> shift);
  gp.zero = float_to_fp16((float)(int16_t)(uint16_t)(rec.hz[2 * g + 1] >> shift));
  return gp;
}

}  // namespace wkv
