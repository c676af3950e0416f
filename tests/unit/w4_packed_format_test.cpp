// The packed decode layout (w4_packed_format.h): every code and parameter of random matrices reads back
// through the layout's accessors, padding rows are zero, one hand-computed word pins the bit order, and
// shapes without a packed layout are refused with a message that names what is wrong.
#include "w4_packed_format.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "wkv/error.h"

namespace {

using namespace wkv;

W4Matrix random_matrix(std::mt19937& rng, int rows, int cols) {
  std::normal_distribution<float> d(0.0f, 0.05f);
  std::vector<float> w((size_t)rows * cols);
  for (auto& v : w) v = d(rng);
  return quantize_w4_ref(w.data(), rows, cols, 128);
}

TEST(W4PackedFormat, EveryCodeAndParameterReadsBack) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (auto [rows, cols] : {std::pair{1, 128}, {16, 256}, {37, 384}, {64, 1024}}) {
    const W4Matrix m = random_matrix(rng, rows, cols);
    const std::vector<W4PackedRecord> p = w4_pack_ref(m);
    ASSERT_EQ(p.size(), w4_packed_tiles(rows) * (size_t)(cols / 128));
    ASSERT_EQ(p.size() * sizeof(W4PackedRecord), w4_packed_bytes(rows, cols));
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c)
        ASSERT_EQ(w4_packed_code(p, cols, r, c), w4_unpack(m.qweight[(size_t)r * m.words_per_row() + c / 8], c % 8))
            << "row " << r << " channel " << c;
      for (int g = 0; g < cols / 128; ++g) {
        const W4GroupParams gp = w4_packed_params(p, cols, r, g);
        EXPECT_EQ(gp.scale, m.scales[(size_t)r * m.groups_per_row() + g]);
        EXPECT_EQ(gp.zero, m.zeros[(size_t)r * m.groups_per_row() + g]);
      }
    }
    // Padding rows of the last tile: code 0, scale and zero +0 (they contribute exactly 0).
    for (int r = rows; r < (int)w4_packed_tiles(rows) * kW4PackedRows; ++r)
      for (int c = 0; c < cols; ++c) {
        ASSERT_EQ(w4_packed_code(p, cols, r, c), 0);
        EXPECT_EQ(w4_packed_params(p, cols, r, c / 128).scale, 0);
      }
  }
}

TEST(W4PackedFormat, WordBitOrderByHand) {
  // Row 0 (g = 0) and row 8 (g = 0, r = 1) of one record; codes chosen per channel.
  W4Matrix m;
  m.rows = 16;
  m.cols = 128;
  m.group = 128;
  m.qweight.assign(16 * 16, 0u);
  m.scales.assign(16, 0x3C00);
  m.zeros.assign(16, 0x4800);  // 8.0
  m.zeros[1] = 0xC800;         // row 1: z = −8 → int16 0xFFF8
  uint8_t q[128];
  for (int c = 0; c < 128; ++c) q[c] = (uint8_t)((c * 7 + 3) % 16);
  for (int w = 0; w < 16; ++w) m.qweight[w] = w4_pack_word(q + 8 * w);  // row 0
  m.scales[8] = 0x4000;                                                 // row 8: h = 2
  const std::vector<W4PackedRecord> p = w4_pack_ref(m);
  // Lane t = 1 (L = 1) of g = 0, k-step s = 0, row 0 → word j = 0 at q[0·128 + 1·4 + 0]: byte b holds
  // channel 4 + b (low nibble) and 20 + b (high nibble).
  uint32_t want = 0;
  for (int b = 0; b < 4; ++b) want |= (uint32_t)(q[4 + b] | q[20 + b] << 4) << (8 * b);
  EXPECT_EQ(p[0].q[4], want);
  // k-step 3, row 0 → j = 6 at q[128 + 4 + 2]: channels 100 + b and 116 + b.
  want = 0;
  for (int b = 0; b < 4; ++b) want |= (uint32_t)(q[100 + b] | q[116 + b] << 4) << (8 * b);
  EXPECT_EQ(p[0].q[128 + 4 + 2], want);
  EXPECT_EQ(p[0].q[5], 0u);  // row 8 is all code 0
  EXPECT_EQ(p[0].hz[3], 0xFFF8u | 8u << 16);  // z of rows 1 (−8) and 9
  EXPECT_EQ(p[0].hz[0], 0x3C00u | 0x4000u << 16);  // h of rows 0 and 8
  EXPECT_EQ(p[0].hz[1], 8u | 8u << 16);            // z of rows 0 and 8, as int16
}

TEST(W4PackedFormat, RefusesShapesWithoutLayout) {
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.0f, 0.05f);
  std::vector<float> w(16 * 192);
  for (auto& v : w) v = d(rng);
  EXPECT_FALSE(w4_packable(16, 192, 64));
  EXPECT_FALSE(w4_packable(16, 192, 192));
  EXPECT_TRUE(w4_packable(5, 256, 128));
  try {
    (void)w4_pack_ref(quantize_w4_ref(w.data(), 16, 192, 64));
    FAIL() << "packed a group-64 matrix";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("group 64"), std::string::npos) << e.what();
  }
}

}  // namespace
