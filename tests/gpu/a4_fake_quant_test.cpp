// A4 fake quantization on the GPU against the host spec (wkv::fake_quant_a4_per_token): bit-identical,
// including rows that take the "leave unchanged" rule (constant rows) and rows with NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "quant_formats.h"
#include "wkv/error.h"
#include "wkv_kernels/a4_fake_quant.h"

namespace {

using wkv::test::DeviceBuffer;

bool same_bits(float a, float b) {
  uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y;
}

TEST(A4FakeQuant, BitIdenticalToHostSpec) {
  WKV_REQUIRE_GPU();
  for (int T : {1, 3, 17})
    for (int n : {1, 7, 256, 4096, 11008}) {
      const uint32_t seed = wkv::test::fresh_seed();
      SCOPED_TRACE("seed " + std::to_string(seed) + " T " + std::to_string(T) + " n " + std::to_string(n));
      std::mt19937 rng(seed);
      auto x = wkv::test::random_normal(rng, size_t(T) * n, 1.5f, 0.2f);
      if (T >= 3) {  // row 1 constant (left unchanged), row 2 with a NaN (ignored by min/max)
        for (int i = 0; i < n; ++i) x[size_t(n) + i] = 0.75f;
        x[size_t(2) * n + n / 2] = std::numeric_limits<float>::quiet_NaN();
      }
      std::vector<float> ref = x;
      for (int t = 0; t < T; ++t) wkv::fake_quant_a4_per_token(ref.data() + size_t(t) * n, n);
      DeviceBuffer<float> dx(x);
      wkv::kernels::a4_fake_quant(dx.get(), T, n);
      const auto got = dx.download();
      size_t bad = 0;
      for (size_t i = 0; i < ref.size(); ++i) bad += !same_bits(got[i], ref[i]) && !(std::isnan(got[i]) && std::isnan(ref[i]));
      EXPECT_EQ(bad, 0u);
      if (T >= 3) {
        EXPECT_EQ(got[size_t(n)], 0.75f);
      }
    }
}

TEST(A4FakeQuant, RejectsBadArguments) {
  WKV_REQUIRE_GPU();
  DeviceBuffer<float> d(4);
  EXPECT_THROW(wkv::kernels::a4_fake_quant(nullptr, 1, 4), wkv::Error);
  EXPECT_THROW(wkv::kernels::a4_fake_quant(d.get(), 1, 0), wkv::Error);
  EXPECT_NO_THROW(wkv::kernels::a4_fake_quant(d.get(), 0, 4));
}

}  // namespace
