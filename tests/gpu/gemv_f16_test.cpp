// FP16 dense GEMV against an FP64 matvec of the same FP16 weights. Budget (FP32 accumulation of exact
// weights): rel L2 per output row ≤ 1e-5; per element |y − ref| ≤ (cols/8 + 64)·2^-24·Σ|wx| + 1e-30.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "half.h"
#include "wkv/error.h"
#include "wkv_kernels/gemv_f16.h"

namespace {

using wkv::test::DeviceBuffer;

void check_case(int rows, int cols, const std::vector<int>& batches, bool expect_fast) {
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " rows " + std::to_string(rows) + " cols " + std::to_string(cols));
  std::mt19937 rng(seed);
  const auto Wf = wkv::test::random_normal(rng, (size_t)rows * cols, 0.05f);
  std::vector<uint16_t> W(Wf.size());
  std::vector<float> Wr(Wf.size());  // the FP16 values as floats
  for (size_t i = 0; i < W.size(); ++i) {
    W[i] = wkv::float_to_fp16(Wf[i]);
    Wr[i] = wkv::fp16_to_float(W[i]);
  }
  int maxB = 0;
  for (int b : batches) maxB = std::max(maxB, b);
  const auto x = wkv::test::random_normal(rng, (size_t)maxB * cols, 1.0f);
  std::vector<double> ref((size_t)maxB * rows), mag((size_t)maxB * rows);
  for (int b = 0; b < maxB; ++b)
    for (int r = 0; r < rows; ++r) {
      double s = 0, a = 0;
      for (int i = 0; i < cols; ++i) {
        const double p = (double)Wr[(size_t)r * cols + i] * x[(size_t)b * cols + i];
        s += p;
        a += std::fabs(p);
      }
      ref[(size_t)b * rows + r] = s;
      mag[(size_t)b * rows + r] = a;
    }
  DeviceBuffer<uint16_t> dW(W);
  DeviceBuffer<float> dx(x);
  const wkv::kernels::F16DeviceWeights w{rows, cols, dW.get()};
  ASSERT_EQ(wkv::kernels::gemv_f16_fast_path(w, dx.get()), expect_fast);
  const double k = cols / 8.0 + 64.0;
  for (int B : batches) {
    SCOPED_TRACE("B " + std::to_string(B));
    const size_t guard = 64;
    DeviceBuffer<float> dy((size_t)B * rows + guard);
    dy.poison(0xFF);
    wkv::kernels::gemv_f16(w, dx.get(), B, dy.get());
    const auto y = dy.download();
    for (size_t i = (size_t)B * rows; i < y.size(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &y[i], 4);
      ASSERT_EQ(bits, 0xFFFFFFFFu) << "write past the end at " << i;
    }
    for (int b = 0; b < B; ++b) {
      double num = 0, den = 0;
      for (int r = 0; r < rows; ++r) {
        const size_t i = (size_t)b * rows + r;
        ASSERT_TRUE(std::isfinite(y[i])) << "output not written: b " << b << " row " << r;
        const double d = (double)y[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
        ASSERT_LE(std::fabs(d), k * 0x1p-24 * mag[i] + 1e-30) << "b " << b << " row " << r;
      }
      // The relative L2 budget needs several rows: one output alone can cancel to near zero (seen: rows 1,
      // cols 4096, 2.1e-5 on an H200), where only the per-element bound above is meaningful.
      if (rows >= 8) {
        EXPECT_LE(std::sqrt(num / std::max(den, 1e-300)), 1e-5) << "rel L2, b " << b;
      }
    }
  }
}

TEST(GemvF16, FastPathShapeSweep) {
  WKV_REQUIRE_GPU();
  for (int rows : {1, 3, 37, 4097})
    for (int cols : {8, 256, 4096, 11008}) check_case(rows, cols, {1, 2, 3, 4, 5, 6, 7, 8}, true);
}

TEST(GemvF16, OutputHeadShape) {
  WKV_REQUIRE_GPU();
  check_case(32000, 4096, {1, 8, 11}, true);
}

TEST(GemvF16, GenericPath) {
  WKV_REQUIRE_GPU();
  check_case(5, 13, {1, 2, 8}, false);
  check_case(37, 1001, {1, 3, 8}, false);
}

TEST(GemvF16, RejectsInvalidArguments) {
  uint16_t w = 0;
  float x = 0, y = 0;
  EXPECT_THROW(wkv::kernels::gemv_f16({0, 8, &w}, &x, 1, &y), wkv::Error);
  EXPECT_THROW(wkv::kernels::gemv_f16({4, 8, &w}, &x, 0, &y), wkv::Error);
  EXPECT_THROW(wkv::kernels::gemv_f16({4, 8, nullptr}, &x, 1, &y), wkv::Error);
}

}  // namespace
