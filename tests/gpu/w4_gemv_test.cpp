// W4 GEMV against the CPU reference: dequantize_w4_ref + an FP64 matvec, for weights quantized with
// quantize_w4_ref. Error budget (FP32 accumulation of exactly dequantized weights):
//   rel L2 of each output row y[b] ≤ 1e-5, and per element |y − ref| ≤ k·2^-24·Σ_c|w'x| + 1e-30 with
//   k = cols/32 + 64 (a bound on the length of the longest FP32 summation chain of either path).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "quant_formats.h"
#include "test_support.h"
#include "wkv/error.h"
#include "wkv_kernels/w4_gemv.h"

namespace {

using wkv::test::DeviceBuffer;

struct Case {
  int rows, cols, group;
};

struct Uploaded {
  DeviceBuffer<uint32_t> q;
  DeviceBuffer<uint16_t> s, z;
  explicit Uploaded(const wkv::W4Matrix& m) : q(m.qweight), s(m.scales), z(m.zeros) {}
  wkv::kernels::W4DeviceWeights view(const wkv::W4Matrix& m) const {
    return {m.rows, m.cols, m.group, q.get(), s.get(), z.get()};
  }
};

// Quantizes a random W, runs every B in `batches` (x misaligned by one float when `misalign`), checks.
void check_case(const Case& c, const std::vector<int>& batches, bool expect_fast, bool misalign = false) {
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " rows " + std::to_string(c.rows) + " cols " +
               std::to_string(c.cols) + " group " + std::to_string(c.group));
  std::mt19937 rng(seed);
  auto W = wkv::test::random_normal(rng, (size_t)c.rows * c.cols, 0.02f);
  // A few outlier channels, as in real LLaMA weights, widen some groups' ranges.
  for (int r = 0; r < c.rows; r += 7) W[(size_t)r * c.cols + (r % c.cols)] *= 40.0f;
  const wkv::W4Matrix m = wkv::quantize_w4_ref(W.data(), c.rows, c.cols, c.group);
  const std::vector<float> Wd = wkv::dequantize_w4_ref(m);
  int maxB = 0;
  for (int b : batches) maxB = std::max(maxB, b);
  const auto x = wkv::test::random_normal(rng, (size_t)maxB * c.cols, 1.0f);

  // FP64 reference and Σ|w'x| per output.
  std::vector<double> ref((size_t)maxB * c.rows), mag((size_t)maxB * c.rows);
  for (int b = 0; b < maxB; ++b)
    for (int r = 0; r < c.rows; ++r) {
      double s = 0, a = 0;
      const float* wr = Wd.data() + (size_t)r * c.cols;
      const float* xb = x.data() + (size_t)b * c.cols;
      for (int i = 0; i < c.cols; ++i) {
        s += (double)wr[i] * xb[i];
        a += std::fabs((double)wr[i] * xb[i]);
      }
      ref[(size_t)b * c.rows + r] = s;
      mag[(size_t)b * c.rows + r] = a;
    }

  Uploaded dev(m);
  const auto w = dev.view(m);
  const int off = misalign ? 1 : 0;
  std::vector<float> xpad(x.size() + off, 0.0f);
  std::memcpy(xpad.data() + off, x.data(), x.size() * sizeof(float));
  DeviceBuffer<float> dx(xpad);
  const float* xptr = dx.get() + off;
  ASSERT_EQ(wkv::kernels::w4_gemv_fast_path(w, xptr), expect_fast);
  const double k = c.cols / 32.0 + 64.0;
  for (int B : batches) {
    SCOPED_TRACE("B " + std::to_string(B));
    const size_t guard = 64;  // poisoned elements past the end must stay untouched
    DeviceBuffer<float> dy((size_t)B * c.rows + guard);
    dy.poison(0xFF);
    wkv::kernels::w4_gemv(w, xptr, B, dy.get());
    const auto y = dy.download();
    for (size_t i = (size_t)B * c.rows; i < y.size(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &y[i], 4);
      ASSERT_EQ(bits, 0xFFFFFFFFu) << "write past the end at " << i;
    }
    for (int b = 0; b < B; ++b) {
      double num = 0, den = 0;
      for (int r = 0; r < c.rows; ++r) {
        const size_t i = (size_t)b * c.rows + r;
        ASSERT_TRUE(std::isfinite(y[i])) << "output not written: b " << b << " row " << r;
        const double d = (double)y[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
        ASSERT_LE(std::fabs(d), k * 0x1p-24 * mag[i] + 1e-30) << "b " << b << " row " << r;
      }
      EXPECT_LE(std::sqrt(num / std::max(den, 1e-300)), 1e-5) << "rel L2, b " << b;
    }
  }
}

const std::vector<int> kAllBatches = {1, 2, 3, 4, 5, 6, 7, 8};

TEST(W4Gemv, FastPathShapeSweep) {
  WKV_REQUIRE_GPU();
  for (int rows : {1, 3, 37, 4097})
    for (int cols : {256, 4096, 11008})
      for (int group : {128, 32}) check_case({rows, cols, group}, kAllBatches, true);
}

TEST(W4Gemv, FastPathOtherGroupsAndLargeBatch) {
  WKV_REQUIRE_GPU();
  check_case({5, 192, 64}, kAllBatches, true);     // group 64, cols not a multiple of 128
  check_case({11, 1024, 1024}, {1, 8}, true);      // per-channel (group = cols)
  check_case({33, 512, 128}, {9, 11, 17}, true);  // B > 8 runs in batches of 8
}

TEST(W4Gemv, GenericPathShapes) {
  WKV_REQUIRE_GPU();
  check_case({5, 24, 8}, kAllBatches, false);      // cols % 32 != 0
  check_case({33, 200, 40}, kAllBatches, false);   // group 40
  check_case({7, 4096, 16}, {1, 3, 8}, false);     // group % 32 != 0
  check_case({37, 256, 128}, {1, 4, 8}, false, /*misalign=*/true);  // x not 16-byte aligned
}

TEST(W4Gemv, RejectsInvalidArguments) {
  // Validation happens before any CUDA call, so this runs without a GPU too.
  uint32_t q = 0;
  uint16_t s = 0, z = 0;
  float x = 0, y = 0;
  const auto call = [&](int rows, int cols, int group, int B) {
    wkv::kernels::w4_gemv({rows, cols, group, &q, &s, &z}, &x, B, &y);
  };
  EXPECT_THROW(call(4, 256, 12, 1), wkv::Error);   // group not a multiple of 8
  EXPECT_THROW(call(4, 256, 96, 1), wkv::Error);   // group does not divide cols
  EXPECT_THROW(call(0, 256, 128, 1), wkv::Error);  // no rows
  EXPECT_THROW(call(4, 256, 128, 0), wkv::Error);  // no batch
  EXPECT_THROW(wkv::kernels::w4_gemv({4, 256, 128, nullptr, &s, &z}, &x, 1, &y), wkv::Error);
}

}  // namespace
