// Tests of the 4-bit formats (quant_formats.h): packing, the interleaved W4 word trick, W4 / KV4 / A4
// quantization against independent re-derivations of the spec, error bounds, degenerate groups, shapes.
#include "quant_formats.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include "half.h"
#include "wkv/error.h"

namespace {

using namespace wkv;

// Fresh seed per test run, reported on failure.
struct Rng {
  uint32_t seed = std::random_device{}();
  std::mt19937 gen{seed};
  float uniform(float a, float b) { return std::uniform_real_distribution<float>(a, b)(gen); }
  float normal(float sd) { return std::normal_distribution<float>(0.0f, sd)(gen); }
  int integer(int a, int b) { return std::uniform_int_distribution<int>(a, b)(gen); }
};
#define TRACE_SEED(rng) SCOPED_TRACE(::testing::Message() << "seed " << (rng).seed)

// LLM-like weights: normal with a few outliers, per-row magnitude varying.
std::vector<float> random_weights(Rng& rng, int rows, int cols) {
  std::vector<float> w((size_t)rows * cols);
  for (int r = 0; r < rows; ++r) {
    const float sd = rng.uniform(0.005f, 0.1f);
    for (int c = 0; c < cols; ++c) {
      float v = rng.normal(sd);
      if (rng.integer(0, 99) == 0) v *= 8.0f;
      w[(size_t)r * cols + c] = v;
    }
  }
  return w;
}

template <class F>
void expect_invalid(F&& f) {
  try {
    f();
    ADD_FAILURE() << "expected wkv::Error(invalid_argument)";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
  }
}

// ---- packing ------------------------------------------------------------------------------------------

TEST(QuantFormats, W4PackUnpackEveryNibblePosition) {
  Rng rng;
  TRACE_SEED(rng);
  for (int pos = 0; pos < 8; ++pos) {
    for (int v = 0; v < 16; ++v) {
      uint8_t q[8];
      for (int c = 0; c < 8; ++c) q[c] = (uint8_t)rng.integer(0, 15);
      q[pos] = (uint8_t)v;
      const uint32_t word = w4_pack_word(q);
      // The layout written out literally from the spec.
      const uint32_t expected = (uint32_t)q[0] | (uint32_t)q[2] << 4 | (uint32_t)q[4] << 8 |
                                (uint32_t)q[6] << 12 | (uint32_t)q[1] << 16 | (uint32_t)q[3] << 20 |
                                (uint32_t)q[5] << 24 | (uint32_t)q[7] << 28;
      ASSERT_EQ(word, expected) << "pos " << pos << " value " << v;
      for (int c = 0; c < 8; ++c) ASSERT_EQ(w4_unpack(word, c), q[c]) << "channel " << c;
    }
  }
  // One channel set alone lands at its documented bit position.
  const int shifts[8] = {0, 16, 4, 20, 8, 24, 12, 28};
  for (int c = 0; c < 8; ++c) {
    uint8_t q[8] = {};
    q[c] = 0xF;
    EXPECT_EQ(w4_pack_word(q), 0xFu << shifts[c]) << "channel " << c;
  }
}

TEST(QuantFormats, W4InterleavedPairTrick) {
  Rng rng;
  TRACE_SEED(rng);
  for (int it = 0; it < 2000; ++it) {
    uint8_t q[8];
    for (int c = 0; c < 8; ++c) q[c] = (uint8_t)rng.integer(0, 15);
    const uint32_t word = w4_pack_word(q);
    const int z = rng.integer(-1024, 1024);
    for (int j = 0; j < 4; ++j) {
      const uint32_t pair = (word >> (4 * j)) & 0x000F000Fu;
      ASSERT_EQ(pair, w4_pair_bits(word, j));
      ASSERT_EQ(pair & 0xFFFFu, q[2 * j]);
      ASSERT_EQ(pair >> 16, q[2 * j + 1]);
      const uint32_t h2 = pair | 0x64006400u;
      ASSERT_EQ(h2, w4_pair_fp16x2(word, j));
      const float lo = fp16_to_float((uint16_t)(h2 & 0xFFFFu)), hi = fp16_to_float((uint16_t)(h2 >> 16));
      ASSERT_EQ(lo, 1024.0f + q[2 * j]);
      ASSERT_EQ(hi, 1024.0f + q[2 * j + 1]);
      // (1024 + q) − (1024 + z) is exact in FP16: 1024 + z is representable and so is the difference.
      const float bias = 1024.0f + (float)z;
      ASSERT_EQ(round_fp16(bias), bias);
      ASSERT_EQ(round_fp16(lo - bias), (float)(q[2 * j] - z));
      ASSERT_EQ(round_fp16(hi - bias), (float)(q[2 * j + 1] - z));
    }
  }
}

TEST(QuantFormats, KV4PackUnpackEveryNibblePosition) {
  Rng rng;
  TRACE_SEED(rng);
  const int D = 16;
  for (int pos = 0; pos < D; ++pos) {
    for (int v = 0; v < 16; ++v) {
      int q[D];
      for (int c = 0; c < D; ++c) q[c] = rng.integer(0, 15);
      q[pos] = v;
      uint8_t qs[D / 2];
      for (int i = 0; i < D / 2; ++i) qs[i] = kv4_pack_byte(q[2 * i], q[2 * i + 1]);
      for (int i = 0; i < D / 2; ++i) ASSERT_EQ(qs[i], (uint8_t)(q[2 * i] + 16 * q[2 * i + 1]));
      for (int c = 0; c < D; ++c) ASSERT_EQ(kv4_unpack(qs, c), q[c]) << "channel " << c;
    }
  }
}

// ---- W4 -----------------------------------------------------------------------------------------------

// The spec's regular path re-derived from DESIGN (γ, β given), for groups that do not hit a fallback.
struct SpecGroup {
  float lo, hi, h_exact, h, z;
};
SpecGroup spec_group(const float* w, int n, float gamma, float beta) {
  const auto [pmn, pmx] = std::minmax_element(w, w + n);
  SpecGroup s;
  s.lo = beta * *pmn;
  s.hi = gamma * *pmx;
  s.h_exact = (s.hi - s.lo) / 15.0f;
  s.h = round_fp16(s.h_exact);
  s.z = std::nearbyint(-s.lo / s.h);
  return s;
}

void check_w4_against_spec(const std::vector<float>& W, int rows, int cols, int g, const float* a,
                           const float* b) {
  const W4Matrix m = quantize_w4_ref(W.data(), rows, cols, g, a, b);
  ASSERT_EQ(m.qweight.size(), (size_t)rows * cols / 8);
  ASSERT_EQ(m.scales.size(), (size_t)rows * (cols / g));
  ASSERT_EQ(m.zeros.size(), (size_t)rows * (cols / g));
  EXPECT_EQ(m.bytes(), (size_t)rows * cols / 2 + (size_t)rows * (cols / g) * 4);
  const std::vector<float> deq = dequantize_w4_ref(m);
  for (int r = 0; r < rows; ++r) {
    for (int gi = 0; gi < cols / g; ++gi) {
      const size_t pi = (size_t)r * (cols / g) + gi;
      const float* w = W.data() + (size_t)r * cols + (size_t)gi * g;
      const float gamma = a ? 1.0f / (1.0f + std::exp(-a[pi])) : 1.0f;
      const float beta = b ? 1.0f / (1.0f + std::exp(-b[pi])) : 1.0f;
      const SpecGroup s = spec_group(w, g, gamma, beta);
      ASSERT_GE(s.h, 6.103515625e-05f) << "test data must stay on the regular path";
      ASSERT_LE(std::fabs(s.z), 1024.0f);
      const float h = fp16_to_float(m.scales[pi]), z = fp16_to_float(m.zeros[pi]);
      ASSERT_EQ(h, s.h) << "row " << r << " group " << gi;
      ASSERT_EQ(z, s.z) << "row " << r << " group " << gi;
      ASSERT_EQ(z, std::trunc(z)) << "zero point must be an integer";
      ASSERT_EQ(m.zeros[pi], float_to_fp16(s.z + 0.0f)) << "zero point stored exactly (−0 as +0)";
      for (int c = 0; c < g; ++c) {
        const int col = gi * g + c;
        const int q = w4_unpack(m.qweight[(size_t)r * cols / 8 + col / 8], col % 8);
        const float expect_q = std::clamp(std::nearbyint(w[c] / s.h) + s.z, 0.0f, 15.0f);
        ASSERT_EQ((float)q, expect_q) << "row " << r << " col " << col;
        const float wq = deq[(size_t)r * cols + col];
        ASSERT_EQ(wq, ((float)q - s.z) * s.h);
        if (w[c] >= s.lo && w[c] <= s.hi) {
          const double bound = s.h / 2.0 + 15.0 * std::fabs(s.h_exact - s.h) + 1e-6 * std::fabs(w[c]) + 1e-9;
          ASSERT_LE(std::fabs((double)w[c] - wq), bound) << "row " << r << " col " << col;
        }
      }
    }
  }
}

TEST(QuantFormats, W4RtnMatchesSpecSeveralGroupSizes) {
  Rng rng;
  TRACE_SEED(rng);
  const int cols = 256;
  for (int g : {8, 32, 64, 128, 256}) {
    SCOPED_TRACE(::testing::Message() << "g " << g);
    const int rows = 2 * rng.integer(1, 8) + 1;  // odd
    const std::vector<float> W = random_weights(rng, rows, cols);
    check_w4_against_spec(W, rows, cols, g, nullptr, nullptr);
  }
}

TEST(QuantFormats, W4PerChannelGroupEqualsCols) {
  Rng rng;
  TRACE_SEED(rng);
  for (int cols : {8, 24, 200}) {
    const int rows = 5;
    const std::vector<float> W = random_weights(rng, rows, cols);
    check_w4_against_spec(W, rows, cols, cols, nullptr, nullptr);
    const W4Matrix m = quantize_w4_ref(W.data(), rows, cols, cols);
    EXPECT_EQ(m.scales.size(), (size_t)rows);
  }
}

TEST(QuantFormats, W4LwcSaturatedEqualsPlainMinMax) {
  Rng rng;
  TRACE_SEED(rng);
  const int rows = 7, cols = 128, g = 32;
  const std::vector<float> W = random_weights(rng, rows, cols);
  // sigmoid(100) rounds to exactly 1.0f: the γ = β = 1 limit.
  ASSERT_EQ(lwc_sigmoid(100.0f), 1.0f);
  std::vector<float> a((size_t)rows * cols / g, 100.0f), b(a.size(), 100.0f);
  const W4Matrix plain = quantize_w4_ref(W.data(), rows, cols, g);
  const W4Matrix lwc = quantize_w4_ref(W.data(), rows, cols, g, a.data(), b.data());
  EXPECT_EQ(plain.qweight, lwc.qweight);
  EXPECT_EQ(plain.scales, lwc.scales);
  EXPECT_EQ(plain.zeros, lwc.zeros);
}

TEST(QuantFormats, W4LwcClips) {
  Rng rng;
  TRACE_SEED(rng);
  const int rows = 9, cols = 192, g = 64, ng = cols / g;
  const std::vector<float> W = random_weights(rng, rows, cols);
  std::vector<float> a((size_t)rows * ng), b(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = rng.uniform(-1.0f, 4.0f);
    b[i] = rng.uniform(-1.0f, 4.0f);
  }
  check_w4_against_spec(W, rows, cols, g, a.data(), b.data());
  const W4Matrix m = quantize_w4_ref(W.data(), rows, cols, g, a.data(), b.data());
  const std::vector<float> deq = dequantize_w4_ref(m);
  int clipped = 0;
  for (int r = 0; r < rows; ++r) {
    for (int gi = 0; gi < ng; ++gi) {
      const size_t pi = (size_t)r * ng + gi;
      const float* w = W.data() + (size_t)r * cols + (size_t)gi * g;
      const float gamma = 1.0f / (1.0f + std::exp(-a[pi])), beta = 1.0f / (1.0f + std::exp(-b[pi]));
      const SpecGroup s = spec_group(w, g, gamma, beta);
      const float* d = deq.data() + (size_t)r * cols + (size_t)gi * g;
      const float dmax = *std::max_element(d, d + g), dmin = *std::min_element(d, d + g);
      const double slack = 15.0 * std::fabs(s.h_exact - s.h) + 1e-7;
      EXPECT_LE(dmax, s.hi + s.h / 2.0 + slack) << "row " << r << " group " << gi;
      EXPECT_GE(dmin, s.lo - s.h / 2.0 - slack) << "row " << r << " group " << gi;
      // Where γ·max + h/2 < max, the largest weight really is clipped below its value.
      const float wmax = *std::max_element(w, w + g);
      if (s.hi + s.h / 2.0 + slack < wmax) {
        EXPECT_LT(dmax, wmax);
        ++clipped;
      }
    }
  }
  EXPECT_GT(clipped, 0) << "LWC logits in [-1, 4] should clip some groups";
}

TEST(QuantFormats, W4RowHelpersMatchFullDequant) {
  Rng rng;
  TRACE_SEED(rng);
  const int rows = 11, cols = 384, g = 128;
  std::vector<float> W = random_weights(rng, rows, cols);
  const W4Matrix m = quantize_w4_ref(W.data(), rows, cols, g);
  const std::vector<float> deq = dequantize_w4_ref(m);
  std::vector<float> x(cols);
  for (float& v : x) v = rng.normal(1.0f);
  std::vector<float> row(cols);
  for (int r = 0; r < rows; ++r) {
    dequantize_w4_row(m, r, row.data());
    ASSERT_TRUE(std::equal(row.begin(), row.end(), deq.begin() + (size_t)r * cols));
    double ref = 0.0, mag = 0.0;
    for (int c = 0; c < cols; ++c) {
      ref += (double)row[c] * x[c];
      mag += std::fabs((double)row[c] * x[c]);
    }
    EXPECT_NEAR(w4_row_dot(m, r, x.data()), ref, 1e-5 * mag + 1e-9) << "row " << r;
  }
  std::vector<float> fq = W;
  fake_quant_w4(fq.data(), rows, cols, g);
  EXPECT_EQ(fq, deq);
  expect_invalid([&] { dequantize_w4_row(m, rows, row.data()); });
  expect_invalid([&] { w4_row_dot(m, -1, x.data()); });
}

TEST(QuantFormats, W4DegenerateGroups) {
  const int g = 8;
  // All zero: h = 2^-14, z = 0, exact zeros.
  {
    std::vector<float> w(g, 0.0f);
    w[3] = -0.0f;
    const W4Matrix m = quantize_w4_ref(w.data(), 1, g, g);
    EXPECT_EQ(m.scales[0], 0x0400);  // 2^-14
    EXPECT_EQ(m.zeros[0], 0x0000);   // +0, not −0
    EXPECT_EQ(m.qweight[0], 0u);
    for (float v : dequantize_w4_ref(m)) EXPECT_EQ(v, 0.0f);
  }
  // Constant positive group: range widened to [0, c] → h = fp16(c/15), z = 0, q = 15.
  for (float c : {0.37f, 3.0f, 1e-3f}) {
    std::vector<float> w(g, c);
    const W4Matrix m = quantize_w4_ref(w.data(), 1, g, g);
    const float h = round_fp16(c / 15.0f);
    EXPECT_EQ(fp16_to_float(m.scales[0]), h) << c;
    EXPECT_EQ(fp16_to_float(m.zeros[0]), 0.0f);
    for (float v : dequantize_w4_ref(m)) EXPECT_NEAR(v, c, h / 2 + 15 * std::fabs(c / 15.0f - h)) << c;
  }
  // Constant negative group: range [c, 0] → z = 15, q = 0.
  {
    const float c = -2.5f;
    std::vector<float> w(g, c);
    const W4Matrix m = quantize_w4_ref(w.data(), 1, g, g);
    const float h = round_fp16(2.5f / 15.0f);
    EXPECT_EQ(fp16_to_float(m.scales[0]), h);
    EXPECT_EQ(fp16_to_float(m.zeros[0]), 15.0f);
    for (float v : dequantize_w4_ref(m)) EXPECT_NEAR(v, c, 15 * std::fabs(2.5f / 15.0f - h) + 1e-6);
  }
  // Narrow range far from zero: the regular z ≈ −15000 is out of range → fallback [0, max].
  {
    std::vector<float> w = {10.0f, 10.002f, 10.004f, 10.006f, 10.008f, 10.01f, 10.001f, 10.003f};
    const W4Matrix m = quantize_w4_ref(w.data(), 1, g, g);
    const float h = round_fp16(10.01f / 15.0f);
    EXPECT_EQ(fp16_to_float(m.scales[0]), h);
    EXPECT_EQ(fp16_to_float(m.zeros[0]), 0.0f);
    const std::vector<float> d = dequantize_w4_ref(m);
    for (int i = 0; i < g; ++i) EXPECT_NEAR(d[i], w[i], h / 2 + 15 * std::fabs(10.01f / 15.0f - h));
  }
  // All positive but wide: stays on the regular path with a negative zero point.
  {
    std::vector<float> w = {1.0f, 2.0f, 1.5f, 1.25f, 1.75f, 1.1f, 1.9f, 1.3f};
    const W4Matrix m = quantize_w4_ref(w.data(), 1, g, g);
    const float h = round_fp16(1.0f / 15.0f);
    EXPECT_EQ(fp16_to_float(m.scales[0]), h);
    EXPECT_EQ(fp16_to_float(m.zeros[0]), std::nearbyint(-1.0f / h));  // −15
    EXPECT_EQ(w4_unpack(m.qweight[0], 0), 0);
    EXPECT_EQ(w4_unpack(m.qweight[0], 1), 15);
  }
  // Tiny magnitudes (range below the smallest normal FP16 step): h clamps to 2^-14, all dequantize to 0.
  {
    std::vector<float> w = {1e-6f, -2e-6f, 3e-6f, 0.0f, -1e-6f, 2e-6f, 5e-7f, -5e-7f};
    const W4Matrix m = quantize_w4_ref(w.data(), 1, g, g);
    EXPECT_EQ(m.scales[0], 0x0400);
    for (float v : dequantize_w4_ref(m)) EXPECT_EQ(v, 0.0f);
  }
  // γ·max < β·min (LWC shrinks an all-positive group past itself): fallback keeps things finite.
  {
    std::vector<float> w = {1.0f, 1.05f, 1.1f, 1.02f, 1.03f, 1.04f, 1.06f, 1.07f};
    std::vector<float> a = {-3.0f}, b = {4.0f};
    const W4Matrix m = quantize_w4_ref(w.data(), 1, g, g, a.data(), b.data());
    const float h = fp16_to_float(m.scales[0]);
    EXPECT_GE(h, 6.103515625e-05f);
    EXPECT_EQ(fp16_to_float(m.zeros[0]), 0.0f);
    EXPECT_TRUE(std::isfinite(h));
  }
}

TEST(QuantFormats, RoundingIsHalfToEven) {
  // Range [0, 15] gives h = 1 and z = 0, so w/h lands exactly on .5 ties: 0.5 → 0, 1.5 → 2, 2.5 → 2.
  const std::vector<float> w = {0.0f, 15.0f, 0.5f, 1.5f, 2.5f, 3.5f, 13.5f, 14.5f};
  const W4Matrix m = quantize_w4_ref(w.data(), 1, 8, 8);
  ASSERT_EQ(fp16_to_float(m.scales[0]), 1.0f);
  ASSERT_EQ(fp16_to_float(m.zeros[0]), 0.0f);
  const int expect_w[8] = {0, 15, 0, 2, 2, 4, 14, 14};
  for (int c = 0; c < 8; ++c) EXPECT_EQ(w4_unpack(m.qweight[0], c), expect_w[c]) << c;
  // Same for KV4 (min 0, scale 1) and for A4 (min −0.5 → z = round(0.5) = 0).
  uint8_t qs[4];
  KV4GroupHeader hdr[1];
  quantize_kv4_ref(w.data(), 8, 8, nullptr, nullptr, qs, hdr);
  for (int c = 0; c < 8; ++c) EXPECT_EQ(kv4_unpack(qs, c), expect_w[c]) << c;
  std::vector<float> a = {-0.5f, 14.5f, 0.5f, 1.5f, 2.5f, 3.5f, 13.5f, 4.5f};
  fake_quant_a4_per_token(a.data(), 8);
  const float expect_a[8] = {0.0f, 14.0f, 0.0f, 2.0f, 2.0f, 4.0f, 14.0f, 4.0f};
  for (int c = 0; c < 8; ++c) EXPECT_EQ(a[c], expect_a[c]) << c;
}

TEST(QuantFormats, W4InvalidInputsThrow) {
  std::vector<float> w(64 * 3, 0.1f);
  expect_invalid([&] { quantize_w4_ref(w.data(), 3, 64, 12); });  // not a multiple of 8
  expect_invalid([&] { quantize_w4_ref(w.data(), 3, 64, 0); });   // zero
  expect_invalid([&] { quantize_w4_ref(w.data(), 3, 64, 48); });  // does not divide 64
  expect_invalid([&] { quantize_w4_ref(w.data(), 0, 64, 32); });  // no rows
  expect_invalid([&] { quantize_w4_ref(w.data(), 3, 60, 60); });  // 60 not a multiple of 8
  expect_invalid([&] { quantize_w4_ref(nullptr, 3, 64, 32); });
  std::vector<float> a(6, 0.0f);
  expect_invalid([&] { quantize_w4_ref(w.data(), 3, 64, 32, a.data(), nullptr); });
  std::vector<float> bad = w;
  bad[70] = std::nanf("");
  expect_invalid([&] { quantize_w4_ref(bad.data(), 3, 64, 32); });
  bad[70] = 1e7f;  // range beyond an FP16 scale
  expect_invalid([&] { quantize_w4_ref(bad.data(), 3, 64, 32); });
  W4Matrix m = quantize_w4_ref(w.data(), 3, 64, 32);
  m.zeros.pop_back();
  expect_invalid([&] { dequantize_w4_ref(m); });
}

// ---- KV4 ----------------------------------------------------------------------------------------------

TEST(QuantFormats, KV4BytesPerHead) {
  EXPECT_EQ(kv4_bytes_per_head(128, 128), 64u + 4u);
  EXPECT_EQ(kv4_bytes_per_head(128, 32), 64u + 16u);
  EXPECT_EQ(kv4_bytes_per_head(64, 2), 32u + 128u);
  expect_invalid([] { kv4_bytes_per_head(127, 127); });
  expect_invalid([] { kv4_bytes_per_head(128, 3); });
  expect_invalid([] { kv4_bytes_per_head(128, 48); });
  expect_invalid([] { kv4_bytes_per_head(0, 2); });
}

TEST(QuantFormats, KV4RoundTripMatchesSpec) {
  Rng rng;
  TRACE_SEED(rng);
  for (int D : {64, 128}) {
    for (int G : {2, 16, 32, D}) {
      SCOPED_TRACE(::testing::Message() << "D " << D << " G " << G);
      std::vector<float> delta(D), s(D);
      for (int c = 0; c < D; ++c) {
        delta[c] = rng.normal(0.5f);
        s[c] = rng.uniform(0.2f, 3.0f);
      }
      for (int tok = 0; tok < 25; ++tok) {
        std::vector<float> x(D);
        for (int c = 0; c < D; ++c) x[c] = rng.normal(1.0f) * (1.0f + 4.0f * (c % 7 == 0)) + delta[c];
        std::vector<uint8_t> qs(D / 2, 0xAB);
        std::vector<KV4GroupHeader> hdr(D / G, KV4GroupHeader{0xDEAD, 0xBEEF});
        quantize_kv4_ref(x.data(), D, G, delta.data(), s.data(), qs.data(), hdr.data());
        std::vector<float> out(D, std::nanf(""));
        dequantize_kv4_ref(qs.data(), hdr.data(), D, G, delta.data(), s.data(), out.data());
        for (int gi = 0; gi < D / G; ++gi) {
          std::vector<float> xt(G);
          for (int i = 0; i < G; ++i) xt[i] = (x[gi * G + i] - delta[gi * G + i]) / s[gi * G + i];
          const auto [pmn, pmx] = std::minmax_element(xt.begin(), xt.end());
          const float scale_exact = (*pmx - *pmn) / 15.0f;
          const float scale = round_fp16(scale_exact), mn = round_fp16(*pmn);
          ASSERT_EQ(fp16_to_float(hdr[gi].scale), scale);
          ASSERT_EQ(fp16_to_float(hdr[gi].min), mn);
          for (int i = 0; i < G; ++i) {
            const int c = gi * G + i;
            // scale 0 (range below FP16 resolution; rare with G = 2): every code is 0.
            const float q =
                scale == 0.0f ? 0.0f : std::clamp(std::nearbyint((xt[i] - mn) / scale), 0.0f, 15.0f);
            ASSERT_EQ((float)kv4_unpack(qs.data(), c), q) << "channel " << c;
            const double bound = (scale / 2.0 + 15.0 * std::fabs(scale_exact - scale) + std::fabs(mn - *pmn) +
                                  (scale == 0.0f ? (double)(*pmx - *pmn) : 0.0)) *
                                     s[c] +
                                 1e-6 * (std::fabs(x[c]) + 1.0);
            ASSERT_LE(std::fabs((double)x[c] - out[c]), bound) << "channel " << c;
          }
        }
        std::vector<float> fq = x;
        fake_quant_kv4(fq.data(), D, G, delta.data(), s.data());
        ASSERT_EQ(fq, out);
      }
    }
  }
}

TEST(QuantFormats, KV4IdentitySmoothingEqualsRtn) {
  Rng rng;
  TRACE_SEED(rng);
  const int D = 128, G = 32;
  std::vector<float> x(D), zero(D, 0.0f), one(D, 1.0f);
  for (float& v : x) v = rng.normal(2.0f);
  std::vector<uint8_t> qa(D / 2), qb(D / 2);
  std::vector<KV4GroupHeader> ha(D / G), hb(D / G);
  quantize_kv4_ref(x.data(), D, G, nullptr, nullptr, qa.data(), ha.data());
  quantize_kv4_ref(x.data(), D, G, zero.data(), one.data(), qb.data(), hb.data());
  EXPECT_EQ(qa, qb);
  for (int i = 0; i < D / G; ++i) {
    EXPECT_EQ(ha[i].scale, hb[i].scale);
    EXPECT_EQ(ha[i].min, hb[i].min);
  }
  std::vector<float> oa(D), ob(D);
  dequantize_kv4_ref(qa.data(), ha.data(), D, G, nullptr, nullptr, oa.data());
  dequantize_kv4_ref(qb.data(), hb.data(), D, G, zero.data(), one.data(), ob.data());
  EXPECT_EQ(oa, ob);
}

TEST(QuantFormats, KV4DegenerateAndNonFinite) {
  const int D = 8, G = 4;
  // Group 0 constant, group 1 with ±0 only.
  std::vector<float> x = {3.3f, 3.3f, 3.3f, 3.3f, -0.0f, 0.0f, -0.0f, 0.0f};
  std::vector<uint8_t> qs(D / 2, 0xFF);
  std::vector<KV4GroupHeader> hdr(D / G);
  quantize_kv4_ref(x.data(), D, G, nullptr, nullptr, qs.data(), hdr.data());
  EXPECT_EQ(hdr[0].scale, 0);
  EXPECT_EQ(hdr[0].min, float_to_fp16(3.3f));
  EXPECT_EQ(hdr[1].scale, 0);
  EXPECT_EQ(hdr[1].min, 0);  // +0 whatever the order of ±0
  for (uint8_t b : qs) EXPECT_EQ(b, 0);
  std::vector<float> out(D);
  dequantize_kv4_ref(qs.data(), hdr.data(), D, G, nullptr, nullptr, out.data());
  for (int c = 0; c < 4; ++c) EXPECT_EQ(out[c], round_fp16(3.3f));
  for (int c = 4; c < 8; ++c) EXPECT_EQ(out[c], 0.0f);
  // A device reduction may pair the zeros the other way round (fmaxf may return −0): same bits.
  for (float a : {0.0f, -0.0f}) {
    for (float b : {0.0f, -0.0f}) {
      const KV4GroupHeader h = kv4_group_header(a, b);
      EXPECT_EQ(h.scale, 0);
      EXPECT_EQ(h.min, 0);
    }
  }
  const KV4GroupHeader hinf = kv4_group_header(-INFINITY, -INFINITY);
  EXPECT_EQ(hinf.scale, 0);
  EXPECT_EQ(hinf.min, 0xFBFF);
  // NaN is ignored by min/max and gets code 0; an all-NaN group is stored as zeros.
  std::vector<float> y = {1.0f,          std::nanf(""), 4.0f,          2.5f,
                          std::nanf(""), std::nanf(""), std::nanf(""), std::nanf("")};
  quantize_kv4_ref(y.data(), D, G, nullptr, nullptr, qs.data(), hdr.data());
  EXPECT_EQ(fp16_to_float(hdr[0].scale), round_fp16(3.0f / 15.0f));
  EXPECT_EQ(fp16_to_float(hdr[0].min), 1.0f);
  EXPECT_EQ(kv4_unpack(qs.data(), 1), 0);
  EXPECT_EQ(kv4_unpack(qs.data(), 2), 15);
  EXPECT_EQ(hdr[1].scale, 0);
  EXPECT_EQ(hdr[1].min, 0);
  // A range beyond FP16 saturates instead of storing Inf.
  std::vector<float> big = {-1e6f, 1e6f, 0.0f, 5.0f, 1.0f, 2.0f, 3.0f, 4.0f};
  quantize_kv4_ref(big.data(), D, G, nullptr, nullptr, qs.data(), hdr.data());
  EXPECT_EQ(hdr[0].scale, 0x7BFF);
  EXPECT_EQ(hdr[0].min, 0xFBFF);
  EXPECT_EQ(kv4_unpack(qs.data(), 1), 15);
}

TEST(QuantFormats, KV4InvalidShapesAndSmoothingThrow) {
  std::vector<float> x(16, 1.0f);
  std::vector<uint8_t> qs(8);
  std::vector<KV4GroupHeader> hdr(8);
  expect_invalid([&] { quantize_kv4_ref(x.data(), 15, 5, nullptr, nullptr, qs.data(), hdr.data()); });
  expect_invalid([&] { quantize_kv4_ref(x.data(), 16, 3, nullptr, nullptr, qs.data(), hdr.data()); });
  expect_invalid([&] { quantize_kv4_ref(x.data(), 16, 6, nullptr, nullptr, qs.data(), hdr.data()); });
  std::vector<float> out(16);
  expect_invalid([&] { dequantize_kv4_ref(qs.data(), hdr.data(), 16, 12, nullptr, nullptr, out.data()); });
  std::vector<float> d(4, 0.0f), s(4, 1.0f);
  validate_kv_smoothing(d.data(), s.data(), 4, "test");
  s[2] = 0.0f;
  expect_invalid([&] { validate_kv_smoothing(d.data(), s.data(), 4, "test"); });
  s[2] = 1.0f;
  d[1] = INFINITY;
  expect_invalid([&] { validate_kv_smoothing(d.data(), s.data(), 4, "test"); });
}

TEST(QuantFormats, KvSmoothingInitByHand) {
  // Half-ranges 1, 4, 9, 16 → t = 1, 2, 3, 4, mean 2.5 → s = 0.4, 0.8, 1.2, 1.6; δ = mid-range.
  {
    const float mn[4] = {-1.0f, 0.0f, 1.0f, -10.0f}, mx[4] = {1.0f, 8.0f, 19.0f, 22.0f};
    float delta[4], s[4];
    kv_smoothing_from_stats(mn, mx, 4, delta, s);
    const float ed[4] = {0.0f, 4.0f, 10.0f, 6.0f}, es[4] = {0.4f, 0.8f, 1.2f, 1.6f};
    for (int c = 0; c < 4; ++c) {
      EXPECT_FLOAT_EQ(delta[c], ed[c]) << c;
      EXPECT_FLOAT_EQ(s[c], es[c]) << c;
    }
  }
  // A constant channel: t floored at 1e-3·max t. Half-ranges 1, 0, 4, 16 → t = 1, 0.004, 2, 4.
  {
    const float mn[4] = {0.0f, 5.0f, -4.0f, -16.0f}, mx[4] = {2.0f, 5.0f, 4.0f, 16.0f};
    float delta[4], s[4];
    kv_smoothing_from_stats(mn, mx, 4, delta, s);
    const double mean = (1.0 + 0.004 + 2.0 + 4.0) / 4.0;
    const double es[4] = {1.0 / mean, 0.004 / mean, 2.0 / mean, 4.0 / mean};
    const float ed[4] = {1.0f, 5.0f, 0.0f, 0.0f};
    for (int c = 0; c < 4; ++c) {
      EXPECT_FLOAT_EQ(delta[c], ed[c]) << c;
      EXPECT_NEAR(s[c], es[c], 1e-6 * es[c]) << c;
    }
  }
  // Every channel constant → s = 1.
  {
    const float mn[3] = {1.0f, -2.0f, 0.0f};
    float delta[3], s[3];
    kv_smoothing_from_stats(mn, mn, 3, delta, s);
    for (int c = 0; c < 3; ++c) {
      EXPECT_EQ(delta[c], mn[c]);
      EXPECT_EQ(s[c], 1.0f);
    }
  }
  // A never-observed channel is an error.
  {
    KvChannelStats st(2);
    float delta[2], s[2];
    expect_invalid([&] { kv_smoothing_from_stats(st.min.data(), st.max.data(), 2, delta, s); });
  }
}

TEST(QuantFormats, KvChannelStatsAccumulate) {
  KvChannelStats a(3), b(3);
  const float t0[3] = {1.0f, -2.0f, 0.5f}, t12[6] = {-1.0f, 4.0f, std::nanf(""), 3.0f, 0.0f, 0.25f};
  a.add(t0);
  a.add_tokens(t12, 2);
  EXPECT_EQ(a.tokens, 3);
  EXPECT_EQ(a.min, (std::vector<float>{-1.0f, -2.0f, 0.25f}));
  EXPECT_EQ(a.max, (std::vector<float>{3.0f, 4.0f, 0.5f}));
  const float t3[3] = {10.0f, -10.0f, 0.3f};
  b.add(t3);
  a.merge(b);
  EXPECT_EQ(a.tokens, 4);
  EXPECT_EQ(a.min, (std::vector<float>{-1.0f, -10.0f, 0.25f}));
  EXPECT_EQ(a.max, (std::vector<float>{10.0f, 4.0f, 0.5f}));
  KvChannelStats c(4);
  expect_invalid([&] { a.merge(c); });
  expect_invalid([] { KvChannelStats bad(0); });
}

// ---- A4 -----------------------------------------------------------------------------------------------

TEST(QuantFormats, A4PerTokenFakeQuant) {
  Rng rng;
  TRACE_SEED(rng);
  for (int n : {7, 64, 4096}) {
    std::vector<float> x(n);
    for (float& v : x) v = rng.normal(1.0f) + 0.3f;
    std::vector<float> y = x;
    fake_quant_a4_per_token(y.data(), n);
    const auto [pmn, pmx] = std::minmax_element(x.begin(), x.end());
    const float scale = (*pmx - *pmn) / 15.0f, z = std::nearbyint(-*pmn / scale);
    std::set<float> levels(y.begin(), y.end());
    EXPECT_LE(levels.size(), 16u);
    for (int i = 0; i < n; ++i) {
      const float q = std::clamp(std::nearbyint(x[i] / scale) + z, 0.0f, 15.0f);
      ASSERT_EQ(y[i], (q - z) * scale) << i;
      // |x − x'| ≤ scale/2 everywhere: round(max/scale) + z lands within ±1 of 15 and the clamp keeps
      // the top code within scale/2 of max (and likewise at min).
      ASSERT_LE(std::fabs(x[i] - y[i]), scale * 0.5f + 1e-6f * (std::fabs(x[i]) + 1.0f)) << i;
    }
  }
  std::vector<float> c(10, -0.7f);
  fake_quant_a4_per_token(c.data(), 10);
  for (float v : c) EXPECT_EQ(v, -0.7f);
}

}  // namespace
