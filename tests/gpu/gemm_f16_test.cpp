// cuBLAS FP16 GEMM (y = x·Wᵀ) against an FP64 product of the unrounded FP32 inputs: the FP16 rounding
// of x (and of W when it comes from FP32) gives rel L2 ~2^-11·√2 ≈ 7e-4 at most; budget rel L2 ≤ 2e-3.
// f32_to_f16 is bit-exact against wkv::float_to_fp16 (NaN only checked to stay NaN: the payload differs).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "half.h"
#include "quant_formats.h"
#include "wkv/error.h"
#include "wkv_kernels/gemm_f16.h"
#include "wkv_kernels/w4_dequant.h"

namespace {

using wkv::test::DeviceBuffer;

// ref[t][r] = Σ_c x[t][c]·W[r][c] in FP64.
std::vector<double> matmul_ref(const std::vector<float>& x, const std::vector<float>& W, int T, int rows, int cols) {
  std::vector<double> ref((size_t)T * rows);
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < rows; ++r) {
      double s = 0;
      for (int c = 0; c < cols; ++c) s += (double)x[(size_t)t * cols + c] * W[(size_t)r * cols + c];
      ref[(size_t)t * rows + r] = s;
    }
  return ref;
}

TEST(GemmF16, MatchesFp64Reference) {
  WKV_REQUIRE_GPU();
  wkv::kernels::CublasContext ctx;
  struct Case {
    int T, rows, cols;
  };
  for (const Case c : {Case{1, 37, 256}, Case{7, 256, 512}, Case{64, 1001, 4096}, Case{129, 4097, 256},
                       Case{33, 96, 11008}}) {
    const uint32_t seed = wkv::test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " T " + std::to_string(c.T) + " rows " + std::to_string(c.rows) +
                 " cols " + std::to_string(c.cols));
    std::mt19937 rng(seed);
    const auto x = wkv::test::random_normal(rng, (size_t)c.T * c.cols, 1.0f);
    const auto Wf = wkv::test::random_normal(rng, (size_t)c.rows * c.cols, 0.05f);
    std::vector<uint16_t> W16(Wf.size());
    for (size_t i = 0; i < Wf.size(); ++i) W16[i] = wkv::float_to_fp16(Wf[i]);
    const auto ref = matmul_ref(x, Wf, c.T, c.rows, c.cols);
    DeviceBuffer<float> dx(x);
    DeviceBuffer<uint16_t> dW(W16);
    DeviceBuffer<float> dy((size_t)c.T * c.rows);
    dy.poison(0xFF);
    wkv::kernels::gemm_f16(ctx, dx.get(), c.T, dW.get(), c.rows, c.cols, dy.get());
    const auto y = dy.download();
    for (size_t i = 0; i < y.size(); ++i) ASSERT_TRUE(std::isfinite(y[i])) << "output not written at " << i;
    EXPECT_LE(wkv::test::rel_l2_d(y, ref), 2e-3);
  }
}

// Prefill path: W4 weights → w4_dequant_f16 → gemm_f16, against FP64 with dequantize_w4_ref's weights.
TEST(GemmF16, DequantizedW4Pipeline) {
  WKV_REQUIRE_GPU();
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int T = 17, rows = 333, cols = 1024, group = 128;
  const auto W = wkv::test::random_normal(rng, (size_t)rows * cols, 0.02f);
  const wkv::W4Matrix m = wkv::quantize_w4_ref(W.data(), rows, cols, group);
  const auto Wd = wkv::dequantize_w4_ref(m);
  const auto x = wkv::test::random_normal(rng, (size_t)T * cols, 1.0f);
  const auto ref = matmul_ref(x, Wd, T, rows, cols);
  DeviceBuffer<uint32_t> q(m.qweight);
  DeviceBuffer<uint16_t> s(m.scales), z(m.zeros), W16((size_t)rows * cols);
  wkv::kernels::w4_dequant_f16({rows, cols, group, q.get(), s.get(), z.get()}, W16.get());
  DeviceBuffer<float> dx(x), dy((size_t)T * rows);
  dy.poison(0xFF);
  wkv::kernels::CublasContext ctx;
  wkv::kernels::gemm_f16(ctx, dx.get(), T, W16.get(), rows, cols, dy.get());
  const auto y = dy.download();
  for (size_t i = 0; i < y.size(); ++i) ASSERT_TRUE(std::isfinite(y[i])) << "output not written at " << i;
  EXPECT_LE(wkv::test::rel_l2_d(y, ref), 2e-3);
  // The FP16-input entry over x converted once gives the same bits (what prefill's shared inputs use).
  DeviceBuffer<uint16_t> x16((size_t)T * cols);
  wkv::kernels::f32_to_f16(dx.get(), x16.get(), (int64_t)T * cols);
  DeviceBuffer<float> dy2((size_t)T * rows);
  dy2.poison();
  wkv::kernels::gemm_f16_h(ctx, x16.get(), T, W16.get(), rows, cols, dy2.get());
  EXPECT_EQ(dy2.download(), y);
}

TEST(GemmF16, ConversionIsBitExact) {
  WKV_REQUIRE_GPU();
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::vector<float> v = {0.0f, -0.0f, 1.0f, 65504.0f, 65519.99f, 65520.0f, -70000.0f, 0x1p-14f, 0x1p-24f,
                          0x1p-25f, 0x1.8p-24f, 0x1.8p-25f, 1e-30f, std::numeric_limits<float>::infinity(),
                          1.0009765625f /* 1 + 2^-10 */, 1.00048828125f /* tie */, 1.00146484375f /* tie */};
  std::uniform_int_distribution<uint32_t> bits;
  while (v.size() < 100003) {  // random bit patterns cover every exponent; odd count tests the tail
    const uint32_t b = bits(rng);
    float f;
    std::memcpy(&f, &b, 4);
    if (!std::isnan(f)) v.push_back(f);
  }
  v.push_back(std::numeric_limits<float>::quiet_NaN());
  DeviceBuffer<float> dx(v);
  DeviceBuffer<uint16_t> out(v.size());
  out.poison(0x00);
  wkv::kernels::f32_to_f16(dx.get(), out.get(), (int64_t)v.size());
  const auto got = out.download();
  for (size_t i = 0; i + 1 < v.size(); ++i) ASSERT_EQ(got[i], wkv::float_to_fp16(v[i])) << "value " << v[i];
  EXPECT_TRUE(std::isnan(wkv::fp16_to_float(got.back())));
}

TEST(GemmF16, RejectsInvalidArguments) {
  float x = 0, y = 0;
  uint16_t w = 0;
  WKV_REQUIRE_GPU();  // creating the cuBLAS handle needs a device
  wkv::kernels::CublasContext ctx;
  EXPECT_THROW(wkv::kernels::gemm_f16(ctx, &x, 0, &w, 1, 1, &y), wkv::Error);
  EXPECT_THROW(wkv::kernels::gemm_f16(ctx, nullptr, 1, &w, 1, 1, &y), wkv::Error);
  EXPECT_THROW(wkv::kernels::gemm_f16_h(ctx, &w, 1, &w, 0, 1, &y), wkv::Error);
  EXPECT_THROW(wkv::kernels::gemm_f16_h(ctx, nullptr, 1, &w, 1, 1, &y), wkv::Error);
}

}  // namespace
