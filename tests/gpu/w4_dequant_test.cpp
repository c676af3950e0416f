// W4 → FP16 dequantization: bit-exact against wkv::float_to_fp16 of dequantize_w4_ref's values (the
// FP32 value (q − z)·h is exact, and both sides round it once to nearest even).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "half.h"
#include "quant_formats.h"
#include "wkv/error.h"
#include "wkv_kernels/w4_dequant.h"

namespace {

using wkv::test::DeviceBuffer;

TEST(W4Dequant, BitExactAgainstReference) {
  WKV_REQUIRE_GPU();
  struct Case {
    int rows, cols, group;
  };
  for (const Case c : {Case{1, 8, 8}, Case{3, 24, 8}, Case{37, 256, 128}, Case{4097, 4096, 128},
                       Case{129, 11008, 32}, Case{7, 200, 40}}) {
    const uint32_t seed = wkv::test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " rows " + std::to_string(c.rows) + " cols " +
                 std::to_string(c.cols) + " group " + std::to_string(c.group));
    std::mt19937 rng(seed);
    auto W = wkv::test::random_normal(rng, (size_t)c.rows * c.cols, 0.02f);
    for (size_t i = 0; i < W.size(); i += 97) W[i] *= 50.0f;  // outliers: large scales, FP16 rounding matters
    const wkv::W4Matrix m = wkv::quantize_w4_ref(W.data(), c.rows, c.cols, c.group);
    const std::vector<float> ref = wkv::dequantize_w4_ref(m);
    DeviceBuffer<uint32_t> q(m.qweight);
    DeviceBuffer<uint16_t> s(m.scales), z(m.zeros);
    DeviceBuffer<uint16_t> out((size_t)c.rows * c.cols);
    out.poison(0xFF);
    wkv::kernels::w4_dequant_f16({c.rows, c.cols, c.group, q.get(), s.get(), z.get()}, out.get());
    const auto got = out.download();
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(got[i], wkv::float_to_fp16(ref[i])) << "element " << i << " (row " << i / c.cols << ")";
  }
}

TEST(W4Dequant, RejectsInvalidArguments) {
  uint32_t q = 0;
  uint16_t s = 0, z = 0, out[8] = {};
  EXPECT_THROW(wkv::kernels::w4_dequant_f16({2, 64, 12, &q, &s, &z}, out), wkv::Error);
  EXPECT_THROW(wkv::kernels::w4_dequant_f16({2, 64, 32, &q, &s, &z}, nullptr), wkv::Error);
}

}  // namespace
